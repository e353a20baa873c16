"""NVIDIA GPU sampling through NVML (pynvml is optional; the module object is injectable for tests).

Energy per GPU: the delta of ``nvmlDeviceGetTotalEnergyConsumption`` (mJ, Volta and newer) when the
GPU has that counter and the delta is sane; otherwise power x time as EAR integrates it
(``nvmlDeviceGetPowerUsage`` in mW). A negative counter delta (driver reload) falls back to
power x time for that interval. Both are measurements, not estimates.

The counter only moves every few tens of milliseconds (seen on an H200: a collector's last, 8 ms interval
read a zero delta, which showed as 0 W at the end of every power timeline). A zero delta while the GPU
draws power is therefore "no new reading yet": that interval is charged power x time, and the energy so
charged is taken off the next counter delta, so the job's total stays the counter's.

Which GPUs are the job's: on a node whose device cgroup is not constrained NVML shows every GPU, and
charging each job for all of them would multiply a shared node's GPU energy. :func:`allowed_gpus` reads the
job's allocation from the environment Slurm gives the step (``SLURM_STEP_GPUS``/``SLURM_JOB_GPUS``: the
``/dev/nvidiaN`` minor numbers), else ``CUDA_VISIBLE_DEVICES`` (UUIDs, or indices taken in NVML's PCI order).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping


def import_nvml() -> Any | None:
    """The pynvml module (from nvidia-ml-py) if importable, else None."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except Exception:  # ImportError, or a broken install: GPUs are then simply not sampled
        return None
    return pynvml


@dataclass
class GpuSample:
    """One GPU over one interval."""

    index: int
    power_w: float | None
    energy_j: float | None
    util_perc: float | None
    mem_util_perc: float | None
    mem_used_mb: float | None
    sm_clock_khz: float | None
    mem_clock_khz: float | None
    energy_source: str  # "counter", "power_x_time" or "none"


@dataclass
class _Device:
    index: int
    handle: Any
    name: str
    has_energy_counter: bool = True
    last_energy_mj: int | None = None
    charged_ahead_mj: float = 0.0   # charged from power readings, not yet seen in the counter


@dataclass(frozen=True)
class GpuSelection:
    """The GPUs a job may be charged for: by minor number, by UUID or by NVML index (None: no restriction)."""

    minors: frozenset[int] | None = None
    uuids: frozenset[str] | None = None
    indices: frozenset[int] | None = None
    none: bool = False
    source: str = "all GPUs NVML shows"

    def admits(self, index: int, minor: int | None, uuid: str | None) -> bool:
        if self.none:
            return False
        if self.minors is not None:
            return minor in self.minors
        if self.uuids is not None:
            return uuid is not None and any(uuid.startswith(u) for u in self.uuids)
        if self.indices is not None:
            return index in self.indices
        return True


def allowed_gpus(environ: Mapping[str, str]) -> GpuSelection:
    """The job's GPUs from the step's environment (see the module doc)."""
    for name in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        value = environ.get(name, "").strip()
        if value:
            minors = _ints(value)
            if minors is not None:
                return GpuSelection(minors=minors, source=f"{name}={value}")
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return GpuSelection()
    value = value.strip()
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items or items[0] in ("-1", "NoDevFiles"):
        return GpuSelection(none=True, source=f"CUDA_VISIBLE_DEVICES={value!r}")
    if all(v.startswith(("GPU-", "MIG-")) for v in items):
        return GpuSelection(uuids=frozenset(items), source=f"CUDA_VISIBLE_DEVICES={value}")
    indices = _ints(value)
    if indices is not None:
        return GpuSelection(indices=indices, source=f"CUDA_VISIBLE_DEVICES={value}")
    return GpuSelection(none=True, source=f"CUDA_VISIBLE_DEVICES={value!r} (not understood: no GPU charged)")


