"""Per-organization models behind :func:`.estimates.estimate`, kept in memory and refit in the background.

Three levels of knowledge, best first:

1. **The template's own runs** (``template/step`` rows of the history): the run-time distribution per cluster
   (other clusters' runs scaled by relative speed when this one has none), and from 30 runs on a
   scikit-learn model of log run time on the template's numeric parameters, requested resources and cluster,
   with a split-conformal upper quantile for the time limit. Energy per node-second and CPI / GB/s come
   from the runs' energy records.
2. **The organization's whole history** (imported traces and every step): the shared
   :class:`~.predictor.RuntimePredictor` on :class:`~.features.HistoryState` features (user habits, same
   request shape, queue/cluster medians), its limit from :class:`~.time_limits.LimitCalibrator` calibrated on a
   chronological hold-out; a quantile gradient-boosting model of peak memory per node.
3. Nothing: the template's requests (the caller reports ``template-defaults``).

Storage: models live in memory only (nothing is written, so nothing is ever unpickled) and are rebuilt after a
restart on first use. The first use builds the cheap part synchronously (history, features state, statistics,
no fitting); fitting always happens on a background thread and the fitted models replace the old ones
atomically. The history is checked at most every ``CHECK_EVERY_S`` seconds (and at once after an import): any
change rebuilds the history and feature state (cheap; the fitted parts are carried over, so a finished job
shows in its user's features at once), and a refit follows when the history grew by ``REFIT_GROWTH`` since the
last fit (or anything changed and the last fit is older than ``REFIT_EVERY_S``).

Speed: scikit-learn's per-call overhead (input validation, OpenMP thread pools) costs milliseconds for one row,
so predictions walk the fitted trees ourselves (:class:`~.trees.FlatForest`: every tree of every model at once, one
vectorised step per depth level) — checked against scikit-learn's own predictions after each fit.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session

from . import service_history as sh
from .fitting import OrgModels, build_light, carry_over, fit

log = logging.getLogger("heroes_service.decision")

REFIT_GROWTH = 0.2
REFIT_EVERY_S = 600.0        # a fit older than this is redone as soon as anything changed
CHECK_EVERY_S = 30.0


class Registry:
    """Models per (database, organization); builds, staleness checks and refits as described above."""

    def __init__(self):
        self._models: dict[tuple[str, str], OrgModels] = {}
        self._checked: dict[tuple[str, str], float] = {}
        self._pending: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heroes-decision-fit")

    @staticmethod
    def key(session: Session, organization: str) -> tuple[str, str]:
        bind = session.get_bind()
        return (str(bind.url), organization)

    def get(self, session: Session, organization: str) -> OrgModels:
        """The organization's models; the first call builds the unfitted ones here and schedules the fit."""
        key = self.key(session, organization)
        models = self._models.get(key)
        if models is None:
            with self._lock:
                key_lock = self._key_locks.setdefault(key, threading.Lock())
            with key_lock:
                models = self._models.get(key)
                if models is None:
                    models = build_light(session, organization)
                    self._models[key] = models
                    self._checked[key] = time.monotonic()
                    self._schedule(key, session.get_bind(), fit_only=models)
            return models
        if time.monotonic() - self._checked.get(key, 0.0) > CHECK_EVERY_S:
            self._checked[key] = time.monotonic()
            self._schedule(key, session.get_bind())
        return models

    def warm(self, bind, organizations: list[str]) -> None:
        """Build (and fit) the models of ``organizations`` in the background, e.g. when the service starts,
        so that no first request pays for reading the history."""
        for organization in organizations:
            key = (str(bind.url), organization)
            if key not in self._models:
                self._checked[key] = time.monotonic()
                self._schedule(key, bind, force=True)

    def peek(self, session: Session, organization: str) -> OrgModels | None:
        return self._models.get(self.key(session, organization))

    def refresh(self, session: Session, organization: str) -> None:
        """History changed (an import): look at it now rather than at the next periodic check."""
        key = self.key(session, organization)
        self._checked[key] = time.monotonic()
        self._schedule(key, session.get_bind(), force=True)

    def wait_idle(self, timeout: float = 120.0) -> bool:
        """Block until no build is pending (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return True
            time.sleep(0.05)
        return False

    def _schedule(self, key, bind, fit_only: OrgModels | None = None, force: bool = False) -> None:
        with self._lock:
            self._pending.add(key)
        self._executor.submit(self._work, key, bind, fit_only, force)

    def _work(self, key, bind, fit_only: OrgModels | None, force: bool) -> None:
        try:
            if fit_only is not None:
                self._models[key] = fit(fit_only)
                return
            with Session(bind=bind) as session:
                current = self._models.get(key)
                now = sh.counts(session, key[1])
                if not force and current is not None and now == current.counts:
                    return  # nothing new
                codes = (current.users, current.clusters, current.templates) if current is not None else None
                light = build_light(session, key[1], codes)
            if current is None or not current.fitted:
                light.version = current.version + 1 if current is not None else 0
                self._models[key] = light  # answer from the new history while fitting
                self._models[key] = fit(light)
            elif _stale(current.fit_counts or current.counts, now, time.monotonic() - current.fitted_at):
                light.version = current.version + 1
                self._models[key] = carry_over(current, light)  # new history at once...
                self._models[key] = fit(light)                  # ...and the refit replaces it when done
            else:
                self._models[key] = carry_over(current, light)
        except Exception:
            log.exception("decision models for %s could not be rebuilt; the previous ones stay", key[1])
        finally:
            with self._lock:
                self._pending.discard(key)

    def forget_organization(self, organization: str) -> None:
        """Drop an organization's models (it was deleted: its history is gone with it)."""
        with self._lock:
            for key in [k for k in self._models if k[1] == organization]:
                self._models.pop(key, None)
                self._checked.pop(key, None)

    def forget(self) -> None:
        with self._lock:
            self._models.clear()
            self._checked.clear()


def _stale(fitted: sh.HistoryCounts, now: sh.HistoryCounts, fitted_age_s: float = 0.0) -> bool:
    """Whether to refit: the jobs (or the measured-energy records) grew by REFIT_GROWTH since the last fit, some
    were deleted, or anything changed and the fit is older than REFIT_EVERY_S (a big organization's slow
    trickle of finished steps still reaches the models, without a refit per step)."""
    if now.imported < fitted.imported or now.steps < fitted.steps or now.energy < fitted.energy:
        return True
    if now.total - fitted.total >= max(1.0, REFIT_GROWTH * fitted.total):
        return True
    if now.energy - fitted.energy >= max(1.0, REFIT_GROWTH * fitted.energy):
        return True
    return now != fitted and fitted_age_s >= REFIT_EVERY_S


REGISTRY = Registry()
