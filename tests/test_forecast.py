"""Storage forecasts: predict_linear against Prometheus's own test data, and the robust method."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.storage.forecast import PvcForecast, forecast_pvc, predict_linear

Curve = Callable[[np.ndarray], np.ndarray]
M = 60.0  # a minute, in seconds
DAY = 86400.0
GIB = 2.0**30

# --- Prometheus predict_linear, ported as data ----------------------------------------------
#
# Source: prometheus/prometheus, promql/promqltest/testdata/functions.test ("Tests for
# deriv() and predict_linear()"), commit 0043f1e496dc7b887505935035f8e2ba0c3555e4.
# `load 5m` series, expanded: "0+10x4 0+10x5" is 0 10 20 30 40 0 10 20 30 40 50 at 0, 5m, ...
LOAD_5M = np.arange(13) * 5 * M
SERIES = {
    "testcounter_reset_middle_total": [0, 10, 20, 30, 40, 0, 10, 20, 30, 40, 50],
    'http_requests_total{job="app-server", instance="1", group="canary"}': [
        80.0 * i for i in range(11)
    ],
    # "0+10x4 0+10x5 {{histogram}} {{histogram}}": predict_linear ignores the histogram
    # samples (with an info annotation), so the floats alone give Prometheus's answer.
    "testcounter_reset_middle_mix": [0, 10, 20, 30, 40, 0, 10, 20, 30, 40, 50],
    'http_requests_inf{job="app-server", instance="1", group="canary"}': [
        -math.inf,
        *[80.0 * i for i in range(11)],
        math.inf,
    ],
}
# (series, eval time, range, @ time or None, predict seconds, expected value)
PROMETHEUS_CASES = [
    # eval instant at 50m predict_linear(testcounter_reset_middle_total[50m], 3600) -> 70
    ("testcounter_reset_middle_total", 50 * M, 50 * M, None, 3600.0, 70.0),
    # ... [50m], 1h) -> 70
    ("testcounter_reset_middle_total", 50 * M, 50 * M, None, 3600.0, 70.0),
    # eval instant at 50m predict_linear(testcounter_reset_middle_total[55m] @ 3000, 3600)
    ("testcounter_reset_middle_total", 50 * M, 55 * M, 3000.0, 3600.0, 76.81818181818181),
    # eval instant at 10m ... [55m] @ 3000, 3600): the intercept is at the evaluation time
    ("testcounter_reset_middle_total", 10 * M, 55 * M, 3000.0, 3600.0, 51.36363636363637),
    # eval instant at 70m ... [55m] @ 3000, 3600)
    ("testcounter_reset_middle_total", 70 * M, 55 * M, 3000.0, 3600.0, 89.54545454545455),
    # eval instant at 60m predict_linear(testcounter_reset_middle_mix[60m], 3000) -> 70
    ("testcounter_reset_middle_mix", 60 * M, 60 * M, None, 3000.0, 70.0),
    # eval instant at 60m predict_linear(testcounter_reset_middle_mix[60m], 50m) -> 70
    ("testcounter_reset_middle_mix", 60 * M, 60 * M, None, 50 * M, 70.0),
    # eval instant at 100m predict_linear(http_requests_inf[100m], 6000) -> NaN
    (
        'http_requests_inf{job="app-server", instance="1", group="canary"}',
        100 * M,
        100 * M,
        None,
        6000.0,
        math.nan,
    ),
]


def _series(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A loaded series as (timestamps in seconds, values)."""
    values = np.asarray(SERIES[name], dtype=np.float64)
    return LOAD_5M[: values.size], values


@pytest.mark.parametrize(("name", "at", "window", "at_s", "predict", "expected"), PROMETHEUS_CASES)
def test_predict_linear_matches_prometheus(
    name: str, at: float, window: float, at_s: float | None, predict: float, expected: float
) -> None:
    ts, values = _series(name)
    got = predict_linear(ts, values, at, window, predict, at_s=at_s)
    assert got is not None
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-9, abs=0.0)


def test_predict_linear_equals_last_value_plus_deriv_when_the_last_sample_is_on_the_line() -> None:
    # eval instant at 50m predict_linear(http_requests_total[50m], 3600)
    #   - (http_requests_total + deriv(http_requests_total[50m]) * 3600)  -> 0
    # and eval instant at 50m deriv(http_requests_total[50m]) -> 0.26666666666666666
    ts, values = _series('http_requests_total{job="app-server", instance="1", group="canary"}')
    now = predict_linear(ts, values, 50 * M, 50 * M, 0.0)
    later = predict_linear(ts, values, 50 * M, 50 * M, 3600.0)
    assert now is not None and later is not None
    assert later - (values[10] + 0.26666666666666666 * 3600) == pytest.approx(0.0, abs=1e-9)
    assert (later - now) / 3600 == pytest.approx(0.26666666666666666, rel=1e-9)


