"""Keycloak of the embedded stack, against the real server (``heroes dev up keycloak``).

What the rest of the gateway relies on: the ``heroes`` realm's ``jupyterhub`` client hands out signed
tokens whose ``groups`` claim carries plain organization names and whose ``roles`` claim carries realm
roles (in the ID token, the access token and userinfo); a browser login lands straight back on the hub's
callback without any "update your profile" detour; and the generated secrets stay out of logs.
"""
from __future__ import annotations

import html
import json
import re
import secrets
import stat
import urllib.parse

import pytest
import requests
from jwcrypto import jwk, jwt

from heroes_dev.components import keycloak as kc

pytestmark = pytest.mark.integration

HUB_CALLBACK = "http://127.0.0.1:8000/hub/oauth_callback"


@pytest.fixture(scope="module")
def keycloak(require):
    return require("keycloak")


@pytest.fixture(scope="module")
def settings(keycloak):
    return keycloak.settings


@pytest.fixture(scope="module")
def oidc(settings):
    """The realm's discovery document."""
    response = requests.get(f"{kc.issuer_url(settings)}/.well-known/openid-configuration", timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def jwks(oidc):
    response = requests.get(oidc["jwks_uri"], timeout=10)
    response.raise_for_status()
    return jwk.JWKSet.from_json(response.text)


def password_grant(settings, oidc, username, password, secret=None):
    return requests.post(oidc["token_endpoint"], timeout=10, data={
        "grant_type": "password", "client_id": kc.CLIENT_ID,
        "client_secret": kc.client_secret(settings) if secret is None else secret,
        "username": username, "password": password, "scope": "openid",
    })


def verified_claims(token, jwks, settings) -> dict:
    """Claims of a JWT whose signature checks out against the realm's JWKS (raises otherwise)."""
    checked = jwt.JWT(jwt=token, key=jwks, algs=["RS256"],
                      check_claims={"iss": kc.issuer_url(settings), "exp": None})
    return json.loads(checked.claims)


@pytest.fixture(scope="module")
def tokens(settings, oidc):
    """One direct-grant token response per demo user."""
    result = {}
    for user in ("alice", "bob", "carol", "root"):
        response = password_grant(settings, oidc, user, f"{user}-pass")
        assert response.status_code == 200, response.text
        result[user] = response.json()
    return result


# --- discovery and client set-up ------------------------------------------------------------------
def test_issuer_is_pinned_to_loopback(settings, oidc):
    assert oidc["issuer"] == f"http://127.0.0.1:{settings.ports.keycloak}/realms/heroes" == kc.issuer_url(settings)
    # a different Host header must not change the issuer (--hostname pins it)
    other = requests.get(f"http://localhost:{settings.ports.keycloak}/realms/heroes/.well-known/openid-configuration",
                         timeout=10).json()
    assert other["issuer"] == oidc["issuer"]


def test_builtin_client_scopes_were_kept(oidc):
    # the realm file must not carry a clientScopes array, which would drop these at import
    assert {"openid", "profile", "email", "roles"} <= set(oidc["scopes_supported"])


def test_health_is_on_the_management_port_only(settings):
    ready = requests.get(f"{kc.management_url(settings)}/health/ready", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "UP"
    assert settings.ports.keycloak_mgmt != settings.ports.s3
    main = requests.get(f"{kc.base_url(settings)}/health/ready", timeout=10)
    assert main.status_code == 404


# --- tokens -----------------------------------------------------------------------------------------
def test_carol_access_token_is_signed_and_names_globex(tokens, jwks, settings):
    claims = verified_claims(tokens["carol"]["access_token"], jwks, settings)
    assert claims["preferred_username"] == "carol"
    assert claims["groups"] == ["globex"]  # plain names, not "/globex"
    assert claims["azp"] == kc.CLIENT_ID


def test_tampered_token_is_rejected(tokens, jwks, settings):
    header, payload, signature = tokens["carol"]["access_token"].split(".")
    forged_sig = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(Exception):
        verified_claims(".".join([header, payload, forged_sig]), jwks, settings)


def test_alice_is_org_admin_of_acme(tokens, jwks, settings):
    access = verified_claims(tokens["alice"]["access_token"], jwks, settings)
    ident = verified_claims(tokens["alice"]["id_token"], jwks, settings)
    for claims in (access, ident):
        assert claims["groups"] == ["acme"]
        assert "org-admin" in claims["roles"] and "user" in claims["roles"]
        assert "platform-admin" not in claims["roles"]


@pytest.mark.parametrize("user, groups, roles", [
    ("bob", ["acme"], {"user"}),
    ("carol", ["globex"], {"user"}),
    ("root", [], {"platform-admin", "user"}),
])
def test_each_demo_user_has_its_organization_and_roles(tokens, jwks, settings, user, groups, roles):
    ident = verified_claims(tokens[user]["id_token"], jwks, settings)
    assert ident.get("groups", []) == groups
    assert set(ident["roles"]) == roles


def test_userinfo_returns_groups_and_roles(tokens, oidc):
    response = requests.get(oidc["userinfo_endpoint"], timeout=10,
                            headers={"Authorization": f"Bearer {tokens['carol']['access_token']}"})
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["preferred_username"] == "carol"
    assert info["groups"] == ["globex"]
    assert set(info["roles"]) == {"user"}
    assert info["email"] == "carol@globex.example.org" and info["email_verified"] is True


def test_wrong_password_gets_no_token(settings, oidc):
    response = password_grant(settings, oidc, "carol", "not-carols-password")
    # RFC 6749 5.2: bad resource-owner credentials are invalid_grant; Keycloak 26 answers 400 (older: 401)
    assert response.status_code in (400, 401)
    body = response.json()
    assert body["error"] == "invalid_grant"
    assert "access_token" not in body and "id_token" not in body


def test_wrong_client_secret_is_401(settings, oidc):
    response = password_grant(settings, oidc, "carol", "carol-pass", secret=secrets.token_urlsafe(32))
    assert response.status_code == 401
    assert "access_token" not in response.json()


# --- browser flow -----------------------------------------------------------------------------------
def browser_login(oidc, username, password, redirect_uri=HUB_CALLBACK):
    """Post Keycloak's real login form like a browser; return (session, the answer to the POST, state)."""
    session = requests.Session()
    state = secrets.token_urlsafe(12)
    page = session.get(oidc["authorization_endpoint"], timeout=10, params={
        "client_id": kc.CLIENT_ID, "redirect_uri": redirect_uri, "response_type": "code",
        "scope": "openid profile email", "state": state})
    assert page.status_code == 200, page.text[:500]
    match = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text) \
        or re.search(r'<form[^>]*action="([^"]+)"[^>]*id="kc-form-login"', page.text)
    assert match, "no login form on Keycloak's page"
    # Keycloak 26 marks its login-session cookies "Secure; SameSite=None; Version=1". Browsers send Secure
    # cookies to loopback over plain HTTP; Python's cookie jar does not, so we hand them back explicitly.
    cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    answer = session.post(html.unescape(match.group(1)), timeout=10, allow_redirects=False,
                          headers={"Cookie": cookies},
                          data={"username": username, "password": password, "credentialId": ""})
    return session, answer, state


@pytest.mark.parametrize("user", ["alice", "bob", "carol", "root"])
def test_browser_login_lands_straight_on_the_hub_callback(settings, oidc, jwks, user):
    """No required action (update profile, verify email, OTP) may interrupt the first login."""
    _, answer, state = browser_login(oidc, user, f"{user}-pass")
    assert answer.status_code == 302, f"login stopped on a page instead of redirecting: {answer.text[:300]}"
    location = answer.headers["Location"]
    assert location.startswith(HUB_CALLBACK + "?")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    assert query["state"] == [state]
    # and the code is good for a token with the groups claim, as the hub will do it
    exchanged = requests.post(oidc["token_endpoint"], timeout=10, data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": HUB_CALLBACK,
        "client_id": kc.CLIENT_ID, "client_secret": kc.client_secret(settings)})
    assert exchanged.status_code == 200, exchanged.text
    claims = verified_claims(exchanged.json()["id_token"], jwks, settings)
    assert claims["preferred_username"] == user


