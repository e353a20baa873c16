"""The clusters' SSH login nodes against real sshd, real Slurm and a real Charliecloud container.

Every connection pins the login node's host key (``RejectPolicy`` + the ``known_hosts`` line the stack
publishes), logs in as bob with his demo key, and drives Slurm with the same commands the gateway uses.
"""
from __future__ import annotations

import secrets
import shlex
import socket
import time

import paramiko
import pytest

from heroes_dev.components.containers import IMAGE_LABEL, IMAGE_MARKER, image_path
from heroes_dev.components.login import (
    host_key_fingerprint,
    known_hosts_line,
    ssh_port,
    user_key_path,
)

CLUSTERS = ("alpha", "beta")
JOB_DEADLINE_S = 120


@pytest.fixture(scope="module")
def stack(stack_settings, require):
    for name in ("slurm-alpha", "slurm-beta", "image", "login-alpha", "login-beta"):
        require(name)
    return stack_settings


def pinned_client(settings, cluster: str, *, expect_from: str | None = None) -> paramiko.SSHClient:
    """A client that accepts only the host key published for ``expect_from`` (default: ``cluster``)."""
    client = paramiko.SSHClient()
    entry = paramiko.hostkeys.HostKeyEntry.from_line(known_hosts_line(settings, expect_from or cluster))
    # the entry names expect_from's port; the client looks the key up under the port it connects to
    name = f"[{settings.host}]:{ssh_port(settings, cluster)}"
    client.get_host_keys().add(name, entry.key.get_name(), entry.key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def connect(settings, cluster: str, user: str = "bob") -> paramiko.SSHClient:
    client = pinned_client(settings, cluster)
    client.connect(settings.host, port=ssh_port(settings, cluster), username=user,
                   key_filename=str(user_key_path(settings, user)), look_for_keys=False, allow_agent=False,
                   timeout=10, auth_timeout=10)
    return client


def sh(client: paramiko.SSHClient, argv: list[str], timeout: float = 60) -> str:
    """Run an argument list on the login node (quoted for its shell); fail with stderr on non-zero exit."""
    command = shlex.join(argv)
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode()
    err = stderr.read().decode()
    status = stdout.channel.recv_exit_status()
    assert status == 0, f"{command!r} exited {status}: {err or out}"
    return out


def wait_for_sacct(client, cluster: str, job_id: str) -> list[list[str]]:
    """Poll ``sacct -M <cluster>`` until the job's own line reached a final state (or the deadline)."""
    deadline = time.monotonic() + JOB_DEADLINE_S
    rows: list[list[str]] = []
    while time.monotonic() < deadline:
        out = sh(client, ["sacct", "-M", cluster, "-j", job_id, "--parsable2", "-n", "-o", "JobID,State,Cluster"])
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        main = [r for r in rows if r[0] == job_id]
        if main and main[0][1] in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}:
            return rows
        time.sleep(1)
    raise AssertionError(f"job {job_id} on {cluster} not finished in {JOB_DEADLINE_S}s; sacct said {rows}")


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_sbatch_runs_python_inside_charliecloud(stack, cluster):
    nonce = secrets.token_hex(6)
    image = str(image_path(stack))
    program = (
        "import os, socket, sys; "
        f"print('HEROES-NONCE', {nonce!r}); "
        f"print('MARKER', open({IMAGE_MARKER!r}).read().strip()); "
        "print('PYTHON', sys.version.split()[0]); "
        "print('UID', os.getuid()); "
        "print('HOST', socket.gethostname()); "
        "print('CLUSTER', os.environ.get('SLURM_CLUSTER_NAME', '')); "
        "print('SBATCH_VISIBLE', os.path.exists('/usr/bin/sbatch'))"
    )
    step = shlex.join(["ch-run", image, "--", "python3", "-c", program])
    output = f"heroes-login-test-{nonce}-%j.out"
    with connect(stack, cluster) as client:
        assert sh(client, ["printenv", "SLURM_CONF"]).strip().endswith(f"slurm-{cluster}/slurm.conf")
        submitted = sh(client, ["sbatch", "--parsable", f"--job-name=login-test-{nonce}", f"--output={output}",
                                "--time=5", "--wrap", step]).strip()
        job_id = submitted.split(";")[0]
        assert job_id.isdigit(), submitted

        rows = wait_for_sacct(client, cluster, job_id)
        main = [r for r in rows if r[0] == job_id][0]
        assert main == [job_id, "COMPLETED", cluster], rows

        uid = sh(client, ["id", "-u"]).strip()
        log = sh(client, ["cat", output.replace("%j", job_id)])
        sh(client, ["rm", "-f", output.replace("%j", job_id)])
    lines = dict(line.split(" ", 1) for line in log.splitlines() if " " in line)
    assert lines.get("HEROES-NONCE") == nonce, log
    assert lines["MARKER"] == IMAGE_LABEL, log          # the file exists only inside the image
    assert lines["PYTHON"].startswith("3."), log
    assert lines["UID"] == uid, log                     # the container runs as bob, unprivileged
    assert lines["CLUSTER"] == cluster, log
    assert lines["SBATCH_VISIBLE"] == "False", log      # the host's /usr is not the container's


