"""NVML code paths on recorded values, through a fake ``pynvml`` module object (no GPU needed).

The recorded values are shaped like an A100 and a V100 read with nvidia-ml-py: power in mW, the total
energy counter in mJ, clocks in MHz, memory in bytes. A real-GPU run of the same paths is left to a
GPU machine (see the energy report).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from heroes_energy import columns as C
from heroes_energy.collect import Collector, StepInfo
from heroes_energy.gpu import GpuSelection, NvmlSampler, allowed_gpus
from heroes_energy.reader import read_files


class NVMLError(Exception):
    pass


class FakeNvml:
    """Replays per-GPU queues of readings; raises NVMLError where the GPU 'does not support' a query."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2

    def __init__(self, gpus):
        self.gpus = gpus
        self.calls = []
        self.shut = False

    def nvmlInit(self):
        self.calls.append("init")

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return self.gpus[h]["name"].encode()

    def _next(self, h, key):
        queue = self.gpus[h].get(key)
        if queue is None:
            raise NVMLError("Not Supported")
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def nvmlDeviceGetPowerUsage(self, h):
        return self._next(h, "power_mw")

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        return self._next(h, "energy_mj")

    def nvmlDeviceGetUtilizationRates(self, h):
        gpu, mem = self._next(h, "util")
        return SimpleNamespace(gpu=gpu, memory=mem)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=self._next(h, "mem_used"), total=40 * 10**9)

    def nvmlDeviceGetUUID(self, h):
        return self._next(h, "uuid")

    def nvmlDeviceGetMinorNumber(self, h):
        return self._next(h, "minor")

    def nvmlDeviceGetClockInfo(self, h, kind):
        return self._next(h, "sm_mhz" if kind == self.NVML_CLOCK_SM else "mem_mhz")


def a100():
    return {"name": "NVIDIA A100-SXM4-40GB", "power_mw": [251_432, 248_950, 250_001],
            "energy_mj": [9_876_000_000, 9_876_250_000, 9_876_500_000, 9_876_750_000],
            "util": [(97, 61)], "mem_used": [31_457_280_000], "sm_mhz": [1410], "mem_mhz": [1215]}


def v100_without_counter():
    return {"name": "Tesla V100-PCIE-16GB", "power_mw": [150_000], "util": [(50, 20)],
            "mem_used": [8_000_000_000], "sm_mhz": [1380], "mem_mhz": [877]}


def test_energy_counter_delta_is_used_when_the_gpu_has_it():
    sampler = NvmlSampler(nvml=FakeNvml([a100()])).open()
    assert sampler.available and sampler.devices[0].name == "NVIDIA A100-SXM4-40GB"
    (s,) = sampler.sample(1.0)
    assert s.energy_source == "counter"
    assert s.energy_j == pytest.approx(250.0)       # 250,000 mJ
    assert s.power_w == pytest.approx(251.432)
    assert (s.util_perc, s.mem_util_perc) == (97.0, 61.0)
    assert s.mem_used_mb == pytest.approx(31457.28)
    assert (s.sm_clock_khz, s.mem_clock_khz) == (1_410_000.0, 1_215_000.0)


def test_power_times_time_without_counter_and_after_a_driver_reload():
    gpu = a100()
    gpu["energy_mj"] = [5_000_000, 100]             # the counter went back: driver reloaded
    sampler = NvmlSampler(nvml=FakeNvml([gpu, v100_without_counter()])).open()
    first, second = sampler.sample(2.0)
    assert first.energy_source == "power_x_time"
    assert first.energy_j == pytest.approx(251.432 * 2.0)
    assert second.energy_source == "power_x_time"
    assert second.energy_j == pytest.approx(150.0 * 2.0)
    # the next interval uses the counter again from the new baseline
    gpu["energy_mj"] = [200_100]
    again, _ = sampler.sample(1.0)
    assert again.energy_source == "counter" and again.energy_j == pytest.approx(200.0)


def test_a_counter_that_has_not_ticked_yet_is_not_zero_watts():
    """Seen on an H200: the collector's last interval lasted 8 ms, the counter had not moved, and the power
    timeline ended at 0 W. That interval is charged power x time, and the next delta pays it back."""
    gpu = a100()
    gpu["energy_mj"] = [1_000_000, 1_000_000, 1_000_000 + 251_432]
    gpu["power_mw"] = [250_000, 251_432]
    sampler = NvmlSampler(nvml=FakeNvml([gpu])).open()
    (stalled,) = sampler.sample(0.008)
    assert stalled.energy_source == "power_x_time"
    assert stalled.energy_j == pytest.approx(250.0 * 0.008)
    (caught_up,) = sampler.sample(1.0)
    assert caught_up.energy_source == "counter"
    assert caught_up.energy_j == pytest.approx(251.432 - 2.0)    # the total stays the counter's
    assert stalled.energy_j + caught_up.energy_j == pytest.approx(251.432)


