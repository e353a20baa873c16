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


def test_a_very_short_interval_still_reads_the_power_the_gpu_draws():
    """The energy counter moves every few tens of ms; an interval shorter than that must not read 0 W."""
    sampler = _open_sampler()
    try:
        time.sleep(0.5)
        sampler.sample(0.5)
        short = sampler.sample(0.005)
    finally:
        sampler.close()
    for gpu in short:
        assert gpu.energy_j is not None and gpu.energy_j > 0, gpu
        assert 0.2 < (gpu.energy_j / 0.005) / gpu.power_w < 5.0, gpu


def test_collector_writes_gpu_energy_of_a_real_step(tmp_path):
    """The collector around a 3 s command on a real GPU: the application row and every sample carry the
    GPU's power (an idle GPU draws tens of watts), and the reader accepts the row."""
    import csv
    import subprocess
    import sys

    _open_sampler().close()
    subprocess.run([sys.executable, "-m", "heroes_energy.collect", "--out", str(tmp_path), "--job-id", "7",
                    "--step-id", "0", "--node", "gpu0", "--", "sleep", "3"], check=True, timeout=60)
    from heroes_energy.reader import read_file

    rows, errors = read_file(str(tmp_path / "heroes.7.0.gpu0.csv"))
    assert not errors and len(rows) == 1
    assert rows[0].gpu_power_w and all(w > 0 for w in rows[0].gpu_power_w)
    with open(tmp_path / "heroes.7.0.gpu0.samples.csv", newline="") as fh:
        samples = list(csv.DictReader(fh, delimiter=";"))
    assert len(samples) >= 3
    assert all(float(s["GPU_POWER_W"]) > 0 for s in samples), [s["GPU_POWER_W"] for s in samples]


def test_the_jobs_gpus_are_picked_by_slurms_minor_numbers_and_by_uuid():
    """On a real GPU: Slurm's SLURM_JOB_GPUS names /dev/nvidiaN minor numbers and CUDA_VISIBLE_DEVICES may hold
    UUIDs; the sampler keeps exactly the GPUs they name, and a job without GPUs is charged for none."""
    from heroes_energy.gpu import allowed_gpus

    probe = _open_sampler()
    nvml = probe.nvml
    handle = probe.devices[0].handle
    minor = int(nvml.nvmlDeviceGetMinorNumber(handle))
    uuid = nvml.nvmlDeviceGetUUID(handle)
    uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
    probe.close()
    cases = [({"SLURM_JOB_GPUS": str(minor)}, True), ({"SLURM_JOB_GPUS": str(minor + 64)}, False),
             ({"CUDA_VISIBLE_DEVICES": uuid}, True), ({"CUDA_VISIBLE_DEVICES": "GPU-00000000-dead"}, False),
             ({"CUDA_VISIBLE_DEVICES": ""}, False)]
    for environ, kept in cases:
        sampler = NvmlSampler(selection=allowed_gpus(environ)).open()
        try:
            names = {d.index for d in sampler.devices}
            assert (0 in names) == kept, (environ, sampler.reason)
        finally:
            sampler.close()