def test_predict_linear_slope_matches_prometheus_deriv() -> None:
    # eval instant at 50m deriv(testcounter_reset_middle_total[100m]) -> 0.010606060606060607
    # (the test file's worked example: slope 0.010606060606060607, intercept at t=0
    # 6.818181818181818, at t=3000 38.63636363636364)
    ts, values = _series("testcounter_reset_middle_total")
    at0 = predict_linear(ts, values, 0.0, 100 * M, 0.0, at_s=50 * M)
    at3000 = predict_linear(ts, values, 3000.0, 100 * M, 0.0, at_s=50 * M)
    assert at0 is not None and at3000 is not None
    assert at0 == pytest.approx(6.818181818181818, rel=1e-9)
    assert at3000 == pytest.approx(38.63636363636364, rel=1e-9)
    assert (at3000 - at0) / 3000 == pytest.approx(0.010606060606060607, rel=1e-9)


def test_predict_linear_window_is_left_open() -> None:
    # [50m] at 50m leaves out the sample at 0 (Prometheus 3.x); [55m] takes it in.
    ts, values = _series("testcounter_reset_middle_total")
    assert predict_linear(ts, values, 50 * M, 50 * M, 3600) == 70.0
    assert predict_linear(ts, values, 50 * M, 55 * M, 3600) == pytest.approx(76.81818181818181)
    assert predict_linear(ts, values, 50 * M, 50 * M - 1, 3600) == 70.0


def test_predict_linear_needs_two_samples() -> None:
    ts, values = _series("testcounter_reset_middle_total")
    assert predict_linear(ts, values, 50 * M, 5 * M, 3600) is None  # only the sample at 50m
    assert predict_linear(ts[:0], values[:0], 50 * M, 50 * M, 3600) is None


