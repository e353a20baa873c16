"""The access middleware's no-thread path for the hub's service token: answers only from the cache, with the
same verdicts as the threaded path (``Authenticator.hub_service_caller``)."""
from __future__ import annotations

import pytest

from heroes_service.auth import Authenticator
from heroes_service.errors import Forbidden
from heroes_service.settings import ServiceSettings


@pytest.fixture()
def authenticator(tmp_path):
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'h.db'}", state_dir=tmp_path, auth_cache_s=0.2)
    return Authenticator(settings, identity=None)


def test_a_miss_goes_to_the_hub_and_other_credentials_are_never_answered_from_the_cache(authenticator):
    assert authenticator.cached_hub_service_caller("token never-seen") is None
    assert authenticator.cached_hub_service_caller("Bearer abc") is None
    assert authenticator.cached_hub_service_caller(None) is None
    assert authenticator.cached_hub_service_caller("token ") is None


def test_a_cached_hub_service_passes_and_another_service_gets_403(authenticator):
    wanted = authenticator.settings.server_keys_service
    authenticator.tokens.put(("service", "hub-token"), wanted)
    authenticator.tokens.put(("service", "other-token"), "some-other-service")
    authenticator.tokens.put(("service", "user-token"), "")
    assert authenticator.cached_hub_service_caller("token hub-token") == wanted
    with pytest.raises(Forbidden):
        authenticator.cached_hub_service_caller("token other-token")
    with pytest.raises(Forbidden):
        authenticator.cached_hub_service_caller("token user-token")


def test_an_expired_entry_is_a_miss_so_a_revoked_token_is_asked_about_again(authenticator):
    import time

    authenticator.tokens.put(("service", "hub-token"), authenticator.settings.server_keys_service)
    time.sleep(0.25)
    assert authenticator.cached_hub_service_caller("token hub-token") is None
