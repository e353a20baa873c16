"""Cluster jobs: the ONE way anything of the gateway runs on a cluster.

Every Slurm job the service runs for someone - a workflow step, a cluster JupyterLab server, a remote
kernel, a desktop session - goes through this package:

* **one renderer** (``script.py``): ``#SBATCH`` options and quoted ``export`` lines are written only here;
* **one submit path** (``submit.py``, ``sbatch_once``): the intent (state SUBMITTING + a job name unique to
  the job, ``heroes.<kind>.<id>``) is committed BEFORE ``sbatch`` reads the script; a job whose sbatch may have
  run is looked up by that name and adopted, never submitted twice. Every sbatch goes through the submitter
  (``submitter.py``): sbatch is started on the login node first - usually taken ready from a spare
  (``clusters/warm.py``) - and gets its script only after the intent's commit, so the login node's start of
  sbatch overlaps the service's own work;
* **one reconciler per cluster** (``reconciler.py``): ONE ``squeue`` per cycle for every live job of every
  kind on that cluster (as the gateway's service account, a Slurm operator), plus at most one ``sacct``
  for the jobs that left the queue; each kind's tracker gets its rows;
* **one cancel** (``submit.scancel``, as the job's owner) and **one ledger writer** (``ledger.py``): every
  job that ends becomes a ``cluster_jobs`` row with the allocated TRES, elapsed time, energy, cost and the
  prediction made at submit - usage reports, budgets and the marketplace read that table.

The hub never reaches a cluster itself: the spawner and the kernel provisioner call ``api/cluster_jobs.py``
(the hub's own service token, acting for one user; users get no such route); the Desktop app calls the
service's desktop routes (``api/visualization.py``), which submit through this package's path.

How a new kind plugs in (e.g. a batch viewer)::

    from heroes_service.clusterjobs import JobKind, Rendered, register_kind
    from heroes_service.clusterjobs.script import render_script

    class ViewerKind(JobKind):
        name = "viewer"                       # [a-z][a-z0-9-]*, part of the Slurm job name

        def validate(self, params: dict) -> dict:       # the kind's own parameters: check, return clean ones
            ...                                          # raise JobSpecError(...) -> 422
        def render(self, job: JobContext) -> Rendered:   # the batch script (render_script quotes everything)
            return Rendered(render_script(job.sbatch_options(), env={...}, exec_argv=[...]))
        def public_params(self, params: dict) -> dict:   # what may be stored and shown (no secrets)
            ...
        def on_running(self, job, service) -> dict:      # optional: extra answer once RUNNING (ports, tunnels)
            ...
        def on_end(self, job, service) -> None:          # optional: clean up (files, tunnels)

    register_kind(ViewerKind())

then ``ClusterJobs.submit(principal, "viewer", cluster, resources, params)`` renders, records the intent,
submits once and returns the row; the reconciler tracks it, ``state`` reads it (no Slurm call), ``cancel``
ends it and the ledger gets it. Kinds with their own tables (workflow steps, desktops) commit their intent,
call ``sbatch_once`` / ``find_by_name`` and register a ``Tracker`` (``Reconciler.register``: the engine's,
``visualization.tracker.DesktopTracker``) instead, so their jobs still ride the same ``squeue``; their ledger
rows are written by ``ledger.record_step`` / ``ledger.record_desktop``.
"""
from __future__ import annotations

from . import jupyterlab, kernel  # noqa: F401,E402 - the built-in kinds register themselves
from .kinds import JobContext, JobKind, JobSpecError, Rendered, get_kind, kinds, register_kind
from .script import Resources, ScriptError, render_script

__all__ = ["JobKind", "JobContext", "JobSpecError", "Rendered", "register_kind", "get_kind", "kinds", "Resources",
           "ScriptError", "render_script"]