def test_nvml_missing_or_failing_is_reported_not_raised():
    class Broken(FakeNvml):
        def nvmlInit(self):
            raise NVMLError("Driver Not Loaded")

    sampler = NvmlSampler(nvml=Broken([])).open()
    assert not sampler.available and "Driver Not Loaded" in sampler.reason
    assert NvmlSampler(nvml=FakeNvml([])).open().reason == "NVML shows no GPU"


def test_collector_writes_gpu_columns_single_column_like_the_heroes_plugin(tmp_path):
    fake = FakeNvml([a100(), v100_without_counter()])
    info = StepInfo("11", "0", "gpu01", "bob", "bob", "", "train", 1, dict(zip(C.HEROES_ID_COLUMNS,
                                                                                C.HEROES_ID_DEFAULTS)))
    now = [100.0]
    collector = Collector(str(tmp_path), info, nvml=fake, powercap_root=str(tmp_path / "none"),
                          clock=lambda: now[0])
    collector.start()
    for _ in range(3):
        now[0] += 1.0
        row = collector.sample()
    assert row["GPU_POWER_W_EACH"] == "250.00,150.00"
    assert float(row["GPU_POWER_W"]) == pytest.approx(250.0 + 150.0)
    path = collector.finish()
    assert fake.shut
    (app,), errors = read_files([path])
    assert errors == []
    assert app.gpu_power_w == pytest.approx((250.0, 150.0))
    assert app.gpu_freq_khz == (1_410_000.0, 1_380_000.0)
    assert app.gpu_util_perc == (97.0, 50.0)
    # DC power = estimated CPU + measured GPUs, and the row says the DC power is estimated
    assert app.dc_power_w == pytest.approx(400.0 + app.pck_power_w, abs=0.02)
    assert "DC_NODE_POWER_W" in app.estimated
    assert "GPU0_POWER_W" not in app.estimated


def node_of_four():
    """Four A100s as an unconstrained node's NVML shows them: index i is /dev/nvidia(3 - i)."""
    gpus = []
    for i in range(4):
        gpu = a100()
        gpu.update(uuid=[f"GPU-{i}{i}{i}{i}aaaa-0000".encode()], minor=[3 - i])
        gpus.append(gpu)
    return gpus


@pytest.mark.parametrize("environ, expected", [
    ({}, [0, 1, 2, 3]),                                               # nothing says: every GPU NVML shows
    ({"SLURM_JOB_GPUS": "3"}, [0]),                                   # Slurm names /dev/nvidia3: NVML index 0
    ({"SLURM_STEP_GPUS": "0,1", "SLURM_JOB_GPUS": "0,1,2,3"}, [2, 3]),  # the step's GPUs before the job's
    ({"CUDA_VISIBLE_DEVICES": "GPU-2222"}, [2]),                      # a UUID (prefix) names one
    ({"CUDA_VISIBLE_DEVICES": "1,3"}, [1, 3]),                        # indices, in NVML's order
    ({"CUDA_VISIBLE_DEVICES": ""}, []),                               # the job has no GPU
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, []),
    ({"CUDA_VISIBLE_DEVICES": "gpu zero"}, []),                       # not understood: charge none, not all
])
def test_only_the_jobs_gpus_are_charged(environ, expected):
    sampler = NvmlSampler(nvml=FakeNvml(node_of_four()), selection=allowed_gpus(environ)).open()
    assert [d.index for d in sampler.devices] == expected
    assert sampler.available == bool(expected)
    if not expected:
        assert "none of the 4 GPU(s) NVML shows is the job's" in sampler.reason


def test_selection_defaults_to_the_processes_environment(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_GPUS", "2")
    monkeypatch.delenv("SLURM_STEP_GPUS", raising=False)
    sampler = NvmlSampler(nvml=FakeNvml(node_of_four())).open()
    assert [d.index for d in sampler.devices] == [1]
    assert sampler.selection == GpuSelection(minors=frozenset({2}), source="SLURM_JOB_GPUS=2")
