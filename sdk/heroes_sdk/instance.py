"""A submitted workflow instance: its steps, states, events and outputs, and what you do with it.

An :class:`Instance` keeps the client it came from, so the usual follow-ups are methods:

    run = heroes.submit("heat-diffusion", {"points": 200}, cluster="auto")
    run.wait()                                   # progress bar with each step's state
    profile = run.read_csv("outputs/profile.csv")  # straight into pandas
    run.plot_energy()                            # plotly figure of the energy its steps used
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import display
from .errors import InstanceFailed, NotFound, WaitTimeout
from .models import EnergyRecord, parse_time
from .progress import ProgressSpec, make_bar

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = ["Instance", "Step", "Event", "FINAL_STATES", "STEP_FINAL_STATES"]

#: states an instance ends in (tuples, not sets: the reference shows them in this order)
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED")
#: states a step ends in: Slurm's final job states, and the service's SKIPPED and LOST
STEP_FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                     "BOOT_FAIL", "DEADLINE", "REVOKED", "SKIPPED", "LOST")


@dataclass
class Step:
    """One step of an instance: its Slurm job, state, nodes, exit code and peak memory."""

    name: str
    state: str
    job_id: str | None = None
    job_name: str = ""
    depends_on: list[str] = field(default_factory=list)
    exit_code: int | None = None
    nodes: str = ""
    reason: str = ""
    log_tail: str = ""
    max_rss_mb: float | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @classmethod
    def from_api(cls, data: dict) -> "Step":
        times = {k: parse_time(data.get(k)) for k in ("submitted_at", "started_at", "ended_at")}
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, **times})

    @property
    def done(self) -> bool:
        """Whether the step ended (completed, failed, cancelled, timed out, skipped, ...)."""
        return self.state in STEP_FINAL_STATES


@dataclass
class Event:
    """A state change of the instance (``step`` empty) or of one step, with the service's explanation."""

    at: datetime | None
    step: str
    from_state: str
    to_state: str
    detail: str

    @classmethod
    def from_api(cls, data: dict) -> "Event":
        return cls(at=parse_time(data.get("at")), step=data.get("step", ""), from_state=data.get("from_state", ""),
                   to_state=data.get("to_state", ""), detail=data.get("detail", ""))


