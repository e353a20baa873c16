"""Outages under load: the login node's sshd goes away for 60 s while instances are in flight, then returns.

The shared login nodes and controllers are never touched (other engineers test against them). Instead this
test starts its OWN sshd for cluster alpha on a free port: the same SLURM_CONF (so it reaches alpha's real
slurmctld), the same authorized-keys directory and the same TrustedUserCAKeys file as alpha's login node, and
a host key of its own that is kept across the restart (so the pinned key still matches). A cluster
``alpha-outage`` is enrolled through the API against that sshd; stopping it (listener AND the per-connection
children, which would otherwise keep the pooled sessions alive) is a real login-node outage.

What must hold: the service stays up and answers; nothing is marked FAILED or LOST while the cluster is
unreachable (the jobs keep running on Slurm meanwhile); instances submitted during the outage wait and retry;
when sshd returns every instance reaches COMPLETED with its outputs in S3, and ``sacct`` counts exactly one job
per step name (no duplicate submission).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from heroes_dev.components.login import authorized_keys_dir, principals_dir, trusted_ca_path
from heroes_dev.components.slurm import ClusterShape, SlurmCluster, slurm_conf_path
from heroes_dev.procs import terminate
from cluster_testing import free_port
from workflow_support import FINAL, download, own_bucket, publish, wait_final, wait_state, wf  # noqa: F401

pytestmark = pytest.mark.integration

OUTAGE_S = 60
CLUSTER = "alpha-outage"

TEMPLATE = {
    "name": "outage-chain", "title": "a (sleep) -> b",
    "parameters": [{"name": "nap", "type": "int", "min": 0, "max": 120, "default": 5}],
    "steps": [
        {"name": "a", "command": ["sh", "-c", "sleep \"$1\"; echo a > outputs/a.txt", "sh", "{nap}"],
         "resources": {"memory_mb": 64}},
        {"name": "b", "depends_on": ["a"], "command": ["sh", "-c", "echo b > outputs/b.txt"],
         "resources": {"memory_mb": 64}},
    ],
    "outputs": ["outputs/*"],
}


class LoginSshd:
    """Our own sshd in front of alpha: started and stopped by this test only (by its own pid)."""

    def __init__(self, stack, cluster: str, folder: Path, slurm_conf: Path | None = None):
        self.stack, self.cluster, self.folder = stack, cluster, folder
        self.slurm_conf = slurm_conf or slurm_conf_path(stack, cluster)
        self.port = free_port()
        self.key = folder / "host_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "outage-test", "-f", str(self.key)],
                       check=True)
        self.proc: subprocess.Popen | None = None

    def config(self) -> Path:
        """alpha's login-node config (login.py) on our port, key and pid file (and ``slurm_conf``'s cluster)."""
        path = self.folder / "sshd_config"
        path.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"Port {self.port}", f"HostKey {self.key}",
            f'PidFile "{self.folder / "sshd.pid"}"',
            "AuthenticationMethods publickey", "PubkeyAuthentication yes",
            f'AuthorizedKeysFile "{authorized_keys_dir(self.stack, self.cluster)}/%u"',
            f'TrustedUserCAKeys "{trusted_ca_path(self.stack, self.cluster)}"',
            f'AuthorizedPrincipalsFile "{principals_dir(self.stack, self.cluster)}/%u"',
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin no", "UsePAM yes",
            f'SetEnv "SLURM_CONF={self.slurm_conf}"',
            "MaxStartups 50:30:200", "MaxSessions 64", "LogLevel VERBOSE", "Subsystem sftp internal-sftp", "",
        ]))
        return path

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = open(self.folder / "sshd.log", "a")
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(self.config())],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, (self.folder / "sshd.log").read_text()[-800:]
                assert time.monotonic() < deadline, "our sshd did not listen"
                time.sleep(0.1)

    def stop(self) -> int:
        """The listener and every session it forked (descendants of OUR process); returns how many sessions."""
        if self.proc is None or self.proc.poll() is not None:
            return 0
        children = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.kill()
        self.proc.wait(10)
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(children, timeout=10)
        return len(children)

    def fingerprint(self) -> str:
        out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{self.key}.pub"], check=True,
                             capture_output=True, text=True).stdout
        return out.split()[1]


@contextmanager
def own_login_node(stack, slurm_conf: Path | None = None) -> Iterator[LoginSshd]:
    """Our sshd with alpha's keys, CA file and principals, in front of alpha's Slurm (or the cluster of
    ``slurm_conf``). Registered with the in-process service as another door to alpha's accounts (like
    ``cluster_testing.impostor_sshd``): the loopback host-key probe is allowed for it and its logins are
    alpha's, while the production rule (loopback refused) stays as it is."""
    from heroes_service.clusters import embedded

    folder = Path(tempfile.mkdtemp(prefix="heroes-outage-sshd-"))
    sshd = LoginSshd(stack, "alpha", folder, slurm_conf)
    sshd.start()
    embedded.register_node("127.0.0.1", sshd.port, "alpha")
    try:
        yield sshd
    finally:
        embedded.register_node("127.0.0.1", sshd.port, None)
        sshd.stop()
        shutil.rmtree(folder, ignore_errors=True)


