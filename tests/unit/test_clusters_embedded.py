"""The service knows the embedded stack only through the descriptor files the stack writes (no import of it).

Production code under ``extensions/`` never imports ``heroes_dev``: the dev stack writes one
``<cluster>.json`` per login node into the state dir and the service reads it. These tests walk the AST of
every module to hold that line, and check the file round trip: what ``heroes_dev`` writes is what the service
reads, and a changed principals file is seen at once (the cache follows file mtimes, not a timer).
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from heroes_service.clusters import config, embedded

EXTENSIONS = Path(__file__).resolve().parents[2] / "extensions"


def _dev_stack_imports(path: Path, root: Path = EXTENSIONS) -> list[str]:
    """``import heroes_dev...``, ``from heroes_dev... import`` and ``import_module("heroes_dev...")`` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if callee in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{path.relative_to(root)}:{node.lineno} {name}" for name in names
                  if name == "heroes_dev" or name.startswith("heroes_dev.")]
    return found


def test_no_module_under_extensions_imports_the_dev_stack():
    files = sorted(EXTENSIONS.rglob("*.py"))
    assert len(files) > 50  # the walk really saw the service, the hub config and the widgets
    offenders = [hit for path in files for hit in _dev_stack_imports(path)]
    assert offenders == [], offenders


def test_the_walk_finds_each_kind_of_dev_stack_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import heroes_dev\nfrom heroes_dev.components.login import CLUSTERS\n"
                   "def f():\n    import importlib\n    importlib.import_module('heroes_dev.settings')\n"
                   "import heroes_devtools\nfrom . import heroes_dev_like\n")
    assert sorted(hit.split()[1] for hit in _dev_stack_imports(bad, tmp_path)) == [
        "heroes_dev", "heroes_dev.components.login", "heroes_dev.settings"]


@pytest.fixture
def stack(tmp_path, monkeypatch):
    """A dev-stack state dir under tmp_path whose descriptors the service reads (its settings follow it)."""
    from heroes_dev.settings import StackSettings

    monkeypatch.setenv("HEROES_SERVICE_CLUSTERS_EMBEDDED_LOGIN_NODES_DIR", str(tmp_path / "etc" / "embedded-login-nodes"))
    config.get_clusters_settings.cache_clear()
    embedded.forget_published()
    yield StackSettings(state=tmp_path)
    config.get_clusters_settings.cache_clear()
    embedded.forget_published()


def _principals(stack, cluster: str, mapping: dict[str, tuple[str, ...]]) -> None:
    from heroes_dev.components.login import principals_dir, trusted_ca_path

    folder = principals_dir(stack, cluster)
    folder.mkdir(parents=True, exist_ok=True)
    for account, principals in mapping.items():
        (folder / account).write_text("".join(p + "\n" for p in principals))
    trusted_ca_path(stack, cluster).touch()


def test_what_the_stack_describes_is_what_the_service_reads(stack):
    from heroes_dev.components.login import ssh_port, trusted_ca_path, write_descriptor

    assert embedded.login_nodes() == {} and embedded.published_logins("127.0.0.1", 2221) is None  # a real site
    _principals(stack, "alpha", {"bob": ("bob@acme",), "heroes": ("heroes:service",)})
    write_descriptor(stack, "alpha")
    port = ssh_port(stack, "alpha")
    assert embedded.published_logins("127.0.0.1", port) == {"bob@acme": "bob", "heroes:service": "heroes"}
    assert embedded.published_logins("localhost", port) == {"bob@acme": "bob", "heroes:service": "heroes"}
    assert embedded.published_logins("10.0.0.1", port) is None
    assert embedded.published_accounts() == {"bob"}  # the service account is no user's login
    assert embedded.embedded_login_nodes()[("127.0.0.1", port)] == trusted_ca_path(stack, "alpha")
    assert embedded.published_login_anywhere("bob@acme") == "bob"


def test_a_changed_mapping_is_seen_at_once_and_reads_are_cached(stack, monkeypatch):
    from heroes_dev.components.login import principals_dir, ssh_port, write_descriptor

    _principals(stack, "alpha", {"bob": ("bob@acme",)})
    write_descriptor(stack, "alpha")
    assert embedded.published_accounts() == {"bob"}
    reads = []
    real_read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self) or real_read_text(self, *a, **k))
    for _ in range(20):
        assert embedded.published_accounts() == {"bob"}
    assert reads == []  # nothing changed: no file was read again
    listed = principals_dir(stack, "alpha") / "bob"
    listed.write_text("bob@acme\nrobert@acme\n")  # no forget_published(): the mtime/size tell
    assert embedded.published_logins("127.0.0.1", ssh_port(stack, "alpha"))["robert@acme"] == "bob"
    (principals_dir(stack, "alpha") / "carol").write_text("carol@globex\n")
    assert embedded.published_accounts() == {"bob", "carol"}
    os.unlink(principals_dir(stack, "alpha") / "carol")
    assert embedded.published_accounts() == {"bob"}


def test_a_broken_descriptor_is_ignored(stack):
    folder = stack.etc("embedded-login-nodes")
    folder.mkdir(parents=True)
    (folder / "alpha.json").write_text("{not json")
    assert embedded.login_nodes() == {} and embedded.published_accounts() == set()
