"""Per-host progress: speed and ETA only once sending has settled."""
from __future__ import annotations

import time

import pytest

from deployer.ship import progress
from deployer.ship.progress import SETTLE_S, HostProgress, NullReporter


def test_no_speed_or_eta_in_the_first_second_then_the_average() -> None:
    p = HostProgress(total=100_000_000, sent=50, send_started=time.monotonic())
    assert p.speed() == 0.0 and p.eta() is None  # a tiny first blob must not promise hours
    p.send_started = time.monotonic() - 2 * SETTLE_S
    p.sent = 20_000_000
    assert 9_000_000 < p.speed() < 10_000_001
    eta = p.eta()
    assert eta is not None and 7.9 < eta < 8.1
    p.sent = p.total
    assert p.eta() is None


def test_an_estimated_total_never_shows_below_what_is_sent() -> None:
    assert HostProgress().amount() == ""
    p = HostProgress(total=1_500_000, sent=1_100_000)
    assert p.amount() == "1.1 MB/1.5 MB"
    p.sent = 2_100_000  # the estimate took the rest to compress as well as the first layer did
    assert p.amount() == "2.1 MB/2.1 MB" and p.eta() is None


def test_plain_lines_name_a_failure_once() -> None:
    import io

    from deployer.ship.progress import PlainReporter

    out = io.StringIO()
    reporter = PlainReporter(out)
    reporter.phase("gpu01", "sending", "layer 1/2")
    reporter.done("gpu01", False, "pushing r:5000/x:1 failed: no basic auth credentials")
    reporter.done("gpu02", True, "tarball: 2/2 layers")
    lines = out.getvalue().splitlines()
    assert lines[-2] == "gpu01: failed: pushing r:5000/x:1 failed: no basic auth credentials"
    assert lines[-1] == "gpu02: done tarball: 2/2 layers"


def test_time_per_phase_adds_up_repeats_and_counts_the_open_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    r = NullReporter()
    r.phase("gpu01", "connecting")  # from "waiting", which is not counted
    for phase, dt in (("checking", 0.5), ("sending", 0.25), ("loading", 2.0), ("sending", 1.0), ("verifying", 0.5)):
        now[0] += dt
        r.phase("gpu01", phase, "layer 2/2")
    now[0] += 0.75
    assert r.timings("gpu01") == (("connecting", 0.5), ("checking", 0.25), ("sending", 2.5), ("loading", 1.0),
                                  ("verifying", 0.75))  # the open phase counts up to now
    r.phase("gpu01", "verifying", "the same phase again: its clock goes on")
    now[0] += 0.25
    r.done("gpu01", True, "ok")
    now[0] += 10  # done: nothing adds up any more
    assert r.timings("gpu01")[-1] == ("verifying", 1.0)
