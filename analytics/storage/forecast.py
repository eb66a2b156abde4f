"""Storage forecasts per PVC: Prometheus-exact predict_linear and a robust seasonal trend.

The entry points (`forecast_pvc`, `predict_linear`), the figures they give and how a method's
fit becomes days to each threshold. The fits are in `analytics.storage.methods`, the
statistics they rest on in `analytics.storage.statistics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from analytics.storage.methods import (
    MAX_LOOKBACK_DAYS,
    MIN_SAMPLES,
    MIN_SPAN_S,
    crossing,
    predict_linear_fit,
    robust_fit,
)
from analytics.storage.statistics import FloatArray, ols_band
from analytics.thresholds import STORAGE_ALERT, STORAGE_EXPAND

Method = Literal["auto", "predict_linear"]
Status = Literal["critical", "warning", "forecast", "ok", "insufficient_data"]

DAY_S = 86400.0
DEFAULT_PREDICT_LINEAR_WINDOW_S = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class PvcForecast:
    """One PVC's forecast as of a time: level, growth, days to 85/90/100 % and status."""

    used_bytes: float | None
    capacity_bytes: float | None
    used_ratio: float | None
    growth_bytes_per_day: float | None
    days_to_85: float | None
    days_to_90: float | None
    days_to_full: float | None
    days_to_90_low: float | None
    days_to_90_high: float | None
    method: str
    status: Status


def predict_linear(
    ts_s: np.ndarray,
    values: np.ndarray,
    eval_s: float,
    window_s: float,
    predict_s: float,
    *,
    at_s: float | None = None,
) -> float | None:
    """Prometheus 3.x predict_linear(v[window], predict_s) evaluated at eval_s: OLS over samples with eval_s - window_s < t <= eval_s, intercept at eval_s, value + slope*predict_s; None with < 2 samples."""  # noqa: E501
    fit = predict_linear_fit(ts_s, values, eval_s, window_s, at_s=at_s)
    if fit is None:
        return None
    slope, intercept = fit
    return slope * predict_s + intercept


# --- shared semantics ----------------------------------------------------------------------


def _status(used_ratio: float | None, days_to_90: float | None, horizon_s: float) -> Status:
    """critical ≥ 90 %, warning ≥ 85 %, forecast if 90 % falls within the horizon, else ok."""
    if used_ratio is None:
        return "insufficient_data"
    if used_ratio >= STORAGE_EXPAND:
        return "critical"
    if used_ratio >= STORAGE_ALERT:
        return "warning"
    if days_to_90 is not None and days_to_90 <= horizon_s / DAY_S:
        return "forecast"
    return "ok"


def _linear_days(level: float, growth_per_day: float, target: float) -> float | None:
    """Days until a straight line from `level` reaches `target`; 0 if there, None if never."""
    if level >= target:
        return 0.0
    if not growth_per_day > 0.0 or not math.isfinite(growth_per_day):
        return None
    return (target - level) / growth_per_day