def test_predict_linear_returns_a_constant_exactly() -> None:
    # Prometheus short-cuts constant samples to slope 0 and the value itself: no rounding.
    ts = np.arange(100) * 15.0 + 1.7e9
    values = np.full(ts.size, 0.1)
    assert predict_linear(ts, values, ts[-1], 3600.0, 86400.0) == 0.1


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=3, max_value=200),
    step=st.floats(min_value=1.0, max_value=600.0),
    slope=st.floats(min_value=-1e3, max_value=1e3),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_predict_linear_is_least_squares(n: int, step: float, slope: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ts = 1.7e9 + np.round(np.arange(n) * step * 1000.0) / 1000.0
    values = 5e10 + slope * (ts - ts[0]) + 1e6 * rng.standard_normal(n)
    at = float(ts[-1])
    got = predict_linear(ts, values, at, float(ts[-1] - ts[0]) + 1.0, 3600.0)
    # Prometheus works in integer milliseconds; so must the oracle, or the float error of
    # `ts` near 1.7e9 (~1e-7 s) times the slope, extrapolated an hour, swamps the comparison.
    x = (np.round(ts * 1000.0) - round(at * 1000.0)) / 1000.0
    fit = np.polyfit(x, values, 1)
    assert got == pytest.approx(fit[1] + fit[0] * 3600.0, rel=1e-9)


# --- the robust default ----------------------------------------------------------------------


def _trace(
    days: float,
    used: Curve,  # bytes as a function of days
    cap: float = 100 * GIB,
    noise: float = 0.0,
    seed: int = 0,
    step: float = 300.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """5-minute samples of used(day) plus noise, and a constant capacity."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, days * DAY, step)
    u = used(t / DAY) + noise * cap * rng.standard_normal(t.size)
    return t, u, np.full(t.size, cap)


def _linear(start: float, per_day: float, cap: float = 100 * GIB) -> Curve:
    return lambda d: np.asarray(cap * (start + per_day * d))


def _days_to_90(f: PvcForecast) -> float:
    assert f.days_to_90 is not None
    return f.days_to_90


def test_linear_growth_is_forecast_to_the_day() -> None:
    t, u, c = _trace(10, _linear(0.40, 0.01), noise=0.002)
    f = forecast_pvc(t, u, c, t[-1])
    truth = (0.90 - 0.40 - 0.01 * t[-1] / DAY) / 0.01
    assert _days_to_90(f) == pytest.approx(truth, abs=0.5)
    assert f.days_to_85 == pytest.approx(truth - 5, abs=0.5)
    assert f.days_to_full == pytest.approx(truth + 10, abs=1.0)
    assert f.growth_bytes_per_day == pytest.approx(0.01 * 100 * GIB, rel=0.02)
    assert f.method == "robust_trend"
    assert f.status == "ok" and truth > 30


def test_status_is_forecast_when_90_percent_falls_within_the_horizon() -> None:
    t, u, c = _trace(10, _linear(0.40, 0.01), noise=0.002)
    assert forecast_pvc(t, u, c, t[-1], horizon_s=45 * DAY).status == "forecast"
    assert forecast_pvc(t, u, c, t[-1], horizon_s=30 * DAY).status == "ok"


def test_as_of_ignores_later_samples() -> None:
    t, u, c = _trace(14, _linear(0.40, 0.01), noise=0.003, seed=4)
    as_of = t[2000]
    full = forecast_pvc(t, u, c, as_of)
    assert full == forecast_pvc(t[:2001], u[:2001], c[:2001], as_of)
    # A wild future (a clean-up, a resize) must not leak into the past.
    u2, c2 = u.copy(), c.copy()
    u2[2001:] *= 0.2
    c2[2001:] *= 3
    assert full == forecast_pvc(t, u2, c2, as_of)
    assert full.used_bytes == u[2000]


def test_a_resize_keeps_growth_in_bytes_and_judges_against_the_new_capacity() -> None:
    # 100 GiB grown to 200 GiB at day 6; "used" steps up by 1.6 GiB (ext4 inode tables).
    t, u, _ = _trace(10, lambda d: GIB * (60 + 3 * d), noise=0.001)
    resized = t >= 6 * DAY
    u = u + 1.6 * GIB * resized
    c = np.where(resized, 200 * GIB, 100 * GIB)
    f = forecast_pvc(t, u, c, t[-1])
    assert f.capacity_bytes == 200 * GIB
    assert f.growth_bytes_per_day == pytest.approx(3 * GIB, rel=0.03)
    used_now = 60 + 3 * t[-1] / DAY + 1.6
    assert _days_to_90(f) == pytest.approx((180 - used_now) / 3, abs=0.5)
    # A ratio-based line would see the resize as a fall and never reach 90 %.
    ratio = u / c
    assert (predict_linear(t, ratio, t[-1], 7 * DAY, DAY) or 0) < ratio[-1]


def _sawtooth(d: np.ndarray) -> np.ndarray:
    """Base growth 1 %/day; logs grow 6 %/day and are rotated away daily at 03:00."""
    return 0.40 + 0.01 * d + 0.06 * np.mod(d - 0.125, 1.0)


def test_a_rotation_sawtooth_is_judged_by_its_peaks() -> None:
    cap = 100 * GIB
    t, u, c = _trace(14, lambda d: cap * _sawtooth(d), noise=0.001)
    as_of = t[-1]
    f = forecast_pvc(t, u, c, as_of)
    future = as_of + np.arange(60.0, 80 * DAY, 60.0)
    truth = (future[np.argmax(_sawtooth(future / DAY) >= 0.9)] - as_of) / DAY
    assert _days_to_90(f) == pytest.approx(truth, abs=0.3)
    assert f.growth_bytes_per_day == pytest.approx(0.01 * cap, rel=0.03)
    # A least-squares line follows the mean of the sawtooth and is days late.
    pl = forecast_pvc(t, u, c, as_of, method="predict_linear", window_s=7 * DAY)
    assert pl.days_to_90 is not None and pl.days_to_90 > truth + 1


def test_weekly_compaction_uses_whole_weeks() -> None:
    cap = 100 * GIB

    def weekly(d: np.ndarray) -> np.ndarray:
        return cap * (0.30 + 0.005 * d + 0.10 * np.mod(d - 2.3, 7.0) / 7.0)

    t, u, c = _trace(30, weekly, noise=0.001)
    f = forecast_pvc(t, u, c, t[-1])
    assert f.growth_bytes_per_day == pytest.approx(0.005 * cap, rel=0.05)
    future = t[-1] + np.arange(60.0, 120 * DAY, 60.0)
    truth = (future[np.argmax(weekly(future / DAY) >= 0.9 * cap)] - t[-1]) / DAY
    assert _days_to_90(f) == pytest.approx(truth, abs=1.0)


def test_a_one_off_clean_up_does_not_turn_growth_negative() -> None:
    cap = 100 * GIB
    t, u, c = _trace(10, lambda d: cap * (0.50 + 0.01 * d - 0.15 * (d >= 7.5)), noise=0.002)
    f = forecast_pvc(t, u, c, t[-1])
    assert f.growth_bytes_per_day == pytest.approx(0.01 * cap, rel=0.05)
    level = 0.50 + 0.01 * t[-1] / DAY - 0.15
    assert _days_to_90(f) == pytest.approx((0.90 - level) / 0.01, abs=1.0)


def test_daily_seasonality_is_judged_by_its_daily_high() -> None:
    cap = 100 * GIB

    def swing(d: np.ndarray) -> np.ndarray:
        return cap * (0.40 + 0.01 * d + 0.03 * np.sin(2 * np.pi * d))

    t, u, c = _trace(14, swing, noise=0.002)
    f = forecast_pvc(t, u, c, t[-1])
    future = t[-1] + np.arange(60.0, 80 * DAY, 60.0)
    truth = (future[np.argmax(swing(future / DAY) >= 0.9 * cap)] - t[-1]) / DAY
    assert _days_to_90(f) == pytest.approx(truth, abs=0.3)


def test_accelerating_growth_is_extrapolated_as_such() -> None:
    cap = 100 * GIB

    def quadratic(d: np.ndarray) -> np.ndarray:
        return np.asarray(cap * (0.30 + 0.002 * d + 0.0004 * d * d))

    t, u, c = _trace(14, quadratic, noise=0.001)
    f = forecast_pvc(t, u, c, t[-1])
    future = t[-1] + np.arange(60.0, 200 * DAY, 60.0)
    truth = (future[np.argmax(quadratic(future / DAY) >= 0.9 * cap)] - t[-1]) / DAY
    assert _days_to_90(f) == pytest.approx(truth, rel=0.05)
    straight = forecast_pvc(t, u, c, t[-1], method="predict_linear", window_s=7 * DAY)
    assert straight.days_to_90 is not None and straight.days_to_90 > truth * 1.3


def test_gaps_and_spikes_do_not_move_the_forecast() -> None:
    t, u, c = _trace(10, _linear(0.40, 0.01), noise=0.002, seed=7)
    clean = forecast_pvc(t, u, c, t[-1])
    rng = np.random.default_rng(1)
    hours = np.floor(t / 3600).astype(int)
    keep = ~(rng.random(hours.max() + 1) < 0.2)[hours] | (t == t[-1])
    spiky = u + (rng.random(t.size) < 0.003) * 0.05 * c
    f = forecast_pvc(t[keep], spiky[keep], c[keep], t[-1])
    assert _days_to_90(f) == pytest.approx(_days_to_90(clean), abs=0.5)


def test_too_little_data_is_insufficient_but_reports_what_it_has() -> None:
    t, u, c = _trace(0.1, _linear(0.40, 0.01))  # 2.4 hours
    f = forecast_pvc(t, u, c, t[-1])
    assert f.status == "insufficient_data"
    assert f.days_to_85 is None and f.days_to_90 is None and f.days_to_full is None
    assert f.growth_bytes_per_day is None
    assert f.used_bytes == u[-1] and f.capacity_bytes == c[-1]
    assert f.used_ratio == pytest.approx(u[-1] / c[-1])


def test_a_volume_not_seen_for_two_weeks_has_no_trend_but_reports_its_last_figures() -> None:
    t, u, c = _trace(10, _linear(0.40, 0.01))
    f = forecast_pvc(t, u, c, t[-1] + 20 * DAY)  # its samples stopped 20 days ago
    assert f.status == "insufficient_data" and f.growth_bytes_per_day is None
    assert f.days_to_90 is None and f.days_to_90_low is None
    assert f.used_bytes == u[-1] and f.capacity_bytes == c[-1]
    assert forecast_pvc(t, u, c, t[-1] + 13 * DAY).days_to_90 is not None


def test_no_samples_at_all() -> None:
    t, u, c = _trace(1, _linear(0.40, 0.01))
    f = forecast_pvc(t, u, c, t[0] - 1.0)
    assert f == PvcForecast(None, None, None, None, None, None, None, None, None, "robust_trend",
                            "insufficient_data")  # fmt: skip


def test_already_over_90_percent_is_critical_even_without_a_trend() -> None:
    t, u, c = _trace(0.1, _linear(0.95, 0.0))
    f = forecast_pvc(t, u, c, t[-1])
    assert f.status == "critical" and f.days_to_90 == 0.0 and f.days_to_85 == 0.0
    assert f.days_to_full is None


@pytest.mark.parametrize("method", ["auto", "predict_linear"])
def test_above_90_percent_is_critical_with_zero_days(method: str) -> None:
    t, u, c = _trace(10, _linear(0.85, 0.01), noise=0.001)
    f = forecast_pvc(t, u, c, t[-1], method=method)  # type: ignore[arg-type]
    assert f.used_ratio is not None and f.used_ratio > 0.9
    assert f.status == "critical"
    assert f.days_to_90 == 0.0 and f.days_to_85 == 0.0
    assert f.days_to_90_low == 0.0 and f.days_to_90_high == 0.0
    assert f.days_to_full is not None and f.days_to_full > 0


def test_between_85_and_90_percent_is_a_warning() -> None:
    t, u, c = _trace(10, _linear(0.78, 0.0075), noise=0.001)
    f = forecast_pvc(t, u, c, t[-1])
    assert f.used_ratio == pytest.approx(0.855, abs=0.01)
    assert f.status == "warning" and f.days_to_85 == 0.0
    assert _days_to_90(f) == pytest.approx(6.0, abs=0.3)


@pytest.mark.parametrize("noise", [0.0, 0.005])
def test_a_flat_volume_never_fills(noise: float) -> None:
    t, u, c = _trace(10, _linear(0.50, 0.0), noise=noise)
    f = forecast_pvc(t, u, c, t[-1])
    assert f.status == "ok"
    assert f.days_to_90 is None or f.days_to_90 > 365
    assert f.days_to_full is None or f.days_to_full > 365
    assert f.growth_bytes_per_day == pytest.approx(0.0, abs=0.0005 * 100 * GIB)


def test_a_shrinking_volume_never_fills() -> None:
    t, u, c = _trace(10, _linear(0.60, -0.01), noise=0.001)
    f = forecast_pvc(t, u, c, t[-1])
    assert f.days_to_90 is None and f.days_to_85 is None and f.days_to_full is None
    assert f.status == "ok"


@pytest.mark.parametrize(
    "used",
    [
        _linear(0.40, 0.01),
        lambda d: 100 * GIB * _sawtooth(d),
        lambda d: 100 * GIB * (0.3 + 0.001 * d * d),
        lambda d: 100 * GIB * (0.5 + 0.02 * np.sin(2 * np.pi * d) + 0.004 * d),
    ],
)
@pytest.mark.parametrize("days", [0.5, 2, 9])
def test_the_interval_brackets_the_forecast(used: Curve, days: float) -> None:
    t, u, c = _trace(days, used, noise=0.003, seed=int(days * 10))
    f = forecast_pvc(t, u, c, t[-1])
    assert f.days_to_90 is not None and f.days_to_90_low is not None
    assert f.days_to_90_low <= f.days_to_90
    assert f.days_to_90_high is None or f.days_to_90 <= f.days_to_90_high


def test_predict_linear_method_follows_prometheus() -> None:
    t, u, c = _trace(3, _linear(0.40, 0.01), noise=0.002, seed=3)
    as_of = t[-1] - 100.0
    f = forecast_pvc(t, u, c, as_of, method="predict_linear")  # 6 h window by default
    level = predict_linear(t, u, as_of, 6 * 3600, 0.0)
    day_later = predict_linear(t, u, as_of, 6 * 3600, DAY)
    assert level is not None and day_later is not None
    assert f.method == "predict_linear"
    assert f.growth_bytes_per_day == pytest.approx(day_later - level, rel=1e-9)
    assert f.days_to_90 == pytest.approx((0.9 * c[-1] - level) / (day_later - level), rel=1e-9)
    low, mid, high = f.days_to_90_low, f.days_to_90, f.days_to_90_high
    assert low is not None and mid is not None and high is not None
    assert low <= mid <= high


def test_capacity_gaps_use_the_latest_known_capacity() -> None:
    t, u, c = _trace(5, _linear(0.40, 0.01), noise=0.001)
    c = c.copy()
    c[-50:] = np.nan
    u = u.copy()
    u[-3] = np.nan
    f = forecast_pvc(t, u, c, t[-1])
    assert f.capacity_bytes == 100 * GIB
    assert f.used_bytes == u[-1]
