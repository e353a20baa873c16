"""NVML on a real NVIDIA GPU. Runs where one is present (with ``pip install nvidia-ml-py``); elsewhere it is
skipped with the reason, as the energy issue asks. The NVML code paths are unit-tested on recorded values in
tests/unit/test_energy_nvml.py, which run everywhere."""
from __future__ import annotations

import time

import pytest

from heroes_energy.gpu import NvmlSampler, import_nvml


def _open_sampler() -> NvmlSampler:
    if import_nvml() is None:
        pytest.skip("pynvml (nvidia-ml-py) is not installed: no NVIDIA stack on this machine")
    sampler = NvmlSampler().open()
    if not sampler.available or not sampler.devices:
        pytest.skip(f"no NVIDIA GPU visible to NVML on this machine ({sampler.reason or 'no devices'})")
    return sampler


def test_real_gpu_reports_power_energy_and_clocks():
    sampler = _open_sampler()
    try:
        time.sleep(1.0)
        samples = sampler.sample(1.0)
    finally:
        sampler.close()
    assert len(samples) == len(sampler.devices)
    for gpu in samples:
        assert gpu.power_w is not None and gpu.power_w > 0, gpu  # an idle GPU still draws tens of watts
        assert gpu.energy_j is not None and gpu.energy_j > 0, gpu
        assert gpu.energy_source in ("counter", "power_x_time")
        assert gpu.sm_clock_khz and gpu.mem_used_mb is not None
