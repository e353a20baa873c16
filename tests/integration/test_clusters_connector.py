"""The cluster connector and per-user identity against the embedded login nodes (real sshd + Slurm).

Each module run has its own gateway CA (``isolated_secrets``), trusted by alpha and beta for the
duration only. Users act through ``connector_for(cluster, principal)`` exactly as the workflows will.
"""
from __future__ import annotations

import io
import secrets
import threading
import time

import pytest

from heroes_service.auth import Principal
from heroes_service.clusters import identity
from heroes_service.clusters.certs import UserCA
from heroes_service.clusters.config import get_clusters_settings
from heroes_service.clusters.connector import ClusterConnector, ConnectionPool
from heroes_service.clusters.errors import (AuthenticationFailed, ClusterUnreachable, CommandTimeout,
                                            HostKeyMismatch, NoClusterAccess)
from heroes_service.clusters.slurm import FINAL_STATES, SlurmClient
from cluster_testing import (embedded_cluster, free_port, impostor_sshd, isolated_secrets,
                                             trust_ca)
from heroes_service.clusters.vault import Vault

pytestmark = pytest.mark.integration
BOB = Principal(username="bob", organization="acme", roles=frozenset({"user"}))
CAROL = Principal(username="carol", organization="globex", roles=frozenset({"user"}))
JOB_DEADLINE_S = 120


@pytest.fixture(scope="module")
def stack(stack_settings, require):
    for name in ("slurm-alpha", "slurm-beta", "login-alpha", "login-beta", "image"):
        require(name)
    with isolated_secrets():
        identity.set_cluster_login_resolver(None)
        trust_ca(stack_settings)
        yield stack_settings


@pytest.fixture(scope="module")
def alpha(stack):
    return embedded_cluster(stack, "alpha")


def _credential_pool(cluster, login: str, signed) -> ClusterConnector:
    """A connector that offers exactly ``signed`` (a certs.SignedKey), for refusal tests."""

    class Fixed:
        kind = "user-certificate"

        def __init__(self):
            self.login = login

        def current(self):
            return signed.pkey, float(signed.valid_before)

    settings = get_clusters_settings().model_copy(update={"connect_attempts": 1})
    return ClusterConnector(ConnectionPool(identity.endpoint_of(cluster), Fixed(), settings))


def wait_final(slurm: SlurmClient, job_id: str) -> str:
    deadline = time.monotonic() + JOB_DEADLINE_S
    state = ""
    while time.monotonic() < deadline:
        rows = slurm.accounting(job_ids=[job_id])
        if rows and rows[0].state in FINAL_STATES:
            return rows[0].state
        state = rows[0].state if rows else "?"
        time.sleep(1)
    raise AssertionError(f"job {job_id} not final after {JOB_DEADLINE_S}s (last state {state})")


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_per_user_certificate_logs_in_as_the_user(stack, name):
    conn = identity.connector_for(embedded_cluster(stack, name), BOB)
    assert conn.login == "bob" and conn.credential_kind == "user-certificate"
    result = conn.run(["id", "-un"])
    assert result.rc == 0 and result.stdout.strip() == "bob"
    assert conn.run(["printenv", "SLURM_CONF"]).stdout.strip().endswith(f"slurm-{name}/slurm.conf")


def test_bobs_sbatch_runs_as_bob_and_carol_cannot_touch_it(stack, alpha):
    bob = SlurmClient(identity.connector_for(alpha, BOB))
    nonce = secrets.token_hex(4)
    job_id = bob.submit(f"#!/bin/bash\nid -un > heroes-whoami-{nonce}.txt\nsleep 8\n",
                        ["--job-name", f"heroes-test-{nonce}", "--time=2", "--output=/dev/null"])
    queued = bob.queue(job_ids=[job_id])
    assert queued and queued[0].user == "bob" and queued[0].name == f"heroes-test-{nonce}", queued

    # carol, even with a carol-principal on acme's cluster object, is refused by the gateway ...
    with pytest.raises(NoClusterAccess):
        identity.connector_for(alpha, CAROL)
    # ... and on the cluster itself her own account cannot cancel bob's job
    carol = SlurmClient(identity.connector_as(alpha, "carol"))
    refused = carol.cancel([job_id])
    assert refused.rc != 0 or "not owner" in refused.stderr.lower() or "denied" in refused.stderr.lower(), refused
    # and her certificate cannot log in as bob (bob's principals file lists bob@acme only)
    carol_cert = identity.get_ca().sign(["carol@globex"], key_id="heroes:carol@alpha", validity_s=300)
    with pytest.raises(AuthenticationFailed):
        _credential_pool(alpha, "bob", carol_cert).run(["id", "-un"])

    assert wait_final(bob, job_id) == "COMPLETED"
    (row,) = bob.accounting(job_ids=[job_id])
    assert row.user == "bob" and row.exit_code == 0
    conn = identity.connector_for(alpha, BOB)
    assert conn.run(["cat", f"heroes-whoami-{nonce}.txt"]).check().stdout.strip() == "bob"
    conn.run(["rm", "-f", f"heroes-whoami-{nonce}.txt"])