def _clean_samples(
    ts_s: npt.ArrayLike, used: npt.ArrayLike, capacity: npt.ArrayLike, as_of_s: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Samples up to as_of with a finite used value, sorted, one per timestamp."""
    t = np.asarray(ts_s, dtype=np.float64)
    u = np.asarray(used, dtype=np.float64)
    c = np.asarray(capacity, dtype=np.float64)
    keep = np.isfinite(t) & np.isfinite(u) & (t <= as_of_s)
    t, u, c = t[keep], u[keep], c[keep]
    order = np.argsort(t, kind="stable")
    t, u, c = t[order], u[order], c[order]
    first = np.ones(t.shape, dtype=bool)
    first[1:] = t[1:] != t[:-1]
    return t[first], u[first], c[first]


def _last_capacity(c: FloatArray) -> float | None:
    """The latest positive capacity sample: thresholds are judged against today's size."""
    ok = np.flatnonzero(np.isfinite(c) & (c > 0))
    return float(c[ok[-1]]) if ok.size else None


def _no_trend(used: float | None, cap: float | None, method: str) -> PvcForecast:
    """No forecast possible: the current figures, and the thresholds already passed."""
    ratio = used / cap if used is not None and cap else None

    def passed(threshold: float) -> float | None:
        """0 days for a threshold already reached, else unknown."""
        return 0.0 if ratio is not None and ratio >= threshold else None

    # A volume already over 85 % or 90 % needs no trend to be a warning or critical.
    status: Status = "insufficient_data"
    if ratio is not None and ratio >= STORAGE_ALERT:
        status = _status(ratio, None, 0.0)
    return PvcForecast(
        used_bytes=used,
        capacity_bytes=cap,
        used_ratio=ratio,
        growth_bytes_per_day=None,
        days_to_85=passed(STORAGE_ALERT),
        days_to_90=passed(STORAGE_EXPAND),
        days_to_full=passed(1.0),
        days_to_90_low=passed(STORAGE_EXPAND),
        days_to_90_high=passed(STORAGE_EXPAND),
        method=method,
        status=status,
    )


def forecast_pvc(
    ts_s: np.ndarray,
    used: np.ndarray,
    capacity: np.ndarray,
    as_of_s: float,
    *,
    method: Method = "auto",
    window_s: float | None = None,
    horizon_s: float = 30 * 86400,
) -> PvcForecast:
    """Forecast one PVC from its samples (seconds, bytes), using only samples with t <= as_of_s."""
    t, u, c = _clean_samples(ts_s, used, capacity, as_of_s)
    name = "predict_linear" if method == "predict_linear" else "robust_trend"
    cap = _last_capacity(c)
    used_now = float(u[-1]) if u.size else None
    if cap is None or used_now is None:
        return _no_trend(used_now, cap, name)
    if method == "predict_linear":
        window = DEFAULT_PREDICT_LINEAR_WINDOW_S if window_s is None else window_s
        return _forecast_predict_linear(t, u, cap, as_of_s, window, horizon_s)
    return _forecast_robust(t, u, c, cap, as_of_s, window_s, horizon_s)


# --- the methods' forecasts ----------------------------------------------------------------


def _forecast_predict_linear(
    t: FloatArray, u: FloatArray, cap: float, as_of_s: float, window_s: float, horizon_s: float
) -> PvcForecast:
    """Days to thresholds along Prometheus's predict_linear line over the window."""
    used_now = float(u[-1])
    fit = predict_linear_fit(t, u, as_of_s, window_s)
    if fit is None or not all(math.isfinite(v) for v in fit):
        return _no_trend(used_now, cap, "predict_linear")
    slope, level = fit
    growth = slope * DAY_S
    targets = (STORAGE_ALERT, STORAGE_EXPAND, 1.0)
    days = {r: _days_from(used_now, level, growth, r * cap) for r in targets}
    in_window = (t > as_of_s - window_s) & (t <= as_of_s)
    half = ols_band(t[in_window], u[in_window]) * DAY_S
    low = _days_from(used_now, level, growth + half, STORAGE_EXPAND * cap)
    high = _days_from(used_now, level, growth - half, STORAGE_EXPAND * cap)
    if not math.isfinite(half) and used_now < STORAGE_EXPAND * cap:
        low = high = None
    return PvcForecast(
        used_bytes=used_now,
        capacity_bytes=cap,
        used_ratio=used_now / cap,
        growth_bytes_per_day=growth,
        days_to_85=days[STORAGE_ALERT],
        days_to_90=days[STORAGE_EXPAND],
        days_to_full=days[1.0],
        days_to_90_low=low,
        days_to_90_high=high,
        method="predict_linear",
        status=_status(used_now / cap, days[STORAGE_EXPAND], horizon_s),
    )


def _days_from(used_now: float, level: float, growth: float, target: float) -> float | None:
    """0 if the last sample is already at the target, else along the fitted line."""
    if used_now >= target:
        return 0.0
    return _linear_days(level, growth, target)


def _forecast_robust(
    t: FloatArray,
    u: FloatArray,
    c: FloatArray,
    cap: float,
    as_of_s: float,
    window_s: float | None,
    horizon_s: float,
) -> PvcForecast:
    """The default method: robust growth of the cycle peaks, judged against capacity now."""
    used_now = float(u[-1])
    longest = window_s if window_s is not None else MAX_LOOKBACK_DAYS * DAY_S
    keep = t > as_of_s - longest
    t, u, c = t[keep], u[keep], c[keep]
    if t.size < MIN_SAMPLES or as_of_s - t[0] < MIN_SPAN_S:
        return _no_trend(used_now, cap, "robust_trend")
    lookback = None if window_s is None else window_s / DAY_S
    fit = robust_fit((t - as_of_s) / DAY_S, u, c, cap, lookback)
    if fit is None:
        return _no_trend(used_now, cap, "robust_trend")
    growth, shape = fit

    def days(ratio: float, side: int = 0) -> float | None:
        """Days to ratio of capacity: 0 if the last sample is there already."""
        if used_now >= ratio * cap:
            return 0.0
        return crossing(growth, shape, ratio * cap, side)

    d90 = days(STORAGE_EXPAND)
    return PvcForecast(
        used_bytes=used_now,
        capacity_bytes=cap,
        used_ratio=used_now / cap,
        growth_bytes_per_day=growth.g,
        days_to_85=days(STORAGE_ALERT),
        days_to_90=d90,
        days_to_full=days(1.0),
        days_to_90_low=days(STORAGE_EXPAND, -1),
        days_to_90_high=days(STORAGE_EXPAND, 1),
        method="robust_trend",
        status=_status(used_now / cap, d90, horizon_s),
    )
