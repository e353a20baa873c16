"""``ClusterJobs``: submit, state, cancel, signal and tunnel for every job kind (one per app).

Acting for a user (``Principal``) always: a job belongs to the user who submitted it, and any other
caller - another user, another organization - gets 404 for it, the same as an id that does not exist.
Slurm commands that act on a job run as its owner (per-user certificate or the service account); state
comes from the database, which the one reconciler per cluster keeps current, so polling a job costs no
Slurm command. The reconciler's tracker for these rows is ``tracker.ClusterJobsTracker``.
"""
from __future__ import annotations

import io
import logging
import threading
import time
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from ..clusters.errors import ClusterError, ClusterUnreachable, CommandFailed, CommandTimeout
from ..clusters.identity import connector_for, service_connector
from ..clusters.models import Cluster, cluster_by_id, clusters_of
from ..errors import Invalid, NotFound, Unavailable
from .config import ClusterJobsSettings, get_cluster_jobs_settings
from .kinds import JobContext, JobSpecError, get_kind
from .models import FINAL, LEDGER_ONLY, LIVE, PENDING, REFUSED, SUBMITTING, ClusterJob, job_name, new_id, utcnow
from .reconciler import Reconciler
from .resources import check_resources
from .submit import find_by_name, owner_connector, owner_principal, sbatch_once, scancel
from .submitter import start_submission
from .tunnels import Forward

log = logging.getLogger("heroes_service.clusterjobs")
# Built once: SQLAlchemy memoizes a statement's cache key on the object, so the submit path neither rebuilds
# nor re-keys them per request (its CPU, not the database, was the cost: ~1.4 ms a statement on a busy host).
_CLUSTER_BY_NAME = select(Cluster.__table__).where(Cluster.__table__.c.organization == bindparam("organization"),
                                                   Cluster.__table__.c.name == bindparam("name"))
_INSERT_JOB = ClusterJob.__table__.insert()
_UPDATE_JOB = ClusterJob.__table__.update().where(ClusterJob.__table__.c.id == bindparam("row_id"))
SIGNALS = ("INT", "TERM", "KILL", "USR1", "USR2", "HUP")