def test_localhost_callback_is_allowed_and_foreign_one_is_not(oidc):
    _, answer, _ = browser_login(oidc, "bob", "bob-pass", redirect_uri="http://localhost:8000/hub/oauth_callback")
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("http://localhost:8000/hub/oauth_callback?")
    foreign = requests.get(oidc["authorization_endpoint"], timeout=10, allow_redirects=False, params={
        "client_id": kc.CLIENT_ID, "redirect_uri": "http://evil.example.org/hub/oauth_callback",
        "response_type": "code", "scope": "openid"})
    assert foreign.status_code == 400
    assert "Invalid parameter: redirect_uri" in foreign.text


def test_logout_redirects_back_to_the_hub_only(tokens, oidc):
    id_token = tokens["bob"]["id_token"]
    back = requests.get(oidc["end_session_endpoint"], timeout=10, allow_redirects=False, params={
        "id_token_hint": id_token, "client_id": kc.CLIENT_ID,
        "post_logout_redirect_uri": "http://localhost:8000/hub/logout-done"})
    assert back.status_code == 302
    assert back.headers["Location"].startswith("http://localhost:8000/hub/logout-done")
    foreign = requests.get(oidc["end_session_endpoint"], timeout=10, allow_redirects=False, params={
        "client_id": kc.CLIENT_ID, "post_logout_redirect_uri": "http://evil.example.org/"})
    assert foreign.status_code == 400


