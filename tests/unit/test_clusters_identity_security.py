"""Who a user is on a cluster (issue 14): the rules the gateway applies before anything connects.

Pure logic: certificates are inspected with OpenSSH's own ``ssh-keygen -L``; the login node's side (sshd
refusing certificates whose principal its principals file does not list) is in
tests/integration/test_clusters_injection.py and test_service_isolation.py.
"""
from __future__ import annotations

import pwd
import subprocess
from types import SimpleNamespace

import pytest

from heroes_service.clusters import connector, identity, logins, probes
from heroes_service.clusters.certs import UserCA
from heroes_service.clusters.config import ClustersSettings
from heroes_service.clusters.errors import NoClusterAccess
from heroes_service.clusters.vault import Vault


def settings(**overrides) -> ClustersSettings:
    return ClustersSettings(secrets_dir="/nonexistent", **overrides)


def user(name: str, org: str | None = "acme", **extra):
    return SimpleNamespace(username=name, organization=org, **extra)


def test_gateway_principals_name_user_and_organization_and_cannot_collide():
    assert logins.gateway_principal(user("bob")) == "bob@acme"
    assert logins.gateway_principal(user("bob", "globex")) == "bob@globex"
    # '@' and ':' are in no username or organization name: no user's principal is the service's
    assert ":" in logins.SERVICE_PRINCIPAL
    for bad in (user("bob", None), user("Bob"), user("bob", "ac@me"), user("a b")):
        with pytest.raises(NoClusterAccess):
            logins.gateway_principal(bad)


@pytest.mark.parametrize("login", ["root", "jh-carol", "jh-bob", "heroes", "nobody", "slurm", "daemon"])
def test_root_service_gateway_and_system_accounts_are_never_a_users_login(login):
    reason = logins.refusal(login, settings())
    assert reason, login
    with pytest.raises(NoClusterAccess, match="refused"):
        logins.check_login(login, settings())


def test_any_system_account_of_the_gateway_host_is_refused():
    system = [p.pw_name for p in pwd.getpwall() if p.pw_uid < 1000 and logins.LOGIN_RE.match(p.pw_name)]
    assert "root" in system and len(system) > 5
    assert all(logins.refusal(name, settings()) for name in system)


def test_other_accounts_of_the_gateway_host_are_refused_unless_a_cluster_publishes_them(monkeypatch):
    ordinary = next((p.pw_name for p in pwd.getpwall()
                     if p.pw_uid >= 1000 and p.pw_shell not in logins.NO_LOGIN_SHELLS
                     and logins.LOGIN_RE.match(p.pw_name) and not p.pw_name.startswith("jh-")), None)
    if ordinary is None:
        pytest.fail("this machine has no ordinary account to test with (the stack creates alice, bob, carol)")
    monkeypatch.setattr(logins.embedded, "published_accounts", lambda: set())
    assert "account of the gateway host" in logins.refusal(ordinary, settings())
    monkeypatch.setattr(logins.embedded, "published_accounts", lambda: {ordinary})
    assert logins.refusal(ordinary, settings()) is None
    # where the gateway shares the clusters' user directory the platform admin turns the rule off
    monkeypatch.setattr(logins.embedded, "published_accounts", lambda: set())
    assert logins.refusal(ordinary, settings(refuse_gateway_host_accounts=False)) is None


def test_service_logins_may_be_the_service_account_but_never_root_or_system(monkeypatch):
    assert logins.refusal("heroes", settings(), service=True) is None
    for bad in ("root", "jh-heroes", "daemon", "bin", "Root", "x;id"):
        assert logins.refusal(bad, settings(), service=True), bad


def test_a_chosen_username_is_no_login_without_the_cluster_owners_mapping(monkeypatch):
    cluster = SimpleNamespace(id="c1", name="alpha", host="203.0.113.7", port=22)
    monkeypatch.setattr(logins.embedded, "published_logins", lambda host, port: None)
    for name in ("jh-carol", "postgres", "heroes", "root", "cloudsdk", "dave"):
        with pytest.raises(NoClusterAccess, match="has no login"):
            logins.login_for(cluster, user(name), settings())
    # the embedded node's published mapping decides; a mapping to a refused account is still refused
    published = {"bob@acme": "bob", "mallory@acme": "root"}
    monkeypatch.setattr(logins.embedded, "published_logins", lambda host, port: published)
    monkeypatch.setattr(logins.embedded, "published_accounts", lambda: {"bob"})
    assert logins.login_for(cluster, user("bob"), settings()) == ("bob", "bob@acme")
    with pytest.raises(NoClusterAccess):
        logins.login_for(cluster, user("bob", "globex"), settings())
    with pytest.raises(NoClusterAccess, match="root"):
        logins.login_for(cluster, user("mallory"), settings())
    assert logins.principals_for(cluster, "bob") == ("bob@acme",)


