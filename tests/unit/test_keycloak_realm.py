"""The committed ``heroes`` realm file and the secret files, checked without a running Keycloak."""
from __future__ import annotations

import json
import stat

import pytest

from heroes_dev.components import keycloak as kc
from heroes_dev.settings import StackSettings


@pytest.fixture(scope="module")
def realm():
    return json.loads(kc.realm_file(StackSettings()).read_text())


@pytest.fixture(scope="module")
def client(realm):
    (found,) = [c for c in realm["clients"] if c["clientId"] == kc.CLIENT_ID]
    return found


def test_no_client_scopes_array_so_builtin_scopes_survive_import(realm):
    assert "clientScopes" not in realm
    assert "defaultDefaultClientScopes" not in realm


def test_client_secret_is_an_env_placeholder(client):
    assert client["secret"] == "${" + kc.CLIENT_SECRET_ENV + "}"
    assert client["publicClient"] is False
    assert client["standardFlowEnabled"] and client["directAccessGrantsEnabled"]


def test_redirect_and_logout_uris_cover_both_loopback_names(client):
    assert set(client["redirectUris"]) == {"http://127.0.0.1:8000/hub/oauth_callback",
                                           "http://localhost:8000/hub/oauth_callback"}
    assert set(client["attributes"]["post.logout.redirect.uris"].split("##")) == {
        "http://127.0.0.1:8000/*", "http://localhost:8000/*"}


@pytest.mark.parametrize("mapper_type, claim", [("oidc-group-membership-mapper", "groups"),
                                                ("oidc-usermodel-realm-role-mapper", "roles")])
def test_claims_reach_id_token_access_token_and_userinfo(client, mapper_type, claim):
    (mapper,) = [m for m in client["protocolMappers"] if m["protocolMapper"] == mapper_type]
    config = mapper["config"]
    assert config["claim.name"] == claim
    for where in ("id.token.claim", "access.token.claim", "userinfo.token.claim"):
        assert config[where] == "true"
    if claim == "groups":
        assert config["full.path"] == "false"


def test_demo_organizations_roles_and_users(realm):
    assert {g["name"] for g in realm["groups"]} == {"acme", "globex"}
    assert {r["name"] for r in realm["roles"]["realm"]} == {"platform-admin", "org-admin", "user"}
    users = {u["username"]: u for u in realm["users"]}
    expected = {"alice": (["/acme"], {"org-admin", "user"}), "bob": (["/acme"], {"user"}),
                "carol": (["/globex"], {"user"}), "dave": (["/globex"], {"org-admin", "user"}),
                "root": ([], {"platform-admin", "user"})}
    assert set(users) == set(expected)
    for name, (groups, roles) in expected.items():
        user = users[name]
        assert user["groups"] == groups and set(user["realmRoles"]) == roles
        # a complete profile, so Keycloak 26 does not stop the first login at "update profile"
        assert user["enabled"] and user["emailVerified"] and user["email"]
        assert user["firstName"] and user["lastName"] and user["requiredActions"] == []
        (cred,) = user["credentials"]
        assert cred == {"type": "password", "value": f"{name}-pass", "temporary": False}


def test_secret_file_is_created_private_and_never_rewritten(tmp_path):
    path = tmp_path / "etc" / "client-secret"
    first = kc.ensure_secret_file(path)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert kc.ensure_secret_file(path) == first
    path.write_text("")  # an empty leftover is replaced, not used as a secret
    assert len(kc.ensure_secret_file(path)) >= 32
