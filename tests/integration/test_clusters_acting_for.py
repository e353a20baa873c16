"""A fresh service process acts for a job's owner by the principal the row names, not by what it remembers.

After a restart on a real site the service knows nothing of who acts as which account: nothing was resolved
in this process and no login node publishes its principals files to it. The workflow engine and the cluster
jobs then act for a row's owner (an instance's ``username``/``organization``) by naming that owner's gateway
principal in the certificate (``owner_connector(..., acting_for=owner_principal(row))``); the login node
(real sshd, ``AuthorizedPrincipalsFile``) has the last word. The child process below is such a fresh process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster_testing import isolated_secrets, trust_ca

pytestmark = pytest.mark.integration

CHILD = r"""
import json
from heroes_dev import settings
from heroes_service.clusterjobs.submit import owner_connector, owner_principal
from heroes_service.clusters import embedded, logins
from heroes_service.clusters.errors import AuthenticationFailed, NoClusterAccess
from heroes_service.workflows.models import WorkflowInstance
from cluster_testing import embedded_cluster

alpha = embedded_cluster(settings.load(), "alpha")
out = {"published": embedded.published_logins(alpha.host, alpha.port), "resolved": len(logins._RESOLVED)}
instance = WorkflowInstance(username="bob", organization="acme", cluster_login="bob")

def attempt(acting_for):
    try:
        return owner_connector(alpha, instance.cluster_login, acting_for).run(["id", "-un"], timeout=60).stdout.strip()
    except (NoClusterAccess, AuthenticationFailed) as exc:
        return type(exc).__name__

out["guessed"] = attempt(None)
out["explicit"] = attempt(owner_principal(instance))
out["foreign"] = attempt("carol@globex")
print(json.dumps(out))
"""


def test_a_fresh_process_acts_for_an_instances_owner_by_the_explicit_principal(stack_settings, require, tmp_path):
    for name in ("slurm-alpha", "login-alpha"):
        require(name)
    with isolated_secrets() as secrets_dir:
        trust_ca(stack_settings)  # what enrollment did before the restart
        env = {**os.environ,
               "HEROES_SERVICE_CLUSTERS_SECRETS_DIR": str(secrets_dir),
               # a real site: no login node tells the gateway its principals files ...
               "HEROES_SERVICE_CLUSTERS_EMBEDDED_LOGIN_NODES_DIR": str(tmp_path / "no-embedded-nodes"),
               # ... and the gateway host shares the clusters' user directory (alpha's accounts live here)
               "HEROES_SERVICE_CLUSTERS_REFUSE_GATEWAY_HOST_ACCOUNTS": "false",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
        child = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=180)
    assert child.returncode == 0, child.stderr[-2000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["published"] is None and out["resolved"] == 0, out  # the process knows nothing beforehand
    assert out["guessed"] == "NoClusterAccess", out  # what the callers did before: a guess that fails here
    assert out["explicit"] == "bob", out  # the row's owner, named in the certificate, lands in bob's account
    assert out["foreign"] == "AuthenticationFailed", out  # bob's principals file does not list carol@globex