def _inspect(tmp_path, certificate: str) -> str:
    path = tmp_path / "cert.pub"
    path.write_text(certificate + "\n")
    return subprocess.run(["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True, check=True).stdout


def test_certificates_name_the_gateway_principal_and_key_id_not_the_account(tmp_path):
    ca = UserCA(Vault(tmp_path / "s"))
    cluster = SimpleNamespace(id="c1", name="alpha", host="203.0.113.7", port=22)
    cred = identity.CertificateCredential(cluster, "bob", ca, settings(), ("bob@acme",), user_id="u-123")
    cred.current()
    text = _inspect(tmp_path, cred.certificate.certificate)
    principals = text.split("Principals:")[1].split("Critical")[0].split()
    assert principals == ["bob@acme"]  # not "bob": the account is the login node's decision
    assert 'Key ID: "heroes:bob@acme:u-123 as bob@alpha"' in text


def test_deleting_a_user_ends_their_pooled_sessions_and_certificates(tmp_path, monkeypatch):
    ca = UserCA(Vault(tmp_path / "s"))
    monkeypatch.setattr(identity, "get_ca", lambda s=None: ca)
    cluster = SimpleNamespace(id="c-del", name="alpha", host="203.0.113.7", port=22, identity_mode="per-user",
                              host_key_type="ssh-ed25519", host_key_b64="AAAA", service_key_enc=None,
                              service_login="heroes", organization="acme")
    monkeypatch.setattr(logins, "check_login", lambda login, s=None: login)
    conns = {who: identity.connector_as(cluster, who, acting_for=f"{who}@acme", settings=settings())
             for who in ("dave", "erin")}
    closed = []
    for who, conn in conns.items():
        monkeypatch.setattr(conn._pool, "close", lambda who=who: closed.append(who))
    cert = conns["dave"]._pool.credential
    cert.current()
    try:
        assert identity.forget_user("dave", "acme") == 1
        assert closed == ["dave"]  # erin's sessions stay
        assert not any(c.principals == ("dave@acme",) for c in identity._CERTS.values())
        with pytest.raises(NoClusterAccess, match="deleted or disabled"):
            cert.current()  # nothing signs for dave any more, not even a connector built before
        with pytest.raises(NoClusterAccess):
            identity.connector_for(cluster, SimpleNamespace(username="dave", organization="acme",
                                                            cluster_login="dave"), settings=settings())
        identity.restore_user("dave", "acme")
        cert.current()
    finally:
        identity.restore_user("dave", "acme")
        connector.close_pools(lambda key: key[0] == "c-del")
        identity.forget_cluster("c-del")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "169.254.169.254", "0.0.0.0", "fd00:ec2::254",
                                  "100.100.100.200", "224.0.0.1", "::ffff:127.0.0.1", "fe80::1"])
def test_probes_refuse_loopback_link_local_and_metadata(host, monkeypatch):
    monkeypatch.setattr(probes.embedded, "published_logins", lambda h, p: None)
    with pytest.raises(probes.ProbeRefused) as err:
        probes.resolve_allowed(host, 22, settings())
    assert str(err.value) == probes.unreachable_message(host, 22)  # the same sentence for every failure
    assert probes.resolve_allowed(host, 22, settings(allow_local_hosts=True))


def test_probes_allow_the_embedded_login_nodes_and_ordinary_hosts(monkeypatch):
    monkeypatch.setattr(probes.embedded, "published_logins", lambda h, p: {} if p == 2221 else None)
    assert probes.resolve_allowed("127.0.0.1", 2221, settings()) == ["127.0.0.1"]
    assert probes.resolve_allowed("192.0.2.10", 22, settings()) == ["192.0.2.10"]
    with pytest.raises(probes.ProbeRefused):
        probes.resolve_allowed("no-such-host.invalid", 22, settings())


def test_probes_are_rate_limited_per_organization():
    limit = probes.RateLimit()
    for _ in range(3):
        limit.take("acme", 3)
    with pytest.raises(probes.RateLimited, match="at most 3"):
        limit.take("acme", 3)
    limit.take("globex", 3)  # another organization has its own budget


def test_deleting_an_organization_ends_every_session_of_its_users(tmp_path, monkeypatch):
    ca = UserCA(Vault(tmp_path / "s"))
    monkeypatch.setattr(identity, "get_ca", lambda s=None: ca)
    monkeypatch.setattr(logins, "check_login", lambda login, s=None: login)
    cluster = SimpleNamespace(id="c-org", name="alpha", host="203.0.113.7", port=22, identity_mode="per-user",
                              host_key_type="ssh-ed25519", host_key_b64="AAAA", service_key_enc=None,
                              service_login="heroes", organization="gone")
    mine = identity.connector_as(cluster, "u1", acting_for="u1@gone", settings=settings())
    other = identity.connector_as(cluster, "u2", acting_for="u2@stays", settings=settings())
    closed = []
    monkeypatch.setattr(mine._pool, "close", lambda: closed.append("gone"))
    monkeypatch.setattr(other._pool, "close", lambda: closed.append("stays"))
    try:
        assert identity.forget_organization("gone") == 1 and closed == ["gone"]
        with pytest.raises(NoClusterAccess):
            mine._pool.credential.current()
        other._pool.credential.current()
        identity.restore_organization("gone")
        mine._pool.credential.current()
    finally:
        identity.restore_organization("gone")
        connector.close_pools(lambda key: key[0] == "c-org")
        identity.forget_cluster("c-org")
