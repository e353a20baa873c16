"""Regenerate the SDK's API reference (``docs/sdk/api/``) from its docstrings with pdoc.

    .venv/bin/python sdk/make_reference.py            # rewrite docs/sdk/api/
    .venv/bin/python sdk/make_reference.py --check    # exit 1 when the committed reference is stale

The reference covers the public surface only: the package (its ``__all__``), the command line (exit codes),
credentials, progress and errors. tests/unit/test_sdk_reference.py runs ``--check``'s comparison.
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "sdk" / "api"
#: the modules documented; the others (display, cli_commands, instance, models, ...) are reached through the
#: package's ``__all__`` or are internals
MODULES = ("heroes_sdk", "heroes_sdk.cli", "heroes_sdk.credentials", "heroes_sdk.errors", "heroes_sdk.progress",
           "heroes_sdk.session")


def render(out_dir: Path) -> None:
    """Write the HTML reference into ``out_dir`` (deterministic for one pdoc version: no search index,
    no source, no timestamps)."""
    import pdoc
    import pdoc.render

    import heroes_sdk

    pdoc.render.configure(docformat="restructuredtext", show_source=False, search=False,
                          footer_text=f"heroes_sdk {heroes_sdk.__version__}")
    excluded = [f"!heroes_sdk.{p.stem}" for p in Path(heroes_sdk.__file__).parent.glob("*.py")
                if p.stem != "__init__" and f"heroes_sdk.{p.stem}" not in MODULES]
    pdoc.pdoc(*MODULES, *excluded, output_directory=out_dir)


def differences(expected: Path, actual: Path) -> list[str]:
    """Files that differ, are missing or are extra between two reference folders."""
    found: list[str] = []

    def walk(cmp: filecmp.dircmp, prefix: str) -> None:
        found.extend(prefix + n for n in cmp.left_only + cmp.right_only + cmp.diff_files + cmp.funny_files)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(expected, actual), "")
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with docs/sdk/api instead of writing it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "api"
        render(fresh)
        if args.check:
            stale = differences(TARGET, fresh) if TARGET.exists() else ["docs/sdk/api (missing)"]
            if stale:
                print("the SDK reference is stale: " + ", ".join(stale[:10])
                      + "\nregenerate it: .venv/bin/python sdk/make_reference.py", file=sys.stderr)
                return 1
            return 0
        shutil.rmtree(TARGET, ignore_errors=True)
        shutil.copytree(fresh, TARGET)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