def test_sacct_on_one_cluster_does_not_see_the_others_job(stack):
    """A job submitted on alpha is accounted to alpha only."""
    with connect(stack, "alpha") as client:
        job_id = sh(client, ["sbatch", "--parsable", "--time=1", "--wrap", "true"]).strip().split(";")[0]
        wait_for_sacct(client, "alpha", job_id)
        on_beta = sh(client, ["sacct", "-M", "beta", "-j", job_id, "--parsable2", "-n", "-o", "JobID,Cluster"])
    assert all(line.split("|")[1] != "alpha" for line in on_beta.splitlines() if "|" in line), on_beta


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_only_public_keys_are_offered_and_passwords_are_refused(stack, cluster):
    sock = socket.create_connection((stack.host, ssh_port(stack, cluster)), timeout=10)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType) as none_auth:
            transport.auth_none("bob")
        assert none_auth.value.allowed_types == ["publickey"]
        with pytest.raises(paramiko.BadAuthenticationType) as password_auth:
            transport.auth_password("bob", "bob-pass")
        assert password_auth.value.allowed_types == ["publickey"]
        assert not transport.is_authenticated()
    finally:
        transport.close()


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_root_cannot_log_in_even_with_a_demo_key(stack, cluster):
    client = pinned_client(stack, cluster)
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(stack.host, port=ssh_port(stack, cluster), username="root",
                       key_filename=str(user_key_path(stack, "alice")), look_for_keys=False, allow_agent=False,
                       timeout=10, auth_timeout=10)
    client.close()


def test_someone_elses_key_is_refused(stack):
    client = pinned_client(stack, "alpha")
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(stack.host, port=ssh_port(stack, "alpha"), username="bob",
                       key_filename=str(user_key_path(stack, "carol")), look_for_keys=False, allow_agent=False,
                       timeout=10, auth_timeout=10)
    client.close()


def test_client_expecting_another_host_key_is_refused(stack):
    """Pinned to beta's key, a connection to alpha must fail before any authentication."""
    client = pinned_client(stack, "alpha", expect_from="beta")
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect(stack.host, port=ssh_port(stack, "alpha"), username="bob",
                       key_filename=str(user_key_path(stack, "bob")), look_for_keys=False, allow_agent=False,
                       timeout=10)
    client.close()


def test_unknown_host_is_refused_by_reject_policy(stack):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client.connect(stack.host, port=ssh_port(stack, "beta"), username="bob",
                       key_filename=str(user_key_path(stack, "bob")), look_for_keys=False, allow_agent=False,
                       timeout=10)
    client.close()


def test_each_login_node_has_its_own_pinned_host_key(stack):
    fingerprints = {}
    for cluster in CLUSTERS:
        sock = socket.create_connection((stack.host, ssh_port(stack, cluster)), timeout=10)
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=10)
            served = transport.get_remote_server_key()
        finally:
            transport.close()
        pinned = paramiko.hostkeys.HostKeyEntry.from_line(known_hosts_line(stack, cluster)).key
        assert served.get_name() == "ssh-ed25519"
        assert served.asbytes() == pinned.asbytes()
        fingerprints[cluster] = host_key_fingerprint(stack, cluster)
    assert fingerprints["alpha"] != fingerprints["beta"]
    assert all(fp.startswith("SHA256:") for fp in fingerprints.values())
