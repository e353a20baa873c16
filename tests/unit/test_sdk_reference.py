"""The SDK's API reference in docs/sdk/api is what its docstrings say today (regenerated with pdoc and
compared byte for byte); a stale reference names the command that fixes it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_reference_matches_the_docstrings():
    check = subprocess.run([sys.executable, str(ROOT / "sdk" / "make_reference.py"), "--check"],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr


def test_the_reference_documents_the_public_surface():
    page = (ROOT / "docs" / "sdk" / "api" / "heroes_sdk.html").read_text()
    import heroes_sdk

    for name in heroes_sdk.__all__:
        assert f'id="{name}"' in page, name
    for method in ("Client.submit", "Client.decide", "Instance.wait", "Instance.read_csv", "Instance.plot_energy",
                   "DataSpace.upload"):
        assert f'id="{method}"' in page, method
    cli_page = (ROOT / "docs" / "sdk" / "api" / "heroes_sdk" / "cli.html").read_text()
    assert "Exit codes" in cli_page and "not logged in" in cli_page