# --- secrets ----------------------------------------------------------------------------------------
def test_secret_files_are_private(settings):
    for name in (kc.CLIENT_SECRET_FILE, kc.ADMIN_PASSWORD_FILE):
        mode = stat.S_IMODE((settings.etc("keycloak") / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    assert len(kc.client_secret(settings)) >= 32 and len(kc.admin_password(settings)) >= 32


def test_secrets_never_reach_the_logs_or_git(keycloak, settings):
    secret, password = kc.client_secret(settings), kc.admin_password(settings)
    logs = keycloak.log_paths()
    assert logs and all(p.exists() for p in logs)
    for path in logs:
        text = path.read_text(errors="replace")
        assert secret not in text, f"client secret leaked into {path}"
        assert password not in text, f"admin password leaked into {path}"
    realm_text = kc.realm_file(settings).read_text()
    assert secret not in realm_text and "${HEROES_KC_CLIENT_SECRET}" in realm_text


def test_client_secret_in_keycloak_matches_the_file(settings):
    """The placeholder was resolved at import (or re-synchronised by configure), not stored literally."""
    admin = kc.AdminClient(settings)
    client = admin.client(kc.CLIENT_ID)
    status, body = admin.call("GET", f"/clients/{client['id']}/client-secret")
    assert status == 200
    assert json.loads(body)["value"] == kc.client_secret(settings)


def test_admin_password_logs_in_to_master(settings):
    admin = kc.AdminClient(settings)  # raises when the password is not the bootstrap admin's
    status, _ = admin.call("GET", "")
    assert status == 200


def test_chromium_login_lands_on_the_hub_callback(settings, oidc, page):
    """The same login in Debian's Chromium: Keycloak's Secure cookies and its login theme work over HTTP."""
    state = secrets.token_urlsafe(12)
    url = oidc["authorization_endpoint"] + "?" + urllib.parse.urlencode({
        "client_id": kc.CLIENT_ID, "redirect_uri": HUB_CALLBACK, "response_type": "code",
        "scope": "openid", "state": state})
    page.goto(url)
    page.fill("#username", "carol")
    page.fill("#password", "carol-pass")
    # the callback request is what we check; whether a hub answers it does not matter here
    with page.expect_request(lambda r: r.url.startswith(HUB_CALLBACK + "?"), timeout=20_000) as hit:
        page.click("#kc-login")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(hit.value.url).query)
    assert query["state"] == [state]
    assert query["code"][0]
    assert query["iss"] == [kc.issuer_url(settings)]


def test_a_user_without_profile_names_is_not_stopped_at_update_profile(settings, oidc):
    """Users the gateway creates later (admin API, no first/last name) must log in straight through too."""
    admin = kc.AdminClient(settings)
    username = f"probe-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    status, _ = admin.call("POST", "/users", {
        "username": username, "enabled": True, "email": f"{username}@example.org", "emailVerified": True,
        "credentials": [{"type": "password", "value": password, "temporary": False}]})
    assert status == 201
    try:
        _, answer, _ = browser_login(oidc, username, password)
        assert answer.status_code == 302, answer.text[:300]
        assert answer.headers["Location"].startswith(HUB_CALLBACK + "?")
    finally:
        status, body = admin.call("GET", f"/users?exact=true&username={username}")
        for user in json.loads(body):
            admin.call("DELETE", f"/users/{user['id']}")
