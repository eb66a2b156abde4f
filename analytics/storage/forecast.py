"""Storage forecasts per PVC: Prometheus-exact predict_linear and a robust seasonal trend."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Method = Literal["auto", "predict_linear"]
Status = Literal["critical", "warning", "forecast", "ok", "insufficient_data"]
FloatArray = npt.NDArray[np.float64]

DAY_S = 86400.0
ALERT_RATIO = 0.85  # BRIEF.md "Capacity": storage alert at 85 %
EXPAND_RATIO = 0.90  # ... and expand at 90 %
DEFAULT_PREDICT_LINEAR_WINDOW_S = 6 * 3600.0

# The robust method refuses to guess from less than this: a few hours of a volume that
# rotates daily say nothing about its daily peak.
MIN_SPAN_S = 6 * 3600.0
MIN_SAMPLES = 12
# Growth is estimated over this much history: long enough for several daily cycles, short
# enough to follow a change of pace; a longer cycle (weekly compaction) gets LOOKBACK_CYCLES.
LOOKBACK_DAYS = 14.0
LOOKBACK_CYCLES = 4
MAX_LOOKBACK_DAYS = 8 * 7.0
# Growth is fitted on means over cells of one phase bin in one cycle (CELL_BIN_DAYS); the
# shape of the latest cycles is kept at a finer resolution (PROFILE_BIN_DAYS) because the
# first crossing happens at its peaks, and a coarse bin's median sits below a sawtooth peak.
CELL_BIN_DAYS = 1.0 / 48.0
PROFILE_BIN_DAYS = 1.0 / 144.0
PROFILE_CYCLES = 3
# A phase profile whose spread between bins is under SHAPE_F times what noise explains is
# treated as flat (loosely an F-test).
SHAPE_F = 1.5
# A drop is a fall of the median level across DROP_WINDOW samples on either side by more
# than DROP_SIGMAS times what noise alone would move it.
DROP_WINDOW = 6
DROP_SIGMAS = 8.0
# Acceleration is used only when significant at this one-sided level (Student t over the
# cycles of history), and only with at least ACCEL_MIN_CYCLES cycles.
ACCEL_P = 0.99
ACCEL_MIN_CYCLES = 4
# The 80 % band of the robust method is statistical (cluster-robust standard errors with
# Student t quantiles) plus two floors: model error of MODEL_REL of the projected growth,
# and never narrower than BAND_FLOOR_DAYS either side (the profile's resolution). MODEL_REL
# was set on the benchmark's seed 1-3 trace sets (mean coverage 0.81); its figures are
# reported on seed 0 (docs/forecast-notes.md).
MODEL_REL = 0.005
BAND_FLOOR_DAYS = 0.5 * PROFILE_BIN_DAYS


def _z_quantile(p: float) -> float:
    """Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = (-39.69683028665376, 220.9460984245205, -275.9285104469687,
         138.3577518672690, -30.66479806614716, 2.506628277459239)  # fmt: skip
    b = (-54.47609879822406, 161.5858368580409, -155.6989798598866,
         66.80131188771972, -13.28068155288572)  # fmt: skip
    c = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838,
         -2.549732539343734, 4.374664141464968, 2.938163982698783)  # fmt: skip
    d = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    if p < 0.02425 or p > 1 - 0.02425:
        q = math.sqrt(-2 * math.log(min(p, 1 - p)))
        num = ((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]
        x = num / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        return x if p < 0.5 else -x
    q = p - 0.5
    r = q * q
    num = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
    return num / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def _t_quantile(p: float, dof: float) -> float:
    """Student t quantile (no scipy): exact up to 2 degrees of freedom, else Cornish–Fisher."""
    # Abramowitz & Stegun 26.7.5; within ~1e-3 from 3 degrees of freedom on.
    if dof <= 1.0:
        return math.tan(math.pi * (p - 0.5))
    if dof <= 2.0:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    if math.isinf(dof):
        return _z_quantile(p)
    z = _z_quantile(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3 + g4 / dof**4


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


# --- Prometheus predict_linear -------------------------------------------------------------


def _kahan_inc(inc: float, total: float, comp: float) -> tuple[float, float]:
    """Kahan–Neumaier step as Prometheus's util/kahansum.Inc does it, bit for bit."""
    new_total = total + inc
    if math.isinf(new_total):
        comp = 0.0
    elif abs(total) >= abs(inc):
        comp += (total - new_total) + inc
    else:
        comp += (inc - new_total) + total
    return new_total, comp


def _go_div(num: float, den: float) -> float:
    """IEEE division as Go does it for float64: x/0 is ±Inf or NaN, never an exception."""
    if den != 0.0:
        return num / den
    if num == 0.0 or math.isnan(num):
        return math.nan
    return math.copysign(math.inf, num) * math.copysign(1.0, den)


def _linear_regression(
    t_ms: list[int], values: list[float], intercept_ms: int
) -> tuple[float, float]:
    """OLS slope (per second) and intercept at intercept_ms, as promql linearRegression."""
    n = sum_x = c_x = sum_y = c_y = sum_xy = c_xy = sum_x2 = c_x2 = 0.0
    init_y = values[0]
    const_y = True
    for i, (tm, f) in enumerate(zip(t_ms, values, strict=True)):
        if const_y and i > 0 and f != init_y:
            const_y = False
        n += 1.0
        x = float(tm - intercept_ms) / 1e3
        sum_x, c_x = _kahan_inc(x, sum_x, c_x)
        sum_y, c_y = _kahan_inc(f, sum_y, c_y)
        sum_xy, c_xy = _kahan_inc(x * f, sum_xy, c_xy)
        sum_x2, c_x2 = _kahan_inc(x * x, sum_x2, c_x2)
    if const_y:
        # Prometheus returns the constant exactly instead of risking rounding noise.
        if math.isinf(init_y):
            return math.nan, math.nan
        return 0.0, init_y
    sum_x += c_x
    sum_y += c_y
    sum_xy += c_xy
    sum_x2 += c_x2
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    slope = _go_div(cov_xy, var_x)
    intercept = sum_y / n - slope * sum_x / n
    return slope, intercept


def _to_ms(seconds: float) -> int:
    """Seconds to Prometheus's integer milliseconds."""
    return round(seconds * 1000.0)


def _window_samples(
    ts_s: npt.ArrayLike, values: npt.ArrayLike, end_ms: int, window_ms: int
) -> tuple[list[int], list[float]]:
    """Samples with end - window < t <= end (left-open, as Prometheus 3.x), oldest first."""
    t_ms = np.rint(np.asarray(ts_s, dtype=np.float64) * 1000.0).astype(np.int64)
    vals = np.asarray(values, dtype=np.float64)
    order = np.argsort(t_ms, kind="stable")
    t_ms, vals = t_ms[order], vals[order]
    # The TSDB keeps the first sample of a timestamp and rejects later duplicates.
    first = np.ones(t_ms.shape, dtype=bool)
    first[1:] = t_ms[1:] != t_ms[:-1]
    keep = first & (t_ms > end_ms - window_ms) & (t_ms <= end_ms)
    return [int(v) for v in t_ms[keep]], [float(v) for v in vals[keep]]


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
    fit = _predict_linear_fit(ts_s, values, eval_s, window_s, at_s=at_s)
    if fit is None:
        return None
    slope, intercept = fit
    return slope * predict_s + intercept


def _predict_linear_fit(
    ts_s: npt.ArrayLike,
    values: npt.ArrayLike,
    eval_s: float,
    window_s: float,
    *,
    at_s: float | None = None,
) -> tuple[float, float] | None:
    """(slope per second, value at eval_s) of predict_linear; `at_s` is the @ modifier."""
    eval_ms = _to_ms(eval_s)
    end_ms = eval_ms if at_s is None else _to_ms(at_s)
    t_ms, vals = _window_samples(ts_s, values, end_ms, _to_ms(window_s))
    if len(t_ms) < 2:
        return None
    return _linear_regression(t_ms, vals, eval_ms)


# --- shared semantics ----------------------------------------------------------------------


def _status(used_ratio: float | None, days_to_90: float | None, horizon_s: float) -> Status:
    """critical ≥ 90 %, warning ≥ 85 %, forecast if 90 % falls within the horizon, else ok."""
    if used_ratio is None:
        return "insufficient_data"
    if used_ratio >= EXPAND_RATIO:
        return "critical"
    if used_ratio >= ALERT_RATIO:
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
    if ratio is not None and ratio >= ALERT_RATIO:
        status = _status(ratio, None, 0.0)
    return PvcForecast(
        used_bytes=used,
        capacity_bytes=cap,
        used_ratio=ratio,
        growth_bytes_per_day=None,
        days_to_85=passed(ALERT_RATIO),
        days_to_90=passed(EXPAND_RATIO),
        days_to_full=passed(1.0),
        days_to_90_low=passed(EXPAND_RATIO),
        days_to_90_high=passed(EXPAND_RATIO),
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


# --- method predict_linear -----------------------------------------------------------------


def _ols_band(t: FloatArray, u: FloatArray) -> float:
    """Half-width of the textbook 80 % interval of the OLS slope (per second)."""
    # It assumes independent residuals; real volumes' residuals are not (docs explain).
    if t.size < 3:
        return math.inf
    x = t - t.mean()
    sxx = float(x @ x)
    if sxx <= 0.0:
        return math.inf
    slope = float(x @ (u - u.mean())) / sxx
    resid = u - u.mean() - slope * x
    se = math.sqrt(float(resid @ resid) / (t.size - 2) / sxx)
    return _t_quantile(0.9, t.size - 2) * se


def _forecast_predict_linear(
    t: FloatArray, u: FloatArray, cap: float, as_of_s: float, window_s: float, horizon_s: float
) -> PvcForecast:
    """Days to thresholds along Prometheus's predict_linear line over the window."""
    used_now = float(u[-1])
    fit = _predict_linear_fit(t, u, as_of_s, window_s)
    if fit is None or not all(math.isfinite(v) for v in fit):
        return _no_trend(used_now, cap, "predict_linear")
    slope, level = fit
    growth = slope * DAY_S
    days = {r: _days_from(used_now, level, growth, r * cap) for r in (0.85, 0.90, 1.0)}
    in_window = (t > as_of_s - window_s) & (t <= as_of_s)
    half = _ols_band(t[in_window], u[in_window]) * DAY_S
    low = _days_from(used_now, level, growth + half, EXPAND_RATIO * cap)
    high = _days_from(used_now, level, growth - half, EXPAND_RATIO * cap)
    if not math.isfinite(half) and used_now < EXPAND_RATIO * cap:
        low = high = None
    return PvcForecast(
        used_bytes=used_now,
        capacity_bytes=cap,
        used_ratio=used_now / cap,
        growth_bytes_per_day=growth,
        days_to_85=days[0.85],
        days_to_90=days[0.90],
        days_to_full=days[1.0],
        days_to_90_low=low,
        days_to_90_high=high,
        method="predict_linear",
        status=_status(used_now / cap, days[0.90], horizon_s),
    )


def _days_from(used_now: float, level: float, growth: float, target: float) -> float | None:
    """0 if the last sample is already at the target, else along the fitted line."""
    if used_now >= target:
        return 0.0
    return _linear_days(level, growth, target)


# --- method auto: robust seasonal trend ----------------------------------------------------
#
# Model: used(x) = level + T(x) + P(phase(x)) + noise, x in days from as_of, where
# T(x) = g*x + a*x²/2 is the trend (a = 0 unless acceleration is significant) and P is the
# repeating shape of one cycle (daily swing, rotation sawtooth), or the peak height above the
# troughs when drops come at irregular times. The forecast lifts the latest cycle by T and
# reports the first time any phase of it reaches the threshold.


@dataclass(frozen=True, slots=True)
class _Growth:
    """Trend T(x) = g*x + a*x²/2 (bytes, x days from as_of) and the covariance of (g, a)."""

    g: float
    a: float
    var_g: float
    var_a: float
    cov_ga: float
    dof: float  # of the variances: independent days of history minus one
    span: float = 0.0  # days of history the acceleration was measured over

    def rise(self, tau: FloatArray) -> FloatArray:
        """T(tau): the growth from as_of to tau days later."""
        return self.g * tau + 0.5 * self.a * tau * tau

    def rise_sd(self, tau: FloatArray) -> FloatArray:
        """Standard error of T(tau) from the uncertainty of g and a."""
        var = tau**2 * self.var_g + 0.25 * tau**4 * self.var_a + tau**3 * self.cov_ga
        return np.sqrt(np.maximum(var, 0.0))

    def fastest(self, tau: FloatArray) -> FloatArray:
        """The steeper of T and the compounding curve that fits the same history."""
        # Accelerating growth may compound (rate proportional to size) rather than grow
        # quadratically. The fitted rate g + a*x changed by a*span over the history; the
        # exponential rate g*exp(k*x) that changed as much has k = -ln(1 - a*span/g)/span.
        # Both agree on the past and part later: the band's early edge reaches to it.
        rise = self.rise(tau)
        if self.a <= 0.0 or self.g <= 0.0 or self.span <= 0.0:
            return rise
        # A rate that was near zero a span ago cannot tell how fast it compounds: cap it.
        drop = min(self.a * self.span / self.g, 0.95)
        k = -math.log1p(-drop) / self.span
        compounding = self.g / k * np.expm1(np.minimum(k * tau, 50.0))
        return np.maximum(rise, compounding)


@dataclass(frozen=True, slots=True)
class _Shape:
    """Levels of the latest cycle per phase: offset (days, <= 0) of its last occurrence."""

    cycle: float  # 0 = no repeating shape: one level, crossings in continuous time
    offsets: FloatArray
    levels: FloatArray
    level_sd: float


def _running_median(y: FloatArray, width: int = 5) -> FloatArray:
    """Centred running median: removes single-sample spikes but keeps steps and peaks."""
    if y.size < width:
        return y.copy()
    half = width // 2
    padded = np.concatenate([np.repeat(y[:1], half), y, np.repeat(y[-1:], half)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    return np.asarray(np.median(windows, axis=1), dtype=np.float64)


def _mad_scale(r: FloatArray) -> float:
    """Robust standard deviation: 1.4826 × the median absolute deviation."""
    return 1.4826 * float(np.median(np.abs(r - np.median(r)))) if r.size else 0.0


def _within(v: FloatArray, groups: npt.NDArray[np.int64] | None, w: FloatArray) -> FloatArray:
    """v minus its w-weighted mean within each group (fixed effects absorbed), or v."""
    if groups is None:
        return v
    total = np.bincount(groups, weights=w)
    safe = np.where(total > 0, total, 1.0)
    if v.ndim == 1:
        return v - (np.bincount(groups, weights=w * v) / safe)[groups]
    cols = [np.bincount(groups, weights=w * v[:, i]) / safe for i in range(v.shape[1])]
    return v - np.column_stack(cols)[groups]


def _huber_fit(
    design: FloatArray,
    y: FloatArray,
    clusters: npt.NDArray[np.int64] | None = None,
    groups: npt.NDArray[np.int64] | None = None,
    c: float = 1.345,
) -> tuple[FloatArray, FloatArray, float]:
    """Huber M-estimate by IRLS: coefficients, covariance and its degrees of freedom."""
    # `groups` adds one free level per group, absorbed by weighted demeaning (Frisch–Waugh–
    # Lovell) instead of dummy columns, so hundreds of phase levels cost nothing. With
    # `clusters` the covariance is cluster-robust, because residuals within one day move
    # together (a day of faster growth, an early rotation) and treating them as independent
    # would overstate what the history proves.
    n, p = design.shape
    w = np.ones(n)
    beta = np.zeros(p)
    scale = 0.0
    for _ in range(25):
        sw = np.sqrt(w)
        xd, yd = _within(design, groups, w), _within(y, groups, w)
        beta = np.asarray(np.linalg.lstsq(xd * sw[:, None], yd * sw, rcond=None)[0], np.float64)
        resid = yd - xd @ beta
        scale = _mad_scale(resid) or float(np.sqrt(np.mean(resid**2)))
        if scale <= 0.0:
            break
        u = np.abs(resid) / (c * scale)
        w_new = np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))
        if np.allclose(w_new, w):
            break
        w = w_new
    resid = _within(y - design @ beta, groups, w)
    # M-estimator sandwich: psi(r) = w*r in the scores, psi'(r) (1 inside the Huber
    # threshold, 0 beyond) in the bread; IRLS weights there would understate the variance.
    inside = (np.abs(resid) <= c * scale).astype(np.float64) if scale > 0 else np.ones(n)
    xd = _within(design, groups, inside)
    bread = np.asarray(np.linalg.pinv(xd.T @ (xd * inside[:, None])), dtype=np.float64)
    if clusters is not None and np.unique(clusters).size >= 3:
        cov, dof = _cr2_covariance(xd, w * resid, inside, bread, clusters, groups)
        return beta, cov, dof
    absorbed = 0 if groups is None else np.unique(groups).size
    dof = max(float(inside.sum()) - p - absorbed, 1.0)
    sigma2 = max(float(np.sum((w * resid) ** 2)) / dof, scale**2 / max(n, 1))
    return beta, sigma2 * bread, dof


def _cr2_covariance(
    xd: FloatArray,
    psi: FloatArray,
    inside: FloatArray,
    bread: FloatArray,
    clusters: npt.NDArray[np.int64],
    groups: npt.NDArray[np.int64] | None,
) -> tuple[FloatArray, float]:
    """Cluster-robust covariance with the Bell–McCaffrey (CR2) small-sample correction."""
    # With a handful of days the plain sandwich is biased low: the fit has already absorbed
    # part of each day's residuals. CR2 scales each cluster's residuals by (I - H_gg)^-1/2,
    # H_gg being that cluster's block of the hat matrix (absorbed levels included).
    root = np.sqrt(inside)  # points beyond the Huber threshold have no leverage
    group_weight = None if groups is None else np.bincount(groups, weights=inside)
    labels = np.unique(clusters)
    meat = np.zeros_like(bread)
    for label in labels:
        rows = np.flatnonzero(clusters == label)
        xg = xd[rows] * root[rows, None]
        h = xg @ bread @ xg.T
        if groups is not None and group_weight is not None:
            g = groups[rows]
            same = (g[:, None] == g[None, :]).astype(np.float64)
            weight = np.where(group_weight[g] > 0, group_weight[g], 1.0)
            h += same * np.outer(root[rows], root[rows]) / weight[None, :]
        vals, vecs = np.linalg.eigh(np.eye(rows.size) - 0.5 * (h + h.T))
        # Directions fully absorbed by the fit (eigenvalue ~0) carry no information.
        inv_sqrt = np.where(vals > 1e-8, 1.0 / np.sqrt(np.maximum(vals, 1e-8)), 0.0)
        adjusted = vecs @ (inv_sqrt * (vecs.T @ psi[rows]))
        score = xd[rows].T @ adjusted
        meat += np.outer(score, score)
    return bread @ meat @ bread, float(labels.size - 1)


def _drop_times(x: FloatArray, raw: FloatArray, cap: float) -> FloatArray:
    """Times (days) of sustained large decreases: rotations, compactions, clean-ups."""
    m = DROP_WINDOW
    if raw.size < 2 * m + 1:
        return np.empty(0)
    noise = _mad_scale(np.diff(raw)) / math.sqrt(2.0)
    windows = np.lib.stride_tricks.sliding_window_view(raw, m)
    med = np.median(windows, axis=1)  # med[i] = median of raw[i : i + m]
    idx = np.arange(m, raw.size - m + 1)
    step = med[idx] - med[idx - m]
    # A median of m samples moves by ~1.25*noise*sqrt(2/m) by chance; demand far more,
    # and at least 0.5 % of capacity so that small churn is not called a rotation.
    chance = 1.2533 * noise * math.sqrt(2.0 / m)
    close = (x[idx + m - 1] - x[idx - m]) <= 3.0 / 24.0  # both sides seen, not across a gap
    hit = idx[(step < -max(DROP_SIGMAS * chance, 0.005 * cap)) & close]
    if hit.size == 0:
        return np.empty(0)
    # One event per cluster of hits: the step is seen from m positions around the drop.
    starts = np.concatenate([[0], np.flatnonzero(np.diff(x[hit]) > 1.0 / 24.0) + 1])
    ends = np.concatenate([starts[1:], [hit.size]])
    events = []
    for a, b in zip(starts, ends, strict=True):
        cluster = hit[a:b]
        events.append(float(x[cluster[int(np.argmin(step[cluster - m]))]]))
    return np.asarray(events)


def _cycle(drops: FloatArray, span: float) -> float | None:
    """Period (whole days, 1 for sub-daily rotations) of recurring drops; None if irregular."""
    if drops.size < 2:
        return 1.0
    spacing = np.diff(drops)
    period = float(np.median(spacing))
    if drops.size >= 3 and _mad_scale(spacing) > 0.15 * period:
        return None
    if period <= 1.0:
        return 1.0 if abs(1.0 / period - round(1.0 / period)) < 0.05 else None
    whole = float(round(period))
    if abs(period - whole) > 0.05 * whole or span < whole + 0.5:
        return None
    return whole


def _cells(
    x: FloatArray, y: FloatArray, cycle: float, extra: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Means of x, y and extra over (cycle, phase bin) cells; each cell's phase bin, cycle."""
    k = np.floor(-x / cycle).astype(np.int64)
    n_bins = max(1, round(cycle / CELL_BIN_DAYS))
    offset = x + k * cycle
    j = np.minimum(np.floor((offset + cycle) / cycle * n_bins), n_bins - 1).astype(np.int64)
    key = k * n_bins + j
    # Samples are in time order, so each cell is one run of equal keys.
    starts = np.concatenate([[0], np.flatnonzero(np.diff(key)) + 1])
    counts = np.diff(np.concatenate([starts, [x.size]]))
    cx = np.add.reduceat(x, starts) / counts
    cy = np.add.reduceat(y, starts) / counts
    ce = np.add.reduceat(extra, starts, axis=0) / counts[:, None]
    return cx, cy, ce, j[starts], k[starts]


def _steps(x: FloatArray, breaks: FloatArray) -> FloatArray:
    """One column per level shift: 1 from the break on, 0 before it."""
    inside = breaks[(breaks > x[0]) & (breaks <= x[-1])]
    return np.asarray(x[:, None] >= inside[None, :], dtype=np.float64)


def _growth_by_phase(
    x: FloatArray, y: FloatArray, cycle: float, steps: FloatArray
) -> tuple[_Growth, FloatArray] | None:
    """Growth with one free level per phase bin, and the fitted size of each level shift."""
    # The phase levels absorb the repeating shape (daily swing, rotation sawtooth), so it
    # cannot bias the slope. Level shifts (clean-ups, resizes) are fitted jointly, so their
    # uncertainty reaches the band.
    cx, cy, cs, cj, ck = _cells(x, y, cycle, steps)
    phases = np.unique(cj, return_inverse=True)[1]
    if cx.size - int(phases.max()) - 1 - cs.shape[1] < 4:
        return None  # too few phases seen twice to measure growth
    # Residuals of one day move together (a day of faster growth, an early rotation): the
    # covariance treats days as the independent units (quarter days in a short history).
    days = np.floor(-cx if cx[-1] - cx[0] >= 3.0 else -4.0 * cx).astype(np.int64)
    straight, cov1, dof1 = _huber_fit(np.column_stack([cx, cs]), cy, days, phases)
    linear = _Growth(float(straight[0]), 0.0, float(cov1[0, 0]), 0.0, 0.0, dof1)
    beta, cov, dof = _huber_fit(np.column_stack([cx, 0.5 * cx * cx, cs]), cy, days, phases)
    if np.unique(ck).size < ACCEL_MIN_CYCLES:
        # Too short to act on an acceleration, not to admit one may be there.
        growth = _Growth(linear.g, 0.0, linear.var_g, float(cov[1, 1]), 0.0, min(dof, dof1))
        return growth, straight[1:]
    growth = _choose_pace(linear, beta[:2], cov[:2, :2], dof, float(-cx[0]))
    return growth, (beta[2:] if growth.a else straight[1:])


def _choose_pace(
    linear: _Growth, beta: FloatArray, cov: FloatArray, dof: float, span: float
) -> _Growth:
    """Keep the straight trend unless the acceleration (beta = g, a) is significant."""
    g, accel = float(beta[0]), float(beta[1])
    var_a = float(cov[1, 1])
    t_crit = _t_quantile(ACCEL_P, dof) * math.sqrt(var_a)
    if accel > t_crit:
        return _Growth(g, accel, float(cov[0, 0]), var_a, float(cov[0, 1]), dof, span)
    if -accel > t_crit:
        # Slowing down: carry on at today's pace rather than extrapolating the slowdown.
        return _Growth(g, 0.0, float(cov[0, 0]), 0.0, 0.0, dof)
    # Long enough to test for a change of pace, and none found: a straight trend.
    return linear


def _growth_from_levels(x: FloatArray, y: FloatArray) -> tuple[_Growth, float]:
    """Robust trend through level observations (troughs): growth, and the level now."""
    straight, cov1, dof = _huber_fit(np.column_stack([np.ones_like(x), x]), y)
    linear = _Growth(float(straight[1]), 0.0, float(cov1[1, 1]), 0.0, 0.0, dof)
    if x.size < 2 * ACCEL_MIN_CYCLES:
        return linear, float(straight[0])
    beta, cov, dof = _huber_fit(np.column_stack([np.ones_like(x), x, 0.5 * x * x]), y)
    growth = _choose_pace(linear, beta[1:], cov[1:, 1:], dof, float(-x[0]))
    return growth, float(beta[0] if growth.a else straight[0])


def _group_medians(
    values: FloatArray, keys: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], FloatArray, npt.NDArray[np.int64]]:
    """Median of values per key, vectorised: (keys, medians, counts)."""
    order = np.lexsort((values, keys))
    ks, vs = keys[order], values[order]
    starts = np.flatnonzero(np.concatenate([[True], ks[1:] != ks[:-1]]))
    counts = np.diff(np.concatenate([starts, [ks.size]]))
    medians = 0.5 * (vs[starts + (counts - 1) // 2] + vs[starts + counts // 2])
    return ks[starts], medians, counts


def _profile(x: FloatArray, y: FloatArray, growth: _Growth, cycle: float) -> _Shape:
    """Median detrended level per phase bin over the last cycles, shrunk towards their mean."""
    k = np.floor(-x / cycle).astype(np.int64)
    resid = y - growth.rise(x)
    offset = x + k * cycle  # where this phase last occurred, in (-cycle, 0]
    n_bins = max(1, round(cycle / PROFILE_BIN_DAYS))
    j = np.minimum(np.floor((offset + cycle) / cycle * n_bins), n_bins - 1).astype(np.int64)
    recent = k < max(1, round(PROFILE_CYCLES / cycle))
    # Phases lost to gaps in the latest cycles are taken from older ones.
    use = recent | ~np.isin(j, j[recent])
    resid, offset, j, k = resid[use], offset[use], j[use], k[use]
    bins, levels, counts = _group_medians(resid, j)
    offsets = np.bincount(j, weights=offset)[bins] / counts
    noise_var = _bin_noise_var(resid, j, k)
    # James–Stein shrinkage: a flat volume's bins differ only by noise, and taking the
    # highest of many noisy bins would forecast the threshold too early.
    centre = float(np.median(levels))
    spread = float(np.mean((levels - centre) ** 2))
    # A shape no stronger than noise is no shape: use one level (an F-test, loosely).
    keep = max(0.0, 1.0 - noise_var / spread) if spread > SHAPE_F * noise_var else 0.0
    levels = centre + keep * (levels - centre)
    return _Shape(cycle, offsets, levels, math.sqrt(noise_var))


def _bin_noise_var(resid: FloatArray, j: npt.NDArray[np.int64], k: npt.NDArray[np.int64]) -> float:
    """Variance of a phase bin's level, from how the same bin differs between cycles."""
    stride = int(k.max()) + 1
    cell_keys, cell_medians, cell_counts = _group_medians(resid, j * stride + k)
    cell_bin = cell_keys // stride
    n_cycles = np.bincount(cell_bin)
    n = int(n_cycles.max())
    if n >= 2:
        # Two-pass variance per bin across cycles (bytes are large: no sum of squares).
        mean = np.bincount(cell_bin, weights=cell_medians) / np.maximum(n_cycles, 1)
        sq = np.bincount(cell_bin, weights=(cell_medians - mean[cell_bin]) ** 2)
        full = np.flatnonzero(n_cycles == n)
        if full.size >= 8:
            # Pooled by the median (a bin straddling a drop is an outlier): a sample
            # variance with n-1 degrees of freedom has median sigma² (1 - 2/(9(n-1)))³.
            sigma2 = float(np.median(sq[full] / (n - 1))) / (1.0 - 2.0 / (9.0 * (n - 1))) ** 3
            return math.pi / 2.0 * sigma2 / n  # the variance of a median of n
    # One cycle only: compare samples within each cell (autocorrelation makes this a floor).
    cell_of = np.searchsorted(cell_keys, j * stride + k)
    dense = cell_counts[cell_of] >= 4
    devs = resid[dense] - cell_medians[cell_of][dense]
    return (1.2533 * _mad_scale(devs)) ** 2 / 6.0 if devs.size else 0.0


def _trough_model(x: FloatArray, y: FloatArray, drops: FloatArray) -> tuple[_Growth, _Shape] | None:
    """For drops at irregular times: trend of the troughs, plus the typical peak above it."""
    idx = np.searchsorted(x, drops)
    troughs = [float(np.min(y[i : np.searchsorted(x, x[i] + 1.0 / 24.0) + 1])) for i in idx]
    if len(troughs) < 3:
        return None
    xt = x[idx]
    growth, level = _growth_from_levels(xt, np.asarray(troughs))
    edges = np.concatenate([[x[0] - 1e-9], xt, [x[-1] + 1e-9]])
    excess = []
    for lo, hi in itertools.pairwise(edges):
        sel = (x > lo) & (x < hi)
        if np.any(sel):
            top = int(np.argmax(np.where(sel, y, -np.inf)))
            excess.append(float(y[top] - level - growth.rise(x[top : top + 1])[0]))
    peaks = np.asarray(excess)
    # When the next drop comes is unknown: the typical peak height, and its spread in the band.
    top_now = np.array([level + float(np.median(peaks))])
    return growth, _Shape(0.0, np.zeros(1), top_now, _mad_scale(peaks))


def _short_model(x: FloatArray, y: FloatArray, breaks: FloatArray) -> tuple[_Growth, _Shape] | None:
    """Under a cycle and a quarter of history: a robust line through hourly medians."""
    k = np.floor(-x * 24.0).astype(np.int64)
    bins = np.unique(k)
    if bins.size < 3:
        return None
    xs = np.array([float(np.median(x[k == b])) for b in bins])
    ys = np.array([float(np.median(y[k == b])) for b in bins])
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    steps = _steps(xs, breaks)
    design = np.column_stack([np.ones_like(xs), xs, steps])
    # Hours next to each other share the daily swing: six-hour blocks are the clusters.
    blocks = np.floor(-xs * 4.0).astype(np.int64)
    beta, cov, dof = _huber_fit(design, ys, blocks)
    growth = _Growth(float(beta[1]), 0.0, float(cov[1, 1]), 0.0, 0.0, dof)
    # The intercept is the level before the shifts; today's level has them all.
    level = np.array([float(beta[0] + np.sum(beta[2:]))])
    level_var = float(np.sum(cov[np.ix_([0, *range(2, beta.size)], [0, *range(2, beta.size)])]))
    return growth, _Shape(0.0, np.zeros(1), level, math.sqrt(max(level_var, 0.0)))


def _capacity_changes(x: FloatArray, c: FloatArray) -> FloatArray:
    """Times (days) at which the capacity changed: resizes."""
    ok = np.flatnonzero(np.isfinite(c) & (c > 0))
    if ok.size < 2:
        return np.empty(0)
    changed = np.abs(np.diff(c[ok])) > 1e-3 * c[ok][:-1]
    return np.asarray(x[ok[1:][changed]], dtype=np.float64)


def _fit(
    x: FloatArray, raw: FloatArray, c: FloatArray, cap: float, lookback: float | None
) -> tuple[_Growth, _Shape] | None:
    """Pick the model the history supports and fit it (x in days, lookback None = auto)."""
    recent = x > -(lookback or LOOKBACK_DAYS)
    if not np.any(recent):
        return None  # not observed lately (a deleted claim, a stopped collector): no trend
    drops = _drop_times(x[recent], raw[recent], cap)
    span = float(x[-1] - x[recent][0])
    cycle = _cycle(drops, span)
    # An online expansion can move "used" (ext4 adds inode tables): a level shift there.
    breaks = _capacity_changes(x, c)
    if drops.size == 1 or (cycle is None and drops.size < 3):
        # One or two drops that do not recur on a schedule are clean-ups, not a sawtooth. (A
        # rotation seen only once, in under two cycles of history, is taken for one too: the
        # growth then includes the rotated logs, which forecasts early, never late.)
        breaks, drops, cycle = np.concatenate([breaks, drops]), np.empty(0), 1.0
    if lookback is None:
        lookback = max(LOOKBACK_DAYS, LOOKBACK_CYCLES * (cycle or 0.0))
    keep = x > -lookback
    x, raw = x[keep], raw[keep]
    span = float(x[-1] - x[0])
    y = _running_median(raw)
    if cycle is None:
        return _trough_model(x, y, drops) or _short_model(x, y, breaks)
    steps = _steps(x, breaks)
    fitted = _growth_by_phase(x, y, cycle, steps) if span >= cycle + 0.25 else None
    if fitted is None:
        return _short_model(x, y, breaks)
    growth, shifts = fitted
    # Bring the history before each shift to today's level before reading the profile.
    level_now = y + (1.0 - steps) @ shifts
    return growth, _profile(x, level_now, growth, cycle)


# Grid of days ahead on which the forecast band is evaluated (log-spaced, up to 100 years).
_TAU = np.concatenate([[0.0], np.geomspace(1e-3, 36500.0, 4000)])


def _crossing(growth: _Growth, shape: _Shape, target: float, side: int) -> float | None:
    """First day any phase of the lifted cycle reaches target (side -1/+1: the band's edges)."""
    rise = growth.rise(_TAU)
    if side != 0:
        sd = np.sqrt(
            growth.rise_sd(_TAU) ** 2 + shape.level_sd**2 + (MODEL_REL * np.abs(rise)) ** 2
        )
        z = _t_quantile(0.9, growth.dof)
        rise = growth.fastest(_TAU) + z * sd if side < 0 else rise - z * sd
    reach = np.maximum.accumulate(rise)
    need = target - shape.levels
    k = np.searchsorted(reach, need, side="left")
    got = k < _TAU.size
    if not np.any(got):
        return None
    k, need = k[got], need[got]
    prev = np.maximum(k - 1, 0)
    step = reach[k] - reach[prev]
    frac = np.where(step > 0, (need - reach[prev]) / np.where(step > 0, step, 1.0), 0.0)
    tau = np.where(k == 0, 0.0, _TAU[prev] + np.clip(frac, 0.0, 1.0) * (_TAU[k] - _TAU[prev]))
    if shape.cycle > 0.0:
        # A phase last seen at offset o recurs at o + m*cycle for m >= 1.
        offsets = shape.offsets[got]
        m = np.maximum(1.0, np.ceil((tau - offsets) / shape.cycle))
        tau = offsets + m * shape.cycle
    # No sample resolves a crossing better than this: the band is never narrower.
    return float(max(0.0, np.min(tau) + side * BAND_FLOOR_DAYS))


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
    fit = _fit((t - as_of_s) / DAY_S, u, c, cap, lookback)
    if fit is None:
        return _no_trend(used_now, cap, "robust_trend")
    growth, shape = fit

    def days(ratio: float, side: int = 0) -> float | None:
        """Days to ratio of capacity: 0 if the last sample is there already."""
        if used_now >= ratio * cap:
            return 0.0
        return _crossing(growth, shape, ratio * cap, side)

    d90 = days(EXPAND_RATIO)
    return PvcForecast(
        used_bytes=used_now,
        capacity_bytes=cap,
        used_ratio=used_now / cap,
        growth_bytes_per_day=growth.g,
        days_to_85=days(ALERT_RATIO),
        days_to_90=d90,
        days_to_full=days(1.0),
        days_to_90_low=days(EXPAND_RATIO, -1),
        days_to_90_high=days(EXPAND_RATIO, 1),
        method="robust_trend",
        status=_status(used_now / cap, d90, horizon_s),
    )