def test_expired_and_foreign_certificates_are_refused(stack, alpha):
    now = int(time.time())
    expired = identity.get_ca().sign(["bob@acme"], key_id="heroes:expired", validity_s=0,
                                     valid_after=now - 3600, valid_before=now - 60)
    with pytest.raises(AuthenticationFailed, match="refused user-certificate authentication as 'bob'"):
        _credential_pool(alpha, "bob", expired).run(["id", "-un"])
    not_yet = identity.get_ca().sign(["bob@acme"], key_id="heroes:future", validity_s=0,
                                     valid_after=now + 3600, valid_before=now + 7200)
    with pytest.raises(AuthenticationFailed):
        _credential_pool(alpha, "bob", not_yet).run(["id", "-un"])
    import tempfile
    from pathlib import Path

    rogue = UserCA(Vault(Path(tempfile.mkdtemp()) / "rogue")).sign(["bob@acme"], key_id="rogue", validity_s=300)
    with pytest.raises(AuthenticationFailed):
        _credential_pool(alpha, "bob", rogue).run(["id", "-un"])
    # a good one, from the same CA, still works: the refusals were about validity and trust
    good = identity.get_ca().sign(["bob@acme"], key_id="heroes:good", validity_s=300)
    assert _credential_pool(alpha, "bob", good).run(["id", "-un"]).stdout.strip() == "bob"


def test_certificates_are_cached_until_near_expiry(stack, alpha):
    cred = identity.CertificateCredential("alpha", "bob", identity.get_ca(), get_clusters_settings(), ("bob@acme",))
    first, until = cred.current()
    again, _ = cred.current()
    assert again is first and until - time.time() <= get_clusters_settings().cert_validity_minutes * 60 + 1
    short = get_clusters_settings().model_copy(update={"cert_renew_margin_s": 10 ** 6})
    renewing = identity.CertificateCredential("alpha", "bob", identity.get_ca(), short, ("bob@acme",))
    assert renewing.current()[0] is not renewing.current()[0]


def test_connection_retires_when_its_certificate_expires(stack, alpha):
    """A pooled session is not reused past its certificate: the next call signs and connects anew."""
    conn = identity.connector_as(alpha, "alice")
    assert conn.run(["true"]).rc == 0
    pool = conn._pool
    before = pool.connects
    with pool._cv:
        for c in pool._conns:
            c.expires_at = time.time() + 1  # as if the certificate ended now
    assert conn.run(["true"]).rc == 0
    assert pool.connects == before + 1


def test_changed_host_key_is_refused(stack, alpha):
    with impostor_sshd(stack, "alpha") as (port, impostor_key):
        # pinned to alpha's key, pointed at a node that presents another key
        moved = embedded_cluster(stack, "alpha", port=port)
        with pytest.raises(HostKeyMismatch) as err:
            identity.connector_for(moved, BOB).run(["id", "-un"])
        message = str(err.value)
        assert alpha.host_key_fingerprint in message and impostor_key.fingerprint in message
        assert "changed" in message and "refused" in message
        # the very same node works once its own key is the pinned one (so the refusal was the key)
        pinned = embedded_cluster(stack, "alpha", port=port, host_key=impostor_key)
        assert identity.connector_for(pinned, BOB).run(["id", "-un"]).stdout.strip() == "bob"


def test_other_organization_and_invalid_logins_are_refused(stack, alpha):
    with pytest.raises(NoClusterAccess):
        identity.connector_for(alpha, CAROL)
    weird = Principal(username="Bob;rm -rf", organization="acme", roles=frozenset({"user"}))
    with pytest.raises(NoClusterAccess):
        identity.connector_for(alpha, weird)


def test_cluster_login_attribute_maps_user_to_account(stack, alpha):
    """A platform admin's mapping (robert -> bob) works only where the cluster's owner lists robert@acme for
    bob: the login node, not the gateway, has the last word."""
    from heroes_dev.components.login import principals_dir
    from heroes_service.clusters import embedded

    robert = Principal(username="robert", organization="acme", roles=frozenset({"user"}))
    identity.set_cluster_login_resolver(lambda p: "bob" if p.username == "robert" else None)
    listed = principals_dir(stack, "alpha") / "bob"
    original = listed.read_text()
    try:
        with pytest.raises(AuthenticationFailed):
            identity.connector_for(alpha, robert).run(["id", "-un"])
        listed.write_text(original + "robert@acme\n")
        embedded.forget_published()
        conn = identity.connector_for(alpha, robert)
        conn.close()
        assert conn.run(["id", "-un"]).stdout.strip() == "bob"
    finally:
        listed.write_text(original)
        embedded.forget_published()
        identity.set_cluster_login_resolver(None)


