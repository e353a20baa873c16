"""The access middleware's no-thread path for users' credentials (``Authenticator.cached_principal``): it
answers only what the threaded path verified moments ago, never a logged-out session, never past a token's
expiry, never longer than the revocation check's own lifetime, and nothing after ``forget()``."""
from __future__ import annotations

import time

import pytest

from heroes_service.auth import BEARER_CACHE_S, Authenticator, Principal
from heroes_service.settings import ServiceSettings

BOB = Principal(username="bob", organization="acme", roles=frozenset({"user"}), user_id="u-bob")


@pytest.fixture()
def authenticator(tmp_path, monkeypatch):
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'h.db'}", state_dir=tmp_path, auth_cache_s=20)
    auth = Authenticator(settings, identity=None)
    auth.claims = {"sub": "u-bob", "sid": "s-1", "exp": time.time() + 300}
    monkeypatch.setattr(auth, "verify_jwt", lambda token: dict(auth.claims))
    monkeypatch.setattr(auth, "principal_by_id", lambda user_id, via: BOB)
    return auth


def test_only_what_the_threaded_path_verified_is_answered(authenticator):
    assert authenticator.cached_principal("Bearer jwt-1") is None          # never verified: a miss
    assert authenticator.from_keycloak_token("jwt-1") is BOB
    assert authenticator.cached_principal("Bearer jwt-1") is BOB
    assert authenticator.cached_principal("bearer  jwt-1 ") is BOB
    assert authenticator.cached_principal("Bearer jwt-2") is None          # another token: a miss
    assert authenticator.cached_principal("Basic jwt-1") is None
    assert authenticator.cached_principal(None) is None
    assert authenticator.cached_principal("Bearer ") is None


def test_a_hub_token_is_answered_from_the_two_caches_the_threaded_path_fills(authenticator):
    assert authenticator.cached_principal("token hub-1") is None
    authenticator.tokens.put("hub-1", "bob")
    assert authenticator.cached_principal("token hub-1") is None            # owner known, principal not yet
    authenticator.principals.put(("name", "bob", "hub"), BOB)
    assert authenticator.cached_principal("token hub-1") is BOB


def test_a_session_logged_out_here_is_refused_at_once(authenticator):
    authenticator.from_keycloak_token("jwt-1")
    authenticator.principals.put(("revoked", "s-1"), True, ttl=3600)      # what the logout route records
    assert authenticator.cached_principal("Bearer jwt-1") is None


def test_never_past_the_tokens_expiry_nor_the_revocation_checks_lifetime(authenticator):
    authenticator.claims["exp"] = time.time() + 0.3
    authenticator.from_keycloak_token("short")
    assert authenticator.cached_principal("Bearer short") is BOB
    time.sleep(0.4)
    assert authenticator.cached_principal("Bearer short") is None
    authenticator.claims["exp"] = time.time() - 1                           # (a leeway the verifier allowed)
    authenticator.from_keycloak_token("late")
    assert authenticator.cached_principal("Bearer late") is None
    assert BEARER_CACHE_S <= 2.0
    authenticator.claims["exp"] = time.time() + 300
    authenticator.from_keycloak_token("long")
    entry_deadline = authenticator.principals._data[("bearer", "long")][0]
    assert entry_deadline - time.monotonic() <= BEARER_CACHE_S


def test_forget_drops_every_answer(authenticator):
    authenticator.identity = type("Identity", (), {"forget_reads": lambda self: None})()
    authenticator.from_keycloak_token("jwt-1")
    authenticator.forget()
    assert authenticator.cached_principal("Bearer jwt-1") is None
