"""Injection canaries through the connector: argv values, sbatch options, SFTP file names; and identity
injection: a name chosen by an organization admin never becomes another account on the cluster.

Every canary tries to create a marker file (``touch``/redirect). The login node and the test share this
machine and its /tmp, so the absence of the marker is checked both remotely (as the user) and here.
Values must also arrive verbatim: ``printf '%s\\0'`` echoes each argv element back unchanged.

Identity (issue 14): users named after other accounts get no connector at all, and the real login node
refuses a certificate of the gateway's own (trusted) CA whose principals its principals file does not list
for the account, even if the gateway had signed one.
"""
from __future__ import annotations

import io
import os
import secrets
import time

import pytest

from heroes_service.auth import Principal
from heroes_service.clusters import identity
from heroes_service.clusters.config import get_clusters_settings
from heroes_service.clusters.connector import ClusterConnector, ConnectionPool
from heroes_service.clusters.errors import AuthenticationFailed, InvalidArgument, NoClusterAccess
from heroes_service.clusters.slurm import FINAL_STATES, SlurmClient
from cluster_testing import embedded_cluster, isolated_secrets, trust_ca

pytestmark = pytest.mark.integration
BOB = Principal(username="bob", organization="acme", roles=frozenset({"user"}))


def canaries(marker: str) -> list[str]:
    return [
        f"'; touch {marker}; '",
        f'"; touch {marker}; "',
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"x; touch {marker}",
        f"x && touch {marker}",
        f"x | touch {marker}",
        f"x\ntouch {marker}",
        f"x\r\ntouch {marker}",
        f"> {marker}",
        f"$(echo {marker} > {marker})",
        f"'\"'\"'$(touch {marker})'\"'\"'",
        f"\\'; touch {marker}; #",
        f"../../../../tmp/{os.path.basename(marker)}",
        "$HOME ${PATH} ~ * ? [a] {a,b} !! %s \\n \t tab",
        "-n",
        "--help",
        "ünïcödé ☃",
    ]


@pytest.fixture(scope="module")
def conn(stack_settings, require):
    for name in ("slurm-alpha", "login-alpha"):
        require(name)
    with isolated_secrets():
        identity.set_cluster_login_resolver(None)
        trust_ca(stack_settings)
        yield identity.connector_for(embedded_cluster(stack_settings, "alpha"), BOB)


def assert_no_marker(conn, marker: str) -> None:
    assert not os.path.exists(marker), f"canary fired: {marker} exists"
    assert conn.run(["test", "-e", marker]).rc == 1, f"canary fired on the cluster: {marker}"


def test_argv_values_arrive_verbatim_and_never_execute(conn):
    marker = f"/tmp/heroes-canary-{secrets.token_hex(6)}"
    values = canaries(marker)
    result = conn.run(["printf", "%s\\0", *values])
    assert result.rc == 0, result.stderr
    assert result.stdout.split("\0")[:-1] == values
    # the same through stdin: data, never code
    echoed = conn.run(["cat"], stdin="\n".join(values))
    assert echoed.stdout == "\n".join(values)
    assert_no_marker(conn, marker)


def test_shell_strings_are_impossible(conn):
    with pytest.raises(InvalidArgument):
        conn.run("id; touch /tmp/x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        conn.run(["echo", "nul\x00byte"])
    with pytest.raises(InvalidArgument):
        conn.run(["echo", 42])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument):
        conn.run([])


def test_sbatch_options_with_canaries_are_data(conn):
    marker = f"/tmp/heroes-canary-{secrets.token_hex(6)}"
    slurm = SlurmClient(conn)
    name = f"heroes-inj-$(touch {marker})-`touch {marker}`-'; touch {marker}; '"
    comment = f"\"; touch {marker}; \" $(touch {marker})"
    job_id = slurm.submit("#!/bin/sh\ntrue\n", ["--job-name", name, f"--comment={comment}", "--time=1",
                                                "--output=/dev/null"])
    (queued,) = slurm.queue(job_ids=[job_id]) or slurm.accounting(job_ids=[job_id])
    assert queued.name == name
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = slurm.accounting(job_ids=[job_id])
        # slurmdbd may briefly hold a provisional record (name "allocation", no partition) until the
        # controller's job-start message arrives; wait for the full one
        if rows and rows[0].state in FINAL_STATES and rows[0].partition:
            break
        time.sleep(1)
    assert rows and rows[0].name == name and rows[0].state == "COMPLETED", rows
    assert_no_marker(conn, marker)


def test_job_lookup_by_a_name_full_of_shell_syntax(conn):
    """squeue/sacct --name with $(), backticks, ';' and spaces find exactly the job (data, not code).

    Quotes are left out on purpose: slurmdbd escapes ' and " when storing names, so ``sacct --name``
    cannot match a name with quotes (a Slurm limitation; job names made by the gateway avoid quotes)."""
    marker = f"/tmp/heroes-canary-{secrets.token_hex(6)}"
    slurm = SlurmClient(conn)
    name = f"heroes-$(touch {marker})-`touch {marker}`; touch {marker} & {secrets.token_hex(3)}"
    job_id = slurm.submit("#!/bin/sh\nsleep 2\n", ["--job-name", name, "--time=1", "--output=/dev/null"])
    assert [j.job_id for j in slurm.queue(name=name)] == [job_id]
    deadline = time.monotonic() + 120
    found = []
    while time.monotonic() < deadline and not found:
        found = [j.job_id for j in slurm.accounting(name=name, since="now-1hour")]
        time.sleep(0.5)
    assert found == [job_id]
    assert_no_marker(conn, marker)


