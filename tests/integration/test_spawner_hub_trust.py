"""The hub holds no database URL of the service and no cluster credential: the service is the only trusted
component (docs/architecture.md). Checked on the RUNNING hub process and on the code it loads:

* its environment names no database URL and carries no key material;
* it has no file of the service open: not the database (``heroes.db``) and nothing below the secrets directory
  (the user CA's encrypted key, the at-rest key);
* the hub-side code (config, spawner, kernel API, S3 hook), imported the way the hub imports it, loads none
  of the service's store, settings or cluster-credential modules;
* and still, the hub runs cluster servers and kernels: test_spawner_hub.py / test_spawner_kernels.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
#: service modules that reach its database, its settings (database URL) or cluster credentials
FORBIDDEN = ("heroes_service.store", "heroes_service.settings", "heroes_service.clusters.identity",
             "heroes_service.clusters.certs", "heroes_service.clusters.vault", "heroes_service.clusters.connector",
             "heroes_service.clusters.models", "heroes_service.clusterjobs.service")


@pytest.fixture(scope="module")
def hub_pid(require, stack_settings) -> int:
    require("jupyterhub")
    records = json.loads((stack_settings.state / "run" / "jupyterhub.json").read_text())
    return next(r["pid"] for r in records if r["name"] == "jupyterhub")


def test_the_hub_environment_has_no_database_url_and_no_key(hub_pid):
    env = dict(item.split("=", 1) for item in
               Path(f"/proc/{hub_pid}/environ").read_bytes().decode(errors="replace").split("\0") if "=" in item)
    assert env, "the hub's environment could not be read"
    assert not [k for k in env if "DATABASE" in k.upper() or k.upper().endswith("_DB_URL")], sorted(env)
    assert not [k for k, v in env.items() if "postgresql" in v or "heroes.db" in v or "PRIVATE KEY" in v]
    assert "HEROES_SERVICE_CLUSTERS_SECRETS_DIR" not in env


def test_the_hub_has_no_file_of_the_service_open(hub_pid, stack_settings):
    service_data = (stack_settings.state / "data" / "heroes-service").resolve()
    opened = []
    for fd in Path(f"/proc/{hub_pid}/fd").iterdir():
        try:
            opened.append(os.readlink(fd))
        except OSError:
            continue
    assert opened, "the hub's open files could not be read"
    assert not [p for p in opened if p.startswith(str(service_data))], opened


def test_the_hub_side_code_loads_no_store_settings_or_credentials():
    probe = f"""
import sys
sys.path[:0] = [{str(ROOT / 'hub_config')!r}]
import heroes_spawner.api, heroes_spawner.spawner, heroes_spawner.kernels_api, heroes_kernels.provisioner
import heroes_data
loaded = sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r}))
print(",".join(loaded))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"the hub loads {out.stdout.strip()}"
