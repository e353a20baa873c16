"""Shared fixtures. Integration and browser tests run against the embedded stack of real services.

They never skip when the stack is missing: ``heroes dev test`` (``make test``) starts it first, and a test
run by hand against a stopped stack fails with the command that fixes it.
"""
from __future__ import annotations

import pytest

from heroes_dev import settings as settings_module
from heroes_dev.components import all_components


@pytest.fixture(scope="session")
def stack_settings():
    return settings_module.load()


@pytest.fixture(scope="session")
def stack_components(stack_settings):
    return {c.name: c for c in all_components(stack_settings)}


@pytest.fixture(scope="session")
def require(stack_components):
    """``require("keycloak")`` fails the test unless that component is up and healthy."""

    def _require(name: str):
        component = stack_components.get(name)
        assert component is not None, f"no component named {name!r}"
        health = component.health()
        assert health.ok, f"{name} is not healthy ({health.detail}); start it with: heroes dev up {name}"
        return component

    return _require
