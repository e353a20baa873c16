"""Progress bars: plain lines where stderr is not a terminal (a line per tenth, or per status change), tqdm
when asked, the caller's function, or nothing."""
from __future__ import annotations

import io

from heroes_sdk.progress import CallbackBar, NoBar, PlainBar, TqdmBar, make_bar


def test_plain_lines_per_tenth_and_per_status():
    out = io.StringIO()
    bar = PlainBar(total=10 * 1024 * 1024, desc="upload big.bin", unit="B", stream=out)
    for _ in range(10):
        bar.update(1024 * 1024)
    lines = out.getvalue().splitlines()
    assert lines[0] == "upload big.bin:  10% 1.0 MiB of 10.0 MiB" and lines[-1].endswith("100% 10.0 MiB of 10.0 MiB")
    assert len(lines) == 10
    out = io.StringIO()
    steps = PlainBar(total=2, desc="heat", unit="step", stream=out)
    steps.update(0, "QUEUED | a=PENDING b=NEW")
    steps.update(0, "QUEUED | a=PENDING b=NEW")  # unchanged: no new line
    steps.update(1, "RUNNING | a=COMPLETED b=RUNNING")
    assert out.getvalue().splitlines() == ["heat:   0% 0 of 2 | QUEUED | a=PENDING b=NEW",
                                           "heat:  50% 1 of 2 | RUNNING | a=COMPLETED b=RUNNING"]


def test_the_bar_that_progress_asks_for(capsys):
    assert isinstance(make_bar(False, 10, "x"), NoBar) and isinstance(make_bar(None, 10, "x"), NoBar)
    assert isinstance(make_bar("plain", 10, "x"), PlainBar)
    assert isinstance(make_bar(True, 10, "x"), PlainBar)  # pytest's stderr is no terminal
    seen = []
    bar = make_bar(lambda done, total, status: seen.append((done, total, status)), 10, "x")
    assert isinstance(bar, CallbackBar)
    bar.update(4, "s")
    assert seen == [(4, 10, "s")]
    bar = make_bar("tqdm", 10, "x", unit="step")
    assert isinstance(bar, TqdmBar)
    bar.update(10, "done")
    bar.close()
    assert "10/10" in capsys.readouterr().err
