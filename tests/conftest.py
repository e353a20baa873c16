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
    """The embedded stack's settings; the in-process service finds the stack's login nodes through the
    descriptor files the stack writes (it never imports ``heroes_dev``), wherever the tests' state dir is."""
    import os

    from heroes_dev.components.login import descriptors_dir
    from heroes_service.clusters.config import get_clusters_settings

    settings = settings_module.load()
    os.environ.setdefault("HEROES_SERVICE_CLUSTERS_EMBEDDED_LOGIN_NODES_DIR", str(descriptors_dir(settings)))
    get_clusters_settings.cache_clear()
    return settings


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


# --- the browser: one Playwright driver per test module, shared by integration and e2e tests ---------------
# Two sync Playwright drivers in one process collide ("Sync API inside the asyncio loop"), so every test
# that needs Chromium takes these fixtures. Module scope, not session: a live sync driver keeps an event loop
# running in the main thread, which would break later modules' asyncio.run(). Never ``playwright install``:
# Debian's Chromium is used.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser):
    """A fresh, isolated browser profile (cookies, storage) for one test."""
    ctx = browser.new_context()
    ctx.set_default_timeout(30_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    return context.new_page()


# --- reruns, with why: a test that needed its one rerun is a flake to fix, so its first failure is shown ------
_RERUNS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.outcome == "rerun":
        lines = [line for line in (report.longreprtext or "").splitlines() if line.startswith("E ")]
        _RERUNS.append((report.nodeid, " | ".join(line[2:].strip() for line in lines[:6])[:1500]))


def pytest_terminal_summary(terminalreporter):
    if _RERUNS:
        terminalreporter.section(f"{len(_RERUNS)} rerun(s): the first attempt's failure")
        for nodeid, why in _RERUNS:
            terminalreporter.line(f"{nodeid}: {why or '(no assertion text; see the log above)'}")