def test_sftp_file_names_with_canaries_are_literal(conn):
    # file names cannot hold '/', so these canaries would create the marker in the working directory
    marker = f"heroes-canary-{secrets.token_hex(6)}"
    folder = f"heroes-work/inj-{secrets.token_hex(4)}"
    conn.run(["mkdir", "-p", folder]).check()
    names = [f"$(touch {marker})", f"`touch {marker}`", f"a; touch {marker}", f"'\"{marker}\"'",
             f"x\ntouch {marker}"]
    for i, name in enumerate(names):
        conn.put_stream(io.BytesIO(str(i).encode()), f"{folder}/{name}")
    listed = conn.run(["find", folder, "-mindepth", "1", "-printf", "%f\\0"]).stdout.split("\0")[:-1]
    assert sorted(listed) == sorted(names)
    for i, name in enumerate(names):
        with conn.get_stream(f"{folder}/{name}") as fh:
            assert fh.read() == str(i).encode()
    conn.run(["rm", "-rf", "--", folder]).check()
    for place in (marker, f"heroes-work/{marker}", f"{folder}/{marker}"):
        assert conn.run(["test", "-e", place]).rc == 1, f"canary fired: {place}"


# --- identity: chosen names never become other accounts ------------------------------------------------
def _as_signed(stack_settings, account: str, principals: list[str]) -> str:
    """Log in to alpha as ``account`` with a certificate of the trusted gateway CA naming ``principals``
    (what a compromised or careless gateway could sign); ``id -un`` of the session."""
    signed = identity.get_ca().sign(principals, key_id=f"forged:{','.join(principals)}", validity_s=300)

    class Fixed:
        kind = "user-certificate"
        login = account

        def current(self):
            return signed.pkey, float(signed.valid_before)

    settings = get_clusters_settings().model_copy(update={"connect_attempts": 1})
    pool = ConnectionPool(identity.endpoint_of(embedded_cluster(stack_settings, "alpha")), Fixed(), settings)
    try:
        return ClusterConnector(pool).run(["id", "-un"], timeout=30).stdout.strip()
    finally:
        pool.close()


@pytest.mark.parametrize("account, principals", [
    ("carol", ["carol"]),                   # the old scheme: principal = account name
    ("carol", ["carol@acme"]),              # acme's admin made a user "carol" (after globex's was deleted)
    ("carol", ["jh-carol@acme", "carol@acme", "bob@acme"]),
    ("heroes", ["heroes"]),                 # the gateway's service account (a Slurm operator)
    ("heroes", ["heroes@acme"]),
    ("root", ["root", "root@acme"]),
    ("postgres", ["postgres", "postgres@acme"]),  # a system account of the machine
    ("nobody", ["nobody"]),
    ("bob", ["carol@globex"]),              # a real principal, but for another account
])
def test_login_node_refuses_certificates_whose_principal_is_not_listed_for_the_account(conn, stack_settings,
                                                                                      account, principals):
    with pytest.raises(AuthenticationFailed):
        _as_signed(stack_settings, account, principals)


def test_login_node_admits_exactly_the_published_principals(conn, stack_settings):
    """The positive control of the refusals above: same CA, same node, the listed principals get in."""
    assert _as_signed(stack_settings, "carol", ["carol@globex"]) == "carol"
    assert _as_signed(stack_settings, "bob", ["bob@acme"]) == "bob"
    assert _as_signed(stack_settings, "heroes", ["heroes:service"]) == "heroes"


@pytest.mark.parametrize("name", ["jh-carol", "jh-bob", "postgres", "cloudsdk", "heroes", "root", "daemon", "slurm"])
def test_users_named_after_other_accounts_get_no_connector(conn, stack_settings, name):
    """acme users named like another tenant's, a system, a service or the gateway host's account: refused
    by the gateway before any connection (no mapping names them; a mapping to such an account is refused)."""
    alpha = embedded_cluster(stack_settings, "alpha")
    impostor = Principal(username=name, organization="acme", roles=frozenset({"user"}))
    with pytest.raises(NoClusterAccess):
        identity.connector_for(alpha, impostor)
    with pytest.raises(NoClusterAccess):
        identity.connector_for(alpha, type("P", (), {"username": "dave", "organization": "acme",
                                                     "cluster_login": name})())


def test_another_tenants_user_name_in_your_organization_is_not_that_user(conn, stack_settings):
    """carol@acme is not carol@globex: the mapping the cluster publishes knows only the latter."""
    alpha = embedded_cluster(stack_settings, "alpha")
    with pytest.raises(NoClusterAccess, match="carol@acme has no login"):
        identity.connector_for(alpha, Principal(username="carol", organization="acme", roles=frozenset({"user"})))
    assert identity.connector_for(alpha, BOB).login == "bob"