def test_service_account_mode_uses_the_encrypted_key(stack):
    from heroes_dev.components.login import user_key_path

    key_text = user_key_path(stack, "heroes").read_text()
    cluster = embedded_cluster(stack, "beta", mode=identity.SERVICE_ACCOUNT, service_key=key_text)
    assert "PRIVATE KEY" not in cluster.service_key_enc
    for principal in (BOB, Principal(username="alice", organization="acme", roles=frozenset({"org-admin"}))):
        conn = identity.connector_for(cluster, principal)
        assert conn.credential_kind == "service-key"
        assert conn.run(["id", "-un"]).stdout.strip() == "heroes"
    assert identity.service_connector(cluster).login == "heroes"


def test_pool_reuses_connections_under_concurrency(stack, alpha):
    conn = identity.connector_as(alpha, "alice")
    conn.close()
    before = conn.stats()["connects"]
    errors, outputs = [], []

    def work(i: int):
        try:
            outputs.append(conn.run(["echo", str(i)]).stdout.strip())
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert sorted(outputs, key=int) == [str(i) for i in range(60)]
    stats = conn.stats()
    assert 1 <= stats["connects"] - before <= get_clusters_settings().max_connections, stats
    assert stats["connections"] <= get_clusters_settings().max_connections, stats


def test_broken_transport_reconnects_transparently(stack, alpha):
    conn = identity.connector_as(alpha, "alice")
    assert conn.run(["true"]).rc == 0
    before = conn.stats()["connects"]
    with conn._pool._cv:
        for c in conn._pool._conns:
            c.transport.sock.close()  # the network drops the connection under us
    time.sleep(0.2)
    assert conn.run(["echo", "back"]).stdout.strip() == "back"
    assert conn.stats()["connects"] == before + 1


def test_timeout_closes_the_channel_and_the_pool_survives(stack, alpha):
    conn = identity.connector_as(alpha, "alice")
    start = time.monotonic()
    with pytest.raises(CommandTimeout):
        conn.run(["sleep", "30"], timeout=1.5)
    assert time.monotonic() - start < 5
    assert conn.run(["echo", "alive"], timeout=10).stdout.strip() == "alive"


def test_unreachable_node_backs_off_and_says_so(stack, alpha):
    dead = embedded_cluster(stack, "alpha", port=free_port())
    settings = get_clusters_settings().model_copy(update={"connect_attempts": 3, "backoff_base_s": 0.2})
    pool = ConnectionPool(identity.endpoint_of(dead),
                          identity.CertificateCredential("alpha", "bob", identity.get_ca(), settings, ("bob@acme",)),
                          settings)
    start = time.monotonic()
    with pytest.raises(ClusterUnreachable, match="no TCP connection"):
        ClusterConnector(pool).run(["true"], timeout=20)
    elapsed = time.monotonic() - start
    assert 0.5 <= elapsed < 10, elapsed  # 0.2 + 0.4 s of backoff between the three attempts
    # a caller arriving during the back-off window with a short deadline fails fast instead of hammering
    with pytest.raises(ClusterUnreachable, match="next attempt in"):
        ClusterConnector(pool).run(["true"], timeout=0.1)


def test_files_stream_both_ways(stack, alpha):
    conn = identity.connector_for(alpha, BOB)
    conn.run(["mkdir", "-p", "heroes-work"]).check()
    payload = secrets.token_bytes(3 * 1024 * 1024 + 17)
    path = f"heroes-work/stream-{secrets.token_hex(4)}.bin"
    assert conn.put_stream(io.BytesIO(payload), path, mode=0o600) == len(payload)
    assert conn.run(["stat", "-c", "%U %a %s", path]).stdout.split() == ["bob", "600", str(len(payload))]
    with conn.get_stream(path) as remote:
        back = b"".join(iter(lambda: remote.read(65536), b""))
    assert back == payload
    leftovers = conn.run(["sh", "-c", 'ls -a heroes-work | grep -c heroes-part || true']).stdout.strip()
    assert leftovers == "0"
    conn.run(["rm", "-f", path]).check()


def test_outage_of_the_login_node_then_recovery(stack, tmp_path):
    """sshd goes away (pooled connection dies), calls fail clearly with backoff, then it comes back."""
    with impostor_sshd(stack, "alpha", key_dir=tmp_path) as (port, key):
        node = embedded_cluster(stack, "alpha", port=port, host_key=key)
        conn = identity.connector_for(node, BOB)
        assert conn.run(["id", "-un"]).stdout.strip() == "bob"
        connects = conn.stats()["connects"]
        for c in list(conn._pool._conns):  # sshd's per-connection child outlives the listener: cut it too
            c.transport.sock.shutdown(2)
    start = time.monotonic()
    with pytest.raises(ClusterUnreachable):
        conn.run(["true"], timeout=5)
    assert time.monotonic() - start < 8
    with impostor_sshd(stack, "alpha", port=port, key_dir=tmp_path):
        deadline = time.monotonic() + 30
        while True:  # the back-off window (<= backoff_max_s) may still be open: keep calling like a reconciler
            try:
                assert conn.run(["id", "-un"], timeout=5).stdout.strip() == "bob"
                break
            except ClusterUnreachable:
                assert time.monotonic() < deadline, "no recovery within 30 s"
                time.sleep(0.5)
        assert conn.stats()["connects"] == connects + 1
        assert conn.stats()["failures"] == 0
