"""After the steps: stage the outputs back (globs) to the user's bucket, then what the steps used (peak memory
from the accounting, energy from the collector's files), recorded for the history and right-sizing.

Energy is a by-product: a missing or refused file never fails the workflow. The ingestion itself belongs to
the energy capability; the app hands it in as ``energy_sink`` (so workflows does not import energy, which
imports workflows' tables).
"""
from __future__ import annotations

import logging
from typing import Callable

from ..clusterjobs.submit import owner_connector, owner_principal
from ..clusters.connector import ClusterConnector
from ..clusters.errors import ClusterError
from ..clusters.identity import service_connector
from ..clusters.models import Cluster, cluster_by_id
from ..clusters.slurm import SlurmClient
from ..errors import ApiError
from . import models as m
from .cluster_files import fetch_energy_files
from .actions import is_transient
from .render import energy_dir
from .staging import api_error_text
from .templates import Template, outputs_match

log = logging.getLogger("heroes_service.workflows")

#: ``fn(session, organization=, username=, files=, cluster=, instance_id=) -> {"stored", "samples_stored",
#: "duplicates"}``; ``max_files``: the most files one ingestion takes (set by the app from the energy capability)
EnergySink = Callable[..., dict]


class FinishMixin:
    """Staging out and usage records for ``WorkflowEngine`` (``energy_sink`` / ``energy_max_files`` set by the app)."""

    energy_sink: EnergySink | None = None
    energy_max_files: int = 100

    # --- staging out -----------------------------------------------------------------------------------
    def finish(self, instance_id: str) -> None:
        """Copy outputs (globs) and logs to the user's bucket, then COMPLETED. Re-run safely after a crash."""
        if not self._claim(instance_id):
            return
        try:
            self._finish(instance_id)
        except Exception as exc:  # noqa: BLE001
            if is_transient(exc) or isinstance(exc, ApiError) and exc.status == 503:
                log.warning("workflow %s: staging out failed, retried next cycle: %s", instance_id, exc)
            else:
                with self.sessions() as session:
                    inst = session.get(m.WorkflowInstance, instance_id)
                    if inst is not None and inst.state == m.STAGING_OUT:
                        self._fail_instance(session, inst, f"staging out failed: {api_error_text(exc)}")
                        session.commit()
        finally:
            self._release(instance_id)

    def _finish(self, instance_id: str) -> None:
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            if inst is None or inst.state != m.STAGING_OUT:
                return
            cluster = cluster_by_id(session, None, inst.cluster_id)
            session.expunge(cluster)
            template = Template.model_validate(session.get(m.WorkflowTemplate, inst.template_id).spec)
            work_dir, login, bucket, prefix = inst.work_dir, inst.cluster_login, inst.output_bucket, inst.output_prefix
            org, owner = inst.organization, owner_principal(inst)
        conn = owner_connector(cluster, login, owner)
        entries = self.staging.walk(conn, work_dir)
        chosen = [e for e in entries if outputs_match(template.outputs, e.path) or e.path.startswith("logs/")]
        room = self.staging.room(org)
        total = sum(e.size for e in chosen)
        if room is not None and total > room:
            raise ApiError(f"the outputs ({total} bytes) do not fit in the organization's quota ({room} left)",
                           status=413)
        stored = []
        for entry in chosen:
            key = f"{prefix}{entry.path}"
            self.staging.stage_out(conn, f"{work_dir}/{entry.path}", bucket, key)
            stored.append({"key": key, "size": entry.size})
        if self.settings.energy_command:
            for step in template.steps:
                if step.energy:
                    self._ingest_step_energy(instance_id, conn, cluster.name, work_dir, step.name)
        self._record_peak_memory(instance_id, cluster)
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            inst.outputs = stored
            inst.exit_code = 0
            m.set_instance_state(session, inst, m.COMPLETED, f"{len(stored)} file(s) staged to {bucket}/{prefix}")
            session.commit()

    # --- what finished steps used ----------------------------------------------------------------------
    def _record_peak_memory(self, instance_id: str, cluster: Cluster | None = None) -> None:
        """Each step's peak memory (largest MaxRSS of its Slurm steps) from the accounting, with one ``sacct``
        as the service account: the history right-sizing learns memory from. Read when the instance ends,
        when the accounting of its jobs is settled; a failure is logged and leaves the peaks unknown."""
        try:
            with self.sessions() as session:
                inst = session.get(m.WorkflowInstance, instance_id)
                if inst is None:
                    return
                jobs = {s.job_id: s.id for s in inst.steps if s.job_id and s.started_at is not None}
                if cluster is None:
                    cluster = cluster_by_id(session, None, inst.cluster_id)
                    session.expunge(cluster)
            if not jobs:
                return
            peaks = SlurmClient(service_connector(cluster), timeout=60).peak_memory(list(jobs))
            with self.sessions() as session:
                for job_id, step_id in jobs.items():
                    step = session.get(m.WorkflowStep, step_id)
                    if step is not None and job_id in peaks:
                        step.max_rss_mb = peaks[job_id]
                session.commit()
        except Exception as exc:  # noqa: BLE001 - a missing peak must never fail or stall the workflow
            log.warning("workflow %s: peak memory of its steps not recorded: %s", instance_id, exc)

    def _ingest_ran_steps_energy(self, instance_id: str, ran: set[str]) -> None:
        """Energy of the steps of a FAILED instance that did start (the collector writes its record
        whatever the step's exit status)."""
        try:
            with self.sessions() as session:
                inst = session.get(m.WorkflowInstance, instance_id)
                cluster = cluster_by_id(session, None, inst.cluster_id) if inst is not None else None
                if cluster is None:
                    return
                session.expunge(cluster)
                template = Template.model_validate(session.get(m.WorkflowTemplate, inst.template_id).spec)
                work_dir, login, owner = inst.work_dir, inst.cluster_login, owner_principal(inst)
            conn = owner_connector(cluster, login, owner)
            for step in template.steps:
                if step.energy and step.name in ran:
                    self._ingest_step_energy(instance_id, conn, cluster.name, work_dir, step.name)
        except Exception as exc:  # noqa: BLE001 - never let energy disturb the reconciler
            log.warning("workflow %s: energy of the failed instance not ingested: %s", instance_id,
                        api_error_text(exc))

    def _ingest_step_energy(self, instance_id: str, conn: ClusterConnector, cluster: str, work_dir: str,
                            step: str) -> None:
        """Fetch the files the collector wrote for ``step`` and ingest them for the instance's owner; the
        outcome is an event of the step. Energy is a by-product: a missing or refused file never fails the
        workflow (ingestion skips rows already stored, so a re-run after a crash adds nothing)."""
        if self.energy_sink is None:
            self._energy_event(instance_id, step, "energy not ingested: no energy capability in this service")
            return
        try:
            files = fetch_energy_files(conn, f"{work_dir}/{energy_dir(step)}", self.settings.energy_max_file_bytes,
                                       self.energy_max_files)
        except (ClusterError, OSError, ValueError) as exc:
            self._energy_event(instance_id, step, f"energy not ingested: cannot fetch the step's files: "
                                                  f"{api_error_text(exc)}")
            return
        if not files:
            self._energy_event(instance_id, step, f"energy not ingested: the collector left no file in "
                                                  f"{energy_dir(step)}")
            return
        try:
            with self.sessions() as session:
                inst = session.get(m.WorkflowInstance, instance_id)
                result = self.energy_sink(session, organization=inst.organization, username=inst.username,
                                          files=files, cluster=cluster, instance_id=instance_id)
                session.add(_event(inst, step, f"energy ingested from {len(files)} file(s): {result['stored']} "
                                               f"node record(s), {result['samples_stored']} sample(s) stored, "
                                               f"{result['duplicates']} already known"))
                session.commit()
        except Exception as exc:  # noqa: BLE001 - energy must never fail the workflow: record why, go on
            log.warning("workflow %s: energy of step %s not ingested: %s", instance_id, step, api_error_text(exc))
            self._energy_event(instance_id, step, f"energy not ingested: {api_error_text(exc)}")

    def _energy_event(self, instance_id: str, step: str, detail: str) -> None:
        with self.sessions() as session:
            inst = session.get(m.WorkflowInstance, instance_id)
            if inst is not None:  # deleted meanwhile: nothing to record on
                session.add(_event(inst, step, detail))
                session.commit()



def _event(inst: m.WorkflowInstance, step: str, detail: str) -> m.WorkflowEvent:
    """An event that records something about a step without changing the instance's state."""
    return m.WorkflowEvent(instance_id=inst.id, step=step, from_state=inst.state, to_state=inst.state,
                           detail=detail[:4000])