def sacct_counts(stack, names: list[str], conf: Path | None = None) -> Counter:
    env = dict(os.environ, SLURM_CONF=str(conf or slurm_conf_path(stack, "alpha")))
    out = subprocess.run(["sacct", "--parsable2", "--noheader", "-X", "--allusers", "--starttime", "now-2hours",
                          "-o", "JobID,JobName,State", "--name", ",".join(names)], env=env, capture_output=True,
                         text=True, check=True).stdout
    return Counter(line.split("|")[1] for line in out.splitlines() if line.strip())


def sacct_states(stack, names: list[str]) -> dict[str, str]:
    env = dict(os.environ, SLURM_CONF=str(slurm_conf_path(stack, "alpha")))
    out = subprocess.run(["sacct", "--parsable2", "--noheader", "-X", "--allusers", "--starttime", "now-2hours",
                          "-o", "JobName,State", "--name", ",".join(names)], env=env, capture_output=True,
                         text=True, check=True).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line.strip())


def test_login_sshd_down_60s_with_instances_in_flight(wf):
    stack, alice, bob = wf["stack"], wf["apis"]["alice"], wf["apis"]["bob"]
    publish(alice, TEMPLATE)
    bucket = own_bucket(bob)
    with own_login_node(stack) as sshd:
        r = alice.post("/organization/admin/cluster/host-key", json={"host": "127.0.0.1", "port": sshd.port})
        assert r.status_code == 200 and r.json()["fingerprint"] == sshd.fingerprint(), r.text
        r = alice.post("/organization/admin/cluster/", json={
            "name": CLUSTER, "host": "127.0.0.1", "port": sshd.port, "host_key_fingerprint": sshd.fingerprint(),
            "work_dir": "heroes-work/{login}", "container_runtime": "charliecloud"})
        assert r.status_code == 201, r.text
        cluster_id = r.json()["id"]
        try:
            _scenario(wf, sshd, bob, bucket)
        finally:
            alice.delete(f"/organization/admin/cluster/{cluster_id}")


def _submit(bob, nap: int, wait: bool, cluster: str = CLUSTER) -> dict:
    r = bob.post("/organization/workflow/submit", json={"template": "outage-chain", "cluster": cluster,
                                                         "wait": wait, "parameters": {"nap": nap}})
    assert r.status_code == 201, r.text
    return r.json()


