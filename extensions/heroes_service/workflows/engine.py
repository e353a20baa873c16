"""The workflow engine inside the service: one object per app (``app.state.workflows``), in rooms:

* ``driver.py``   - NEW -> STAGING_IN -> SUBMITTING -> QUEUED (intent before sbatch, adopt by name), with
  ``actions.py`` (what a drive knows and does between its transactions) and ``recorded.py`` (a submission's
  last job id recorded from memory);
* ``cancel.py``   - cancel and fail;
* ``tracking.py`` - the engine's tracker in the one reconciler per cluster (``clusterjobs.reconciler``:
  one ``squeue`` per cycle for workflow steps, servers, kernels and desktops alike);
* ``finishing.py`` - staging out, peak memory, energy ingestion;
* ``cluster_files.py`` - the instance's folders and energy collector (one command), SFTP helpers.

State lives in the database only; threads hold nothing that a restart would lose. All cluster and S3 I/O is
blocking and runs in threads (the driver pool, the reconciler's threads); the asyncio loop only starts and
stops them, from the app's lifespan (``app.py``).
"""
from __future__ import annotations

import posixpath
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from sqlalchemy.orm import Session, sessionmaker

from ..clusterjobs.reconciler import CycleStats, Reconciler
from ..clusterjobs.submit import owner_connector
from ..clusters.models import Cluster
from . import models as m
from .cancel import CancelMixin
from .cluster_files import collector_zipapp, fetch_energy_files, read_tail
from .config import WorkflowSettings
from .actions import find_job
from .driver import DriverMixin
from .finishing import FinishMixin
from .render import Context
from .staging import Staging
from .templates import Template
from .tracking import WorkflowTracker


class WorkflowEngine(DriverMixin, CancelMixin, FinishMixin):
    """One per app. ``reconciler``: the app's one reconciler (a private one when None, e.g. in benchmarks)."""

    def __init__(self, sessions: sessionmaker[Session], settings: WorkflowSettings, staging_factory: Callable[[], Staging],
                 state_dir: Path | str, reconciler: Reconciler | None = None):
        self.sessions = sessions
        self.settings = settings
        self._staging_factory = staging_factory
        self._staging: Staging | None = None
        self.state_dir = Path(state_dir)
        self.pool = ThreadPoolExecutor(max_workers=settings.drivers, thread_name_prefix="wf-driver")
        self._owned: set[str] = set()
        self._lock = threading.Lock()
        self._drives: dict = {}                 # instance id -> the future of its drive under way
        self._drive_lock = threading.Lock()
        self._retry_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self.reconciler = reconciler or Reconciler(sessions, interval_s=settings.interval_s)
        self.tracker = WorkflowTracker(self)
        self.reconciler.register(self.tracker)

    @property
    def staging(self) -> Staging:
        if self._staging is None:
            self._staging = self._staging_factory()
        return self._staging

    @property
    def last_cycles(self) -> dict[str, CycleStats]:
        return self.reconciler.last_cycles

    def reconcile(self, cluster_id: str) -> CycleStats | None:
        """One cycle of the cluster's reconciler (every kind of job on it); None when nothing is live there."""
        return self.reconciler.cycle(cluster_id)

    def stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- ownership: one thread works on an instance at a time ---------------------------------------
    def _claim(self, instance_id: str) -> bool:
        with self._lock:
            if instance_id in self._owned:
                return False
            self._owned.add(instance_id)
            return True

    def _release(self, instance_id: str) -> None:
        with self._lock:
            self._owned.discard(instance_id)

    def owned(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id in self._owned

    # --- helpers -------------------------------------------------------------------------------------
    def image_path(self, cluster: Cluster, runtime: str, image: str) -> str:
        base = self.settings.image_dirs.get(cluster.name) or self.settings.image_dir or \
            str(self.state_dir / "data" / "image")
        if runtime == "apptainer":
            return posixpath.join(base, f"{image}.sif")
        return posixpath.join(base, image)

    def context(self, session: Session, inst: m.WorkflowInstance, cluster: Cluster,
                template: Template | None = None) -> tuple[Context, Template]:
        """The instance's render context; ``template``: its template when the caller has it parsed already."""
        if template is None:
            template = Template.model_validate(session.get(m.WorkflowTemplate, inst.template_id).spec)
        runtime = template.container.runtime
        if runtime == "cluster":
            runtime = cluster.container_runtime
        ctx = Context(
            instance_id=inst.id, template_id=inst.template_id, template=template, values=dict(inst.parameters),
            workdir=inst.work_dir, user_id=inst.user_id, username=inst.username, organization=inst.organization,
            organization_id=inst.organization_id, runtime=runtime,
            image_path=self.image_path(cluster, runtime, template.container.image) if runtime != "none" else "",
            default_partition=cluster.default_partition, energy_command=tuple(self.settings.energy_command),
            step_options={s.name: list(s.options or []) for s in inst.steps})
        return ctx, template


__all__ = ["WorkflowEngine", "CycleStats", "owner_connector", "find_job", "read_tail", "collector_zipapp",
           "fetch_energy_files"]
