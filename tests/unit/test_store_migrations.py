"""The migrations form one line: migrations written in parallel must be joined, so the next one has one parent
and a database is never left on a branch the code does not know."""
from __future__ import annotations

import os

from alembic.config import Config
from alembic.script import ScriptDirectory

import heroes_service.store as store


def test_the_migrations_have_one_head():
    config = Config()
    config.set_main_option("script_location", os.path.join(os.path.dirname(store.__file__), "migrations"))
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, f"several heads, join them with a merge migration: {heads}"