def _scenario(wf, sshd: LoginSshd, bob, bucket: str) -> None:
    stack, engine = wf["stack"], wf["app"].state.workflows
    # in flight before the outage: some still sleeping in step a when sshd goes, some ending during it
    before = [_submit(bob, nap, wait=True) for nap in (5, 15, 30, 45, 75, 90)]
    assert all(b["state"] in ("QUEUED", "RUNNING") for b in before), [(b["state"], b["reason"]) for b in before]
    wait_state(bob, before[0]["id"], {"RUNNING", "COMPLETED"}, timeout=60)

    sessions = sshd.stop()
    down_at = time.monotonic()
    print(f"sshd of {CLUSTER} stopped ({sessions} pooled session process(es) cut)")
    # submitted while the login node is away: accepted, then waits (staging/submitting retried)
    during = [_submit(bob, 5, wait=False) for _ in range(2)]
    ids = [b["id"] for b in before + during]
    seen: dict[str, set[str]] = {i: set() for i in ids}
    while time.monotonic() - down_at < OUTAGE_S:
        r = bob.get("/organization/workflow/instance", params={"limit": 200})
        assert r.status_code == 200, r.text  # the service keeps answering
        for iid in ids:
            body = bob.get(f"/organization/workflow/instance/{iid}").json()
            seen[iid].add(body["state"])
            assert body["state"] not in FINAL, ("an instance ended while its cluster was unreachable", body)
            assert all(s["state"] != "LOST" for s in body["steps"]), body
        time.sleep(3)
    cycle = engine.last_cycles.get(CLUSTER)
    assert cycle is not None and any("squeue" in e for e in cycle.errors), cycle
    # Slurm went on without us: the short ones' jobs finished while the gateway could not look
    job_names = [s["job_name"] for iid in ids[:2] for s in
                 bob.get(f"/organization/workflow/instance/{iid}").json()["steps"]]
    finished_blind = {n: st for n, st in sacct_states(stack, job_names).items() if st == "COMPLETED"}
    assert finished_blind, sacct_states(stack, job_names)
    for iid in ids[len(before):]:
        body = bob.get(f"/organization/workflow/instance/{iid}").json()
        assert body["state"] in ("NEW", "STAGING_IN", "SUBMITTING"), body
        assert any("retrying" in e["detail"] for e in body["events"]), body["events"]

    sshd.start()  # same port, same host key: the pinned fingerprint still matches
    back_at = time.monotonic()
    final = wait_final(bob, ids, timeout=420)
    caught_up = time.monotonic() - back_at
    print(f"sshd back after {OUTAGE_S}s down; {len(ids)} instances final {caught_up:.0f}s later; "
          f"states seen during the outage: { {i[:8]: sorted(s) for i, s in seen.items()} }")
    assert Counter(b["state"] for b in final.values()) == {"COMPLETED": len(ids)}, \
        [(b["state"], b["reason"]) for b in final.values() if b["state"] != "COMPLETED"]
    names = [s["job_name"] for b in final.values() for s in b["steps"]]
    assert len(names) == 2 * len(ids) and all(s["job_id"] for b in final.values() for s in b["steps"])
    counted = sacct_counts(stack, names)
    assert set(counted) == set(names), set(names) - set(counted)
    assert {n: c for n, c in counted.items() if c != 1} == {}, "duplicate jobs"
    for iid in ids:
        assert download(bob, bucket, f"workflows/{iid}/outputs/b.txt").strip() == b"b"


# --- a slurmctld restart, on a third, throw-away cluster of our own -------------------------------------------
GAMMA = "gamma"


class OwnCluster(SlurmCluster):
    """The stack's cluster recipe (slurm.py) on free ports, with one node and its own state directory; it
    registers in the shared slurmdbd and uses the shared munge. alpha's and beta's controllers stay untouched."""

    def __init__(self, settings, cluster: str):
        self.ctld_port, self.slurmd_port = free_port(), free_port()
        super().__init__(settings, cluster)
        self.shape = ClusterShape(cpus=2, memory_mb=2048, first_job_id=900000)

    @property
    def nodes(self) -> list[str]:
        return [f"{self.cluster}-n1"]

    def _ctld_port(self) -> int:
        return self.ctld_port

    def _slurmd_port(self, index: int) -> int:
        return self.slurmd_port + index

    def restart_controller(self, down_s: float, while_down=None) -> None:
        """SIGTERM our slurmctld (it saves its state), keep it down ``down_s`` (running ``while_down``),
        then start it again on the same state directory."""
        name = f"slurmctld-{self.cluster}"
        record = next(r for r in self.records() if r.name == name)
        assert terminate(record), "our slurmctld was not running"
        down_at = time.monotonic()
        if while_down:
            while_down()
        time.sleep(max(0.0, down_s - (time.monotonic() - down_at)))
        self.spawn(name, ["slurmctld", "-D", "-f", str(self.conf)], env=self.base_env(**self.env()))
        health = self.wait_healthy(90)
        assert health.ok, health.detail


