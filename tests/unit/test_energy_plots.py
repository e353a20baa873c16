"""Plot builders mark estimated values visibly (dashed lines, hatched bars, legend labels)."""
from __future__ import annotations

from heroes_energy.plots import cluster_comparison, energy_per_step, power_timeline
from heroes_energy.reader import StepSummary


def sample(t, dc, estimated):
    return {"ELAPSED_SEC": t, "DC_NODE_POWER_W": dc, "PCK_POWER_W": dc - 10, "DRAM_POWER_W": None,
            "GPU_POWER_W": None, "EARLITE_ESTIMATED": {"DC_NODE_POWER_W", "PCK_POWER_W"} if estimated else set()}


def test_timeline_draws_estimated_segments_dashed_and_labelled():
    samples = [sample(1, 100, False), sample(2, 110, False), sample(3, 90, True), sample(4, 95, True)]
    fig = power_timeline(samples)
    by_name = {trace.name: trace for trace in fig.data}
    assert set(by_name) == {"DC node (measured)", "DC node (estimated)", "CPU package (measured)",
                            "CPU package (estimated)"}  # DRAM/GPU absent: no trace rather than zeros
    est = by_name["DC node (estimated)"]
    assert est.line.dash == "dash" and by_name["DC node (measured)"].line.dash == "solid"
    assert list(est.y) == [None, 110, 90, 95]          # joined to the last measured point
    assert list(by_name["DC node (measured)"].y) == [100, 110, None, None]


def test_all_measured_timeline_has_no_estimated_trace():
    fig = power_timeline([sample(1, 100, False), sample(2, 120, False)])
    assert all("estimated" not in trace.name for trace in fig.data)


def summary(job, energy, estimated, name="app"):
    return StepSummary(job, 0, "", ["n1"], "bob", name, None, None, None, 10.0, energy / 10.0, None, None,
                       None, None, None, None, None, None, None, None, None, None, None, None, None, None,
                       None, None, None, energy, estimated)


def test_energy_bars_hatch_estimated_steps():
    fig = energy_per_step([summary(1, 5000, False), summary(2, 8000, True)])
    measured, estimated = fig.data
    assert measured.name == "measured" and estimated.name == "estimated"
    assert list(estimated.x) == ["2.0"] and list(estimated.y) == [8.0]
    assert estimated.marker.pattern.shape == ("/",)
    assert measured.marker.pattern.shape == ("",)


def test_cluster_comparison_marks_groups_with_estimates():
    steps = [summary(1, 4000, False, "lammps"), summary(2, 6000, False, "lammps"), summary(3, 9000, True, "lammps")]
    cluster = {1: "alpha", 2: "alpha", 3: "beta"}
    fig = cluster_comparison(steps, cluster_of=lambda s: cluster[s.job_id])
    alpha, beta = fig.data
    assert alpha.name == "alpha" and list(alpha.y) == [5.0]
    assert beta.name == "beta (incl. estimated)" and beta.marker.pattern.shape == ("/",)
    assert list(beta.customdata) == ["lammps (estimated)"]
