"""The Desktop app's line per desktop: the energy says where it comes from, and every value is escaped."""
from __future__ import annotations

from heroes_widgets.desktop_app import describe, energy_text


def usage(**fields) -> dict:
    return {"time_left_s": 600, "core_hours": 0.01, "energy_kwh": 0.0012, "cost": 0.5, "currency": "EUR", **fields}


def test_energy_is_marked_by_its_source():
    assert "(collector, measured)" in energy_text(usage(energy_source="collector", energy_estimated=False))
    assert "(collector; CPU power estimated: no RAPL on the node)" in energy_text(
        usage(energy_source="collector", energy_estimated=True))
    assert "(collector's record, measured)" in energy_text(usage(energy_source="energy record",
                                                                 energy_estimated=False))
    before = energy_text(usage(energy_source="power profile", energy_estimated=True,
                               energy_note="estimated from the cluster's power profile: no output yet"))
    assert "1.20 Wh (estimated from the power profile: no collector output yet)" in before
    assert "title='estimated from the cluster&#x27;s power profile: no output yet'" in before
    assert "2.500 kWh (collector, measured)" in energy_text(usage(energy_source="collector", energy_kwh=2.5))


def test_the_line_escapes_what_the_api_says():
    line = describe({"id": "abcdef0123", "cluster": "<b>x</b>", "state": "RUNNING", "ready": True, "node": "n'1",
                     "end_reason": "", "reason": "", "usage": usage(energy_source="collector",
                                                                    energy_note="<script>", energy_estimated=False)})
    assert "<b>x</b>" not in line and "&lt;b&gt;x&lt;/b&gt;" in line and "<script>" not in line
    assert "heroes-desktop-energy" in line and "time left 10 min 00 s" in line