@dataclass
class Instance:
    """A workflow instance as the service last described it (call :meth:`refresh` for news)."""

    id: str
    state: str
    name: str = ""
    username: str = ""
    template_id: str = ""
    template_name: str = ""
    template_version: int = 0
    cluster: str = ""
    reason: str = ""
    exit_code: int | None = None
    cancel_requested: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    output_bucket: str = ""
    output_prefix: str = ""
    detailed: bool = False
    client: "Client | None" = field(default=None, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict, client: "Client | None" = None) -> "Instance":
        simple = {k: v for k, v in data.items()
                  if k in cls.__dataclass_fields__ and k not in ("steps", "events", "client", "detailed")}
        for key in ("created_at", "updated_at", "finished_at"):
            simple[key] = parse_time(data.get(key))
        return cls(**simple, steps=[Step.from_api(s) for s in data.get("steps") or []],
                   events=[Event.from_api(e) for e in data.get("events") or []], detailed="steps" in data,
                   client=client)

    # --- state -----------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Whether the instance ended (COMPLETED, FAILED or CANCELLED)."""
        return self.state in FINAL_STATES

    @property
    def ok(self) -> bool:
        """Whether the instance COMPLETED."""
        return self.state == "COMPLETED"

    def step(self, name: str) -> Step:
        """The step called ``name`` (KeyError naming the steps there are otherwise)."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"instance {self.id} has no step {name!r} (steps: {', '.join(s.name for s in self.steps)})")

    def refresh(self) -> "Instance":
        """Read the instance again and update this object in place; returns it."""
        fresh = self._client().instance(self.id)
        for name in self.__dataclass_fields__:
            if name != "client":
                setattr(self, name, getattr(fresh, name))
        return self

    def status_line(self) -> str:
        """``state | step=STATE step=STATE``: what the progress bar shows."""
        return f"{self.state} | " + " ".join(f"{s.name}={s.state}" for s in self.steps)

    def wait(self, timeout: float | None = None, poll_s: float = 2.0, progress: ProgressSpec = True,
             raise_on_failure: bool = False) -> "Instance":
        """Poll until the instance ends, with a bar of finished steps and each step's state.

        Returns the instance (also when it FAILED or was CANCELLED, unless ``raise_on_failure``); raises
        :class:`WaitTimeout` when ``timeout`` seconds pass first. Reads are retried by the session, so a
        brief outage of the service does not end the wait.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self.refresh()
        bar = make_bar(progress, len(self.steps) or None, f"{self.template_name} {self.id[:8]}", unit="step")
        shown = 0
        try:
            while True:
                finished = sum(1 for s in self.steps if s.done)
                bar.update(finished - shown, self.status_line())
                shown = finished
                if self.done:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(self, timeout)
                time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))
                self.refresh()
        finally:
            bar.close()
        if raise_on_failure and not self.ok:
            raise InstanceFailed(self)
        return self

    def cancel(self) -> "Instance":
        """Ask the service to cancel (scancel every step); returns the refreshed instance."""
        self._client().session.call("DELETE", f"/organization/workflow/instance/{self.id}", retry=False)
        return self.refresh()

    # --- logs and outputs ------------------------------------------------------------------------------
    def logs(self, step: str | None = None, tail: int = 65536) -> str:
        """A step's log (stdout and stderr), the last ``tail`` bytes; every step's, headed, when no step."""
        names = [step] if step else [s.name for s in self.steps]
        parts = []
        for name in names:
            text = self._client().session.request(
                "GET", f"/organization/workflow/instance/{self.id}/log/{name}", params={"tail": tail}).text
            parts.append(text if step else f"==> {name} <==\n{text}")
        return "\n".join(parts)

    def output_keys(self) -> list[str]:
        """Keys of the outputs, relative to the instance's output folder (``outputs/summary.txt``)."""
        return [o["key"][len(self.output_prefix):] if o["key"].startswith(self.output_prefix) else o["key"]
                for o in self.outputs]

    def _output_key(self, name: str) -> str:
        if not self.outputs and not self.done:
            self.refresh()
        keys = {o["key"] for o in self.outputs}
        for candidate in (name, self.output_prefix + name.lstrip("/")):
            if candidate in keys:
                return candidate
        raise NotFound(f"instance {self.id} has no output {name!r}; it has: {', '.join(self.output_keys()) or 'none'}"
                       + ("" if self.done else f" (it is still {self.state})"), status=404)

    def read_output(self, name: str, progress: ProgressSpec = False) -> bytes:
        """An output's bytes (``name`` relative to the output folder, or the full key)."""
        return self._client().data.read(self.output_bucket, self._output_key(name), progress=progress)

    def read_csv(self, name: str, **read_csv_kwargs):
        """An output CSV as a pandas DataFrame (keyword arguments go to ``pandas.read_csv``)."""
        import pandas as pd

        return pd.read_csv(io.BytesIO(self.read_output(name)), **read_csv_kwargs)

    def download_output(self, name: str, path: str, progress: ProgressSpec = True) -> str:
        """Stream an output to a local file (never whole in memory); the path written."""
        return self._client().data.download(self.output_bucket, self._output_key(name), path, progress=progress)

    # --- energy ----------------------------------------------------------------------------------------
    def energy(self) -> list[EnergyRecord]:
        """The energy records of this instance's steps (empty when its steps were not measured)."""
        return self._client().energy(instance_id=self.id)

    def plot_energy(self):
        """A plotly figure of the energy of each step (and its power over time where samples exist)."""
        from .energy import instance_figure

        return instance_figure(self, self.energy(), self._client())

    # --- display ---------------------------------------------------------------------------------------
    def _client(self) -> "Client":
        if self.client is None:
            raise RuntimeError("this Instance is not bound to a Client; get it from Client.instance()")
        return self.client

    def _repr_html_(self) -> str:
        return display.instance_html(self)

    def __str__(self) -> str:
        return f"Instance {self.id} ({self.template_name} v{self.template_version} on {self.cluster}): " \
               f"{self.status_line()}"
