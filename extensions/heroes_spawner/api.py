"""The port report-back endpoint ``POST /hub/api/batchspawner``, strict.

batchspawner's own handler (registered when ``batchspawner`` is imported) sets EVERY JSON key the
caller sends as an attribute of the spawner: a user holding their server's token could set ``job_id``,
``ip`` or ``cmd``. This module replaces it at the same path with one that accepts only ``{"port": N}``,
only from the token of a batch spawner of the calling user, and only a port in 1024..65535.
Import it from jupyterhub_config.py (the hub builds its handlers from ``default_handlers`` at start).
"""
from __future__ import annotations

import json

import batchspawner.api as _batch_api  # noqa: F401 - registers batchspawner's handler first, removed below
from batchspawner import BatchSpawnerBase
from jupyterhub.apihandlers import APIHandler, default_handlers
from tornado import web

PATH = r"/api/batchspawner"


def valid_port(value) -> int:
    """A TCP port a single-user server may report (an int, not a bool, unprivileged)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value <= 65535:
        raise ValueError("port must be an integer in 1024..65535")
    return value


class PortReportHandler(APIHandler):
    """The job on the node tells the hub which port its server listens on."""

    @web.authenticated
    def post(self):
        token = self.get_auth_token()
        spawner = next((s for s in self.current_user.spawners.values()
                        if isinstance(s, BatchSpawnerBase) and s.api_token and s.api_token == token), None)
        if spawner is None:
            raise web.HTTPError(403, "this token belongs to no batch server of yours")
        body = self.get_json_body() or {}
        if set(body) != {"port"}:
            raise web.HTTPError(400, "send exactly {\"port\": N}")
        try:
            spawner.port = valid_port(body["port"])
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from None
        self.set_status(201)
        self.finish(json.dumps({"message": "port recorded"}))


default_handlers[:] = [h for h in default_handlers if h[0] != PATH]
default_handlers.append((PATH, PortReportHandler))

from . import kernels_api  # noqa: E402,F401 - /hub/api/heroes/kernels (remote kernels), same registration rule