def _ints(text: str) -> frozenset[int] | None:
    try:
        return frozenset(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        return None


@dataclass
class NvmlSampler:
    """Samples the job's GPUs among those NVML shows (``selection``; default: from this process's environment)."""

    nvml: Any | None = None
    devices: list[_Device] = field(default_factory=list)
    available: bool = False
    reason: str = ""
    selection: GpuSelection | None = None
    initialised: bool = False

    def open(self) -> "NvmlSampler":
        """Initialise NVML and take the first energy-counter reading of each GPU."""
        if self.nvml is None:
            self.nvml = import_nvml()
        if self.nvml is None:
            self.reason = "pynvml not installed"
            return self
        try:
            self.nvml.nvmlInit()
            self.initialised = True
            count = self.nvml.nvmlDeviceGetCount()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.reason = f"NVML unavailable: {exc}"
            return self
        if self.selection is None:
            self.selection = allowed_gpus(os.environ)
        for index in range(count):
            handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = self._call("nvmlDeviceGetUUID", handle)
            if isinstance(uuid, bytes):
                uuid = uuid.decode(errors="replace")
            if not self.selection.admits(index, self._call("nvmlDeviceGetMinorNumber", handle), uuid):
                continue
            name = self._call("nvmlDeviceGetName", handle)
            if isinstance(name, bytes):
                name = name.decode(errors="replace")
            device = _Device(index=index, handle=handle, name=str(name or f"GPU{index}"))
            device.last_energy_mj = self._call("nvmlDeviceGetTotalEnergyConsumption", handle)
            device.has_energy_counter = device.last_energy_mj is not None
            self.devices.append(device)
        self.available = bool(self.devices)
        if not self.available:
            self.reason = ("NVML shows no GPU" if not count else
                           f"none of the {count} GPU(s) NVML shows is the job's ({self.selection.source})")
        return self

    def _call(self, name: str, *args: Any) -> Any:
        """One NVML query; None when this GPU does not support it (NVMLError_NotSupported etc.)."""
        try:
            return getattr(self.nvml, name)(*args)
        except Exception:
            return None

    def sample(self, interval_s: float) -> list[GpuSample]:
        """Every GPU's power, energy, utilization, memory and clocks for the past ``interval_s``."""
        samples = []
        for device in self.devices:
            samples.append(self._sample_one(device, interval_s))
        return samples

    def _sample_one(self, device: _Device, interval_s: float) -> GpuSample:
        nv, handle = self.nvml, device.handle
        power_mw = self._call("nvmlDeviceGetPowerUsage", handle)
        power_w = power_mw / 1000.0 if power_mw is not None else None
        energy_j, source = None, "none"
        if device.has_energy_counter:
            current = self._call("nvmlDeviceGetTotalEnergyConsumption", handle)
            energy_j, source = self._counter_energy(device, current, power_w, interval_s)
            device.last_energy_mj = current
        if energy_j is None and power_w is not None:
            energy_j, source = power_w * interval_s, "power_x_time"
        util = self._call("nvmlDeviceGetUtilizationRates", handle)
        memory = self._call("nvmlDeviceGetMemoryInfo", handle)
        sm_clock = self._call("nvmlDeviceGetClockInfo", handle, getattr(nv, "NVML_CLOCK_SM", 1))
        mem_clock = self._call("nvmlDeviceGetClockInfo", handle, getattr(nv, "NVML_CLOCK_MEM", 2))
        return GpuSample(
            index=device.index,
            power_w=power_w,
            energy_j=energy_j,
            util_perc=float(util.gpu) if util is not None else None,
            mem_util_perc=float(util.memory) if util is not None else None,
            mem_used_mb=memory.used / 1e6 if memory is not None else None,
            sm_clock_khz=sm_clock * 1000.0 if sm_clock is not None else None,
            mem_clock_khz=mem_clock * 1000.0 if mem_clock is not None else None,
            energy_source=source,
        )

    @staticmethod
    def _counter_energy(device: _Device, current: int | None, power_w: float | None,
                        interval_s: float) -> tuple[float | None, str]:
        """Joules of this interval from the counter; (None, "none") when the counter cannot say."""
        if current is None or device.last_energy_mj is None or current < device.last_energy_mj:
            device.charged_ahead_mj = 0.0
            return None, "none"
        delta_mj = float(current - device.last_energy_mj)
        if delta_mj == 0.0 and power_w:
            charged = power_w * interval_s
            device.charged_ahead_mj += charged * 1000.0
            return charged, "power_x_time"
        settled = min(delta_mj, device.charged_ahead_mj)
        device.charged_ahead_mj -= settled
        return (delta_mj - settled) / 1000.0, "counter"

    def close(self) -> None:
        """Shut NVML down (ignored when it was never initialised)."""
        if self.initialised:
            self.initialised = False
            self._call("nvmlShutdown")