class ClusterJobs:
    """The service side of every non-workflow job; see the package docstring."""

    def __init__(self, sessions: sessionmaker[Session], reconciler: Reconciler,
                 settings: ClusterJobsSettings | None = None):
        from .tracker import ClusterJobsTracker

        self.sessions = sessions
        self.reconciler = reconciler
        self.settings = settings or get_cluster_jobs_settings()
        self.tracker = ClusterJobsTracker(self)
        reconciler.register(self.tracker)
        self._forwards: dict[tuple[str, str], Forward] = {}    # (row id, name) -> open forward
        self._node_addrs: dict[str, tuple[float, dict[str, str]]] = {}
        self._made: set[tuple[str, str, str]] = set()   # (cluster, login, folder) known to exist
        self._lock = threading.Lock()

    # --- clusters a user may run on -----------------------------------------------------------------------
    def clusters(self, principal) -> list[Cluster]:
        with self.sessions() as session:
            found = clusters_of(session, principal.organization) if principal.organization else []
            for cluster in found:
                session.expunge(cluster)
        return found

    def _cluster(self, connection: Connection, principal, name: str) -> Cluster:
        found = None
        if principal.organization:
            found = connection.execute(_CLUSTER_BY_NAME, {"organization": principal.organization, "name": name})
            found = found.mappings().first()
        if found is None:
            raise NotFound(f"cluster {name!r} is not enrolled for your organization")
        return Cluster(**found)  # a plain copy, never attached: read with Core, no identity map to load it into

    # --- submit (the one path: intent, sbatch once, adopt by name) -----------------------------------------
    def submit(self, principal, kind_name: str, cluster_name: str, resources: dict[str, Any],
               params: dict[str, Any], *, ref: str = "", prediction: dict | None = None) -> ClusterJob:
        kind = get_kind(kind_name)
        try:
            clean = kind.validate(dict(params or {}))
        except JobSpecError as exc:
            raise Invalid(str(exc)) from None
        engine = self.sessions.kw["bind"]
        with engine.connect() as connection:
            cluster = self._cluster(connection, principal, cluster_name)
        conn = connector_for(cluster, principal)
        started = self._start_sbatch(conn)   # the login node starts sbatch while the intent is written
        try:
            row_id, ctx, rendered, values = self._intent(kind, clean, cluster, conn, principal, resources, ref,
                                                         prediction)
            with engine.begin() as connection:  # the intent, committed before sbatch (Core: no unit of work)
                connection.execute(_INSERT_JOB, values)
        except BaseException:
            if started is not None:
                started.abandon()   # no script was sent: sbatch reads an empty input and submits nothing
            raise
        row = ClusterJob(**values)  # the answer's copy, never attached to a session
        try:
            self._prepare_files(conn, rendered)
            if started is not None:
                found = started.submit(rendered.script, timeout=self.settings.command_timeout_s)
            else:
                found = sbatch_once(conn, rendered.script, timeout=self.settings.command_timeout_s)
        except CommandFailed as exc:
            self._set(row_id, state=REFUSED, detail=f"sbatch refused the job: {(exc.stderr or '')[:500]}",
                      ended_at=utcnow())
            raise Invalid(f"Slurm refused the job: {(exc.stderr or str(exc)).strip()[:300]}") from None
        except (ClusterUnreachable, CommandTimeout) as exc:
            found = self._adopt_after_drop(conn, ctx.job_name)
            if found is None:  # the reconciler adopts it by name if it exists after all, else it becomes LOST
                raise Unavailable(f"cluster {cluster.name} did not answer sbatch ({exc}); the job is recorded and "
                                  f"will be found by its name if Slurm took it") from None
        finally:
            if started is not None:
                started.abandon()
        row = self._record(row, job_id=found, state=PENDING, submitted_at=utcnow(), detail=f"sbatch -> job {found}")
        self.reconciler.wake(cluster.id)
        log.info("%s job %s of %s on %s: Slurm job %s", kind.name, row_id, principal.username, cluster.name, found)
        return row

    def _intent(self, kind, clean: dict, cluster: Cluster, conn, principal, resources: dict, ref: str,
                prediction: dict | None):
        """The job's checked resources, its script and the intent row's values (nothing written yet)."""
        try:
            checked = check_resources(resources or {}, list(cluster.partitions or []), cluster.default_partition,
                                      cluster.name)
        except JobSpecError as exc:
            raise Invalid(str(exc)) from None
        row_id = new_id()
        ctx = JobContext(id=row_id, kind=kind.name, job_name=job_name(kind.name, row_id), username=principal.username,
                         organization=cluster.organization, cluster=cluster.name, cluster_login=conn.login,
                         resources=checked, params=clean, settings=self.settings)
        try:
            rendered = kind.render(ctx)
        except (JobSpecError, ValueError) as exc:
            raise Invalid(str(exc)) from None
        values = _with_defaults(dict(
            id=row_id, kind=kind.name, cluster_id=cluster.id, cluster=cluster.name, organization=cluster.organization,
            username=principal.username, cluster_login=conn.login, ref=ref[:255], job_name=ctx.job_name,
            state=SUBMITTING, resources=checked.__dict__.copy(), params=kind.public_params(clean),
            prediction=prediction, detail="intent recorded; sbatch next"))
        return row_id, ctx, rendered, values

    @staticmethod
    def _start_sbatch(conn):
        """sbatch started on the login node, waiting for its script (every option is in the script's
        ``#SBATCH`` lines); None when no connection is up (this never connects: a login node that is down is
        waited for once, by ``sbatch_once`` after the intent, which reports the failure as it always has)."""
        try:
            return start_submission(conn, options_in_script=True, connect=False)
        except ClusterError as exc:
            log.info("sbatch could not be started early on %s (%s): submitting after the intent", conn.cluster, exc)
            return None

    def _prepare_files(self, conn, rendered) -> None:
        """The kind's folders (made once per account and cached: an SFTP session costs as much as the sbatch)
        and files, before sbatch."""
        folders = [f for f in rendered.folders if (conn.cluster, conn.login, f) not in self._made]
        if not folders and not rendered.files:
            return
        with conn.sftp() as sftp:
            for folder in folders:
                path = ""
                for part in folder.split("/"):
                    path = f"{path}/{part}" if path else part
                    try:
                        sftp.stat(path)
                    except FileNotFoundError:
                        sftp.mkdir(path, 0o700)
                self._made.add((conn.cluster, conn.login, folder))
        for path, (content, _mode) in rendered.files.items():
            conn.put_stream(io.BytesIO(content.encode()), path)

    @staticmethod
    def _adopt_after_drop(conn, name: str) -> str | None:
        try:
            return find_by_name(conn, name)
        except Exception:  # noqa: BLE001 - still unreachable: the reconciler looks again
            return None

    def _record(self, row: ClusterJob, **fields) -> ClusterJob:
        """``fields`` of ``row`` (recorded by this call, held here) in one prepared UPDATE: no SELECT of a row we
        hold, no unit of work (the submit path's last write before the answer; tests/bench)."""
        with self.sessions.kw["bind"].begin() as connection:
            connection.execute(_UPDATE_JOB, {"row_id": row.id, **fields})
        for key, value in fields.items():
            setattr(row, key, value)
        return row

    def _set(self, row_id: str, **fields) -> ClusterJob:
        with self.sessions() as session:
            row = session.get(ClusterJob, row_id)
            for key, value in fields.items():
                setattr(row, key, value)
            session.commit()
            session.expunge(row)
            return row

    # --- reading --------------------------------------------------------------------------------------------
    def get(self, principal, row_id: str) -> ClusterJob:
        """The caller's job ``row_id`` (404 for anyone else's, or for a workflow step's or desktop's ledger row)."""
        with self.sessions() as session:
            row = session.get(ClusterJob, row_id) if len(row_id) <= 32 else None
            if row is None or row.username != principal.username or row.organization != principal.organization \
                    or row.kind in LEDGER_ONLY:
                raise NotFound("no such cluster job of yours")
            session.expunge(row)
            return row

    def state(self, principal, row_id: str, wait_s: float = 0.0) -> dict[str, Any]:
        """The job's state; with ``wait_s``, waits (at most that long) while it is SUBMITTING or PENDING."""
        row = self.get(principal, row_id)
        deadline = time.monotonic() + min(max(0.0, wait_s), self.settings.state_wait_max_s)
        while row.state in (SUBMITTING, PENDING) and time.monotonic() < deadline:
            self.reconciler.wake(row.cluster_id)
            self.reconciler.wait_cycle(min(1.0, max(0.05, deadline - time.monotonic())))
            row = self.get(principal, row_id)
        return self.describe(row)

    def describe(self, row: ClusterJob) -> dict[str, Any]:
        out = {"id": row.id, "kind": row.kind, "cluster": row.cluster, "state": row.state, "job_id": row.job_id,
               "job_name": row.job_name, "node": row.node, "node_addr": row.node_addr, "reason": row.reason,
               "exit_code": row.exit_code, "detail": row.detail, "resources": row.resources, "params": row.params,
               "created_at": row.created_at, "submitted_at": row.submitted_at, "started_at": row.started_at,
               "ended_at": row.ended_at, "tunnels": self._tunnels_of(row.id)}
        if row.state == "RUNNING":
            if not row.node_addr and row.node:
                row = self._set(row.id, node_addr=self.node_address(row))
                out["node_addr"] = row.node_addr
            out.update(get_kind(row.kind).on_running(row, self))
        return out

    def node_address(self, row: ClusterJob) -> str:
        """Where the gateway reaches a job's node: NodeAddr from one ``sinfo`` per cluster (cached), else the
        node's name. Read outside the reconciler's cycle, once per new node."""
        node = row.node.split(",")[0]
        now = time.monotonic()
        with self._lock:
            cached = self._node_addrs.get(row.cluster_id)
        if cached is None or cached[0] < now or node not in cached[1]:
            with self.sessions() as session:
                cluster = cluster_by_id(session, None, row.cluster_id)
            result = service_connector(cluster).run(["sinfo", "-h", "-N", "-o", "%N|%o"], timeout=30)
            mapping = dict(line.split("|", 1) for line in result.stdout.splitlines() if "|" in line) if result.ok else {}
            cached = (now + self.settings.node_addr_ttl_s, mapping)
            with self._lock:
                self._node_addrs[row.cluster_id] = cached
        return cached[1].get(node) or node

    # --- acting on a job -----------------------------------------------------------------------------------
    def owner_conn(self, row: ClusterJob):
        with self.sessions() as session:
            cluster = cluster_by_id(session, None, row.cluster_id)
            if cluster is None:
                raise NotFound("the job's cluster is no longer enrolled")
            session.expunge(cluster)
        return owner_connector(cluster, row.cluster_login, owner_principal(row))

    def cancel(self, principal, row_id: str) -> dict[str, Any]:
        """``scancel`` as the owner (the reconciler records the final state and the ledger); an intent
        without a job id ends at once. Cancelling an ended job changes nothing."""
        row = self.get(principal, row_id)
        if row.state in LIVE and row.job_id:
            scancel(self.owner_conn(row), row.job_id, timeout=self.settings.command_timeout_s)
            self.reconciler.wake(row.cluster_id)
            row = self._set(row.id, detail="cancel requested")
        elif row.state == SUBMITTING:
            row = self._set(row.id, state="CANCELLED", ended_at=utcnow(), detail="cancelled before Slurm knew it")
        self.end_hook(row)
        return self.describe(row)

    def signal(self, principal, row_id: str, signal: str) -> None:
        """Send ``signal`` to the job's batch shell (interactive kinds ``exec`` their program there)."""
        name = str(signal or "").upper()
        if name not in SIGNALS:
            raise Invalid(f"signal: one of {', '.join(SIGNALS)}")
        row = self.get(principal, row_id)
        if row.state in FINAL or not row.job_id:
            raise NotFound("the job has ended")
        result = self.owner_conn(row).run(["scancel", "--batch", f"--signal={name}", row.job_id],
                                          timeout=self.settings.command_timeout_s)
        if not result.ok:
            raise Unavailable(f"scancel --signal failed: {result.stderr.strip()[:200]}")

    def tunnel(self, principal, row_id: str, port: int, local_port: int = 0, name: str = "server") -> int:
        """A port on the service host's loopback relayed to the job's node:port over the owner's SSH
        connection to the login node (for sites whose nodes the gateway cannot route to). Idempotent."""
        row = self.get(principal, row_id)
        if row.state != "RUNNING":
            raise Invalid(f"the job is {row.state}, not RUNNING")
        if not 1024 <= int(port) <= 65535:
            raise Invalid("port must be in 1024..65535")
        host = row.node_addr or self.node_address(row)
        return self.forward(row, name, host, int(port), local_port).local_port

    def forward(self, row: ClusterJob, name: str, host: str, port: int, local_port: int = 0) -> Forward:
        key = (row.id, name)
        with self._lock:
            known = self._forwards.get(key)
        if known is not None and known.alive and (known.host, known.port) == (host, port):
            return known
        if known is not None:
            known.close()
        forward = Forward(self.owner_conn(row), host, port, local_port)
        with self._lock:
            self._forwards[key] = forward
        return forward

    def _tunnels_of(self, row_id: str) -> dict[str, int]:
        with self._lock:
            return {name: f.local_port for (rid, name), f in self._forwards.items() if rid == row_id and f.alive}

    def end_hook(self, row: ClusterJob) -> None:
        """Close the job's tunnels once it is over (cancelled or seen final) and run the kind's clean-up."""
        if row.state not in FINAL and row.detail != "cancel requested":
            return
        with self._lock:
            keys = [k for k in self._forwards if k[0] == row.id]
            forwards = [self._forwards.pop(k) for k in keys]
        for forward in forwards:
            forward.close()
        if row.state in FINAL:
            try:
                get_kind(row.kind).on_end(row, self)
            except Exception:  # noqa: BLE001 - clean-up is best effort
                log.warning("clean-up of %s job %s failed", row.kind, row.id, exc_info=True)

    def close(self) -> None:
        with self._lock:
            forwards = list(self._forwards.values())
            self._forwards.clear()
        for forward in forwards:
            forward.close()


def _with_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` completed with the table's Python-side defaults, so a Core INSERT and the in-memory copy of
    the row agree on every column (the ORM would fill them at flush)."""
    out = dict(values)
    for column in ClusterJob.__table__.columns:
        default = column.default
        if column.key not in out and default is not None and default.is_scalar:
            out[column.key] = default.arg
        elif column.key not in out and default is not None and default.is_callable:
            out[column.key] = default.arg(None)
    return out
