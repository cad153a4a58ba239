"""The saturation warning: sustained event-loop lag only, not a single stall."""

from chaospika.loadengine.progress import (
    LAG_LIMIT_MS,
    LagMonitor,
    ProgressMeter,
    Totals,
)


def second_of(monitor: LagMonitor, lags_ms: list[float]) -> None:
    for lag in lags_ms:
        monitor.add(lag)
    monitor.close_second()


def test_one_stall_at_the_start_is_not_saturation():
    monitor = LagMonitor()
    second_of(monitor, [150.0] + [1.0] * 16)  # 10,000 VUs started in one go
    assert monitor.p95_ms() == 150.0  # the live view shows it
    for _ in range(4):
        second_of(monitor, [1.0] * 20)
    assert monitor.worst_p95_ms == 1.0
    assert monitor.sustained_p95_ms == 1.0


def test_a_loop_kept_busy_is_saturation():
    monitor = LagMonitor()
    second_of(monitor, [1.0] * 20)
    second_of(monitor, [40.0] * 14)
    assert monitor.worst_p95_ms == 1.0  # one bad second is not enough
    second_of(monitor, [45.0] * 14)
    assert monitor.sustained_p95_ms == 40.0
    assert monitor.worst_p95_ms == 40.0 > LAG_LIMIT_MS


def test_closing_a_second_without_new_lags_changes_nothing():
    monitor = LagMonitor()
    second_of(monitor, [30.0] * 10)
    monitor.close_second()  # e.g. the run's end right after a tick
    assert monitor.worst_p95_ms == 0.0


def test_progress_warns_on_sustained_lag_only():
    meter = ProgressMeter()
    spike = meter.report(1.0, Totals(lag_p95_ms=150.0, lag_sustained_ms=1.0))
    assert spike["warning"] is None and spike["loop_lag_p95_ms"] == 150.0
    busy = meter.report(2.0, Totals(lag_p95_ms=45.0, lag_sustained_ms=40.0))
    assert "saturated" in busy["warning"] and "40.0 ms" in busy["warning"]


def test_totals_of_processes_keep_the_worst_lags():
    totals = Totals(lag_p95_ms=5.0, lag_sustained_ms=30.0)
    totals.add(Totals(lag_p95_ms=50.0, lag_sustained_ms=2.0))
    assert (totals.lag_p95_ms, totals.lag_sustained_ms) == (50.0, 30.0)
