"""How the app's long-lived workers are built and bound (called from ``app.py``, the composition root).

* ``bind_clusters``: the clusters library acts for THIS app (its Keycloak client resolves cluster logins,
  its state dir holds the cluster secrets). Tests run several apps in one process, so routes that reach a
  cluster bind again before they do.
* ``build_workers``: the one reconciler (one thread per cluster with live work of any kind), cluster jobs
  (servers, kernels), desktops (``visualization.tracker``) and the workflow engine on top of it; energy
  ingestion is handed to the engine and the desktops' tracker here, so ``workflows`` does not import ``energy``
  (which reads workflow tables).
* ``start_workers`` / ``stop_workers``: from the app's lifespan.
"""
from __future__ import annotations

import logging

from .clusterjobs.reconciler import Reconciler
from .clusterjobs.service import ClusterJobs
from .clusters import identity as cluster_identity
from .clusters import logins
from .clusters import usage as cluster_usage
from .clusters.config import bind_state_dir
from .workflows.config import get_workflow_settings
from .visualization.tracker import DesktopTracker, Viewers
from .workflows.engine import WorkflowEngine
from .workflows.staging import Staging

log = logging.getLogger("heroes_service")


def bind_clusters(app) -> None:
    """Cluster logins through the app's Keycloak client; cluster secrets below the app's state dir."""
    logins.bind(app.state.identity)
    settings = getattr(app.state, "settings", None)
    if settings is not None and bind_state_dir(settings.state_dir):
        cluster_identity.forget_secrets()


def data_service(app):
    """The app's data domain (built once, on first use: it needs S3 settings only then)."""
    service = getattr(app.state, "data", None)
    if service is None:
        from . import data as data_pkg

        service = data_pkg.build(app.state.settings)
        app.state.data = service
    return service


def build_workers(app) -> None:
    from .clusterjobs import models as cluster_job_models
    from .energy.ingest import MAX_FILES, ingest_for_owner

    bind_clusters(app)
    workflow_settings = get_workflow_settings()
    reconciler = Reconciler(app.state.sessions, interval_s=workflow_settings.interval_s)
    app.state.reconciler = reconciler
    app.state.cluster_jobs = ClusterJobs(app.state.sessions, reconciler)
    # desktops ride the same squeue; the bridges count viewers for the tracker's idle cull
    app.state.desktop_viewers = Viewers()
    reconciler.register(DesktopTracker(
        app.state.sessions, app.state.desktop_viewers, reconciler, energy_sink=ingest_for_owner,
        energy_read_s=app.state.settings.visualization_energy_read_s,
        energy_max_bytes=workflow_settings.energy_max_file_bytes))
    engine = WorkflowEngine(app.state.sessions, workflow_settings, lambda: Staging(data_service(app)),
                            app.state.settings.state_dir, reconciler)
    engine.energy_sink, engine.energy_max_files = ingest_for_owner, MAX_FILES
    app.state.workflows = engine
    cluster_usage.register(cluster_job_models.work_on_cluster)


def start_workers(app) -> None:
    if get_workflow_settings().reconciler:
        app.state.reconciler.start()


def stop_workers(app) -> None:
    app.state.reconciler.stop()
    app.state.workflows.stop()
    app.state.cluster_jobs.close()