@contextmanager
def own_cluster(stack) -> Iterator[OwnCluster]:
    cluster = OwnCluster(stack, GAMMA)
    cluster.stop()  # a run that died half-way may have left ours behind (only our recorded pids)
    cluster.ensure()
    cluster.start()
    try:
        health = cluster.wait_healthy(90)
        assert health.ok, health.detail
        cluster.configure()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.data / "state", ignore_errors=True)  # no stale jobs for the next run
        cluster.sacctmgr("delete", "cluster", GAMMA, check=False)  # slurmdbd lists alpha and beta again


def test_slurmctld_restart_with_instances_in_flight(wf):
    stack, alice, bob = wf["stack"], wf["apis"]["alice"], wf["apis"]["bob"]
    engine = wf["app"].state.workflows
    publish(alice, TEMPLATE)
    bucket = own_bucket(bob)
    with own_cluster(stack) as gamma, own_login_node(stack, gamma.conf) as sshd:
        r = alice.post("/organization/admin/cluster/", json={
            "name": GAMMA, "host": "127.0.0.1", "port": sshd.port, "host_key_fingerprint": sshd.fingerprint(),
            "work_dir": "heroes-work/{login}", "container_runtime": "charliecloud"})
        assert r.status_code == 201, r.text
        assert r.json()["slurm_cluster_name"] == GAMMA and r.json()["partitions"][0]["nodes"] == 1, r.json()
        cluster_id = r.json()["id"]
        try:
            before = [_submit(bob, nap, wait=True, cluster=GAMMA) for nap in (3, 20, 40, 60)]
            assert all(b["state"] in ("QUEUED", "RUNNING") for b in before), [(b["state"], b["reason"]) for b in before]
            wait_state(bob, before[0]["id"], {"RUNNING", "COMPLETED"}, timeout=60)
            during: list[dict] = []
            seen: dict[str, set[str]] = {}

            def while_down() -> None:
                during.append(_submit(bob, 3, wait=False, cluster=GAMMA))  # sbatch cannot reach the controller
                deadline = time.monotonic() + 25
                while time.monotonic() < deadline:
                    for b in before + during:
                        body = bob.get(f"/organization/workflow/instance/{b['id']}").json()
                        seen.setdefault(b["id"], set()).add(body["state"])
                        assert body["state"] not in FINAL or body["state"] == "COMPLETED", body
                        assert all(s["state"] != "LOST" for s in body["steps"]), body
                    time.sleep(2)
                cycle = engine.last_cycles.get(GAMMA)
                assert cycle is not None and any("squeue" in e for e in cycle.errors), cycle

            gamma.restart_controller(30, while_down)
            back_at = time.monotonic()
            ids = [b["id"] for b in before + during]
            final = wait_final(bob, ids, timeout=300)
            print(f"slurmctld of {GAMMA} restarted after 30 s down; {len(ids)} instances final "
                  f"{time.monotonic() - back_at:.0f}s later; states seen while down: "
                  f"{ {i[:8]: sorted(s) for i, s in seen.items()} }")
            assert Counter(b["state"] for b in final.values()) == {"COMPLETED": len(ids)}, \
                [(b["state"], b["reason"]) for b in final.values() if b["state"] != "COMPLETED"]
            retried = bob.get(f"/organization/workflow/instance/{during[0]['id']}").json()
            assert any("retrying" in e["detail"] for e in retried["events"]), retried["events"]
            names = [s["job_name"] for b in final.values() for s in b["steps"]]
            counted = sacct_counts(stack, names, gamma.conf)
            assert set(counted) == set(names), set(names) - set(counted)
            assert {n: c for n, c in counted.items() if c != 1} == {}, "duplicate jobs"
            for iid in ids:
                assert download(bob, bucket, f"workflows/{iid}/outputs/b.txt").strip() == b"b"
        finally:
            alice.delete(f"/organization/admin/cluster/{cluster_id}")
