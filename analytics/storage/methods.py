"""The storage forecast's fitting methods: Prometheus's predict_linear and a robust trend.

`analytics.storage.forecast` turns their fits into days to each threshold.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from analytics.storage.statistics import (
    FloatArray,
    group_medians,
    huber_fit,
    linear_regression,
    mad_scale,
    running_median,
    t_quantile,
)

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
# reported on seed 0 (docs/analytics.md, "The 80 % interval").
MODEL_REL = 0.005
BAND_FLOOR_DAYS = 0.5 * PROFILE_BIN_DAYS


# --- method predict_linear -----------------------------------------------------------------


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


def predict_linear_fit(
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
    return linear_regression(t_ms, vals, eval_ms)


# --- method auto: robust seasonal trend ----------------------------------------------------
#
# Model: used(x) = level + T(x) + P(phase(x)) + noise, x in days from as_of, where
# T(x) = g*x + a*x²/2 is the trend (a = 0 unless acceleration is significant) and P is the
# repeating shape of one cycle (daily swing, rotation sawtooth), or the peak height above the
# troughs when drops come at irregular times. The forecast lifts the latest cycle by T and
# reports the first time any phase of it reaches the threshold.


@dataclass(frozen=True, slots=True)
class Growth:
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
class Shape:
    """Levels of the latest cycle per phase: offset (days, <= 0) of its last occurrence."""

    cycle: float  # 0 = no repeating shape: one level, crossings in continuous time
    offsets: FloatArray
    levels: FloatArray
    level_sd: float


def _drop_times(x: FloatArray, raw: FloatArray, cap: float) -> FloatArray:
    """Times (days) of sustained large decreases: rotations, compactions, clean-ups."""
    m = DROP_WINDOW
    if raw.size < 2 * m + 1:
        return np.empty(0)
    noise = mad_scale(np.diff(raw)) / math.sqrt(2.0)
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
    if drops.size >= 3 and mad_scale(spacing) > 0.15 * period:
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
) -> tuple[Growth, FloatArray] | None:
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
    straight, cov1, dof1 = huber_fit(np.column_stack([cx, cs]), cy, days, phases)
    linear = Growth(float(straight[0]), 0.0, float(cov1[0, 0]), 0.0, 0.0, dof1)
    beta, cov, dof = huber_fit(np.column_stack([cx, 0.5 * cx * cx, cs]), cy, days, phases)
    if np.unique(ck).size < ACCEL_MIN_CYCLES:
        # Too short to act on an acceleration, not to admit one may be there.
        growth = Growth(linear.g, 0.0, linear.var_g, float(cov[1, 1]), 0.0, min(dof, dof1))
        return growth, straight[1:]
    growth = _choose_pace(linear, beta[:2], cov[:2, :2], dof, float(-cx[0]))
    return growth, (beta[2:] if growth.a else straight[1:])


def _choose_pace(
    linear: Growth, beta: FloatArray, cov: FloatArray, dof: float, span: float
) -> Growth:
    """Keep the straight trend unless the acceleration (beta = g, a) is significant."""
    g, accel = float(beta[0]), float(beta[1])
    var_a = float(cov[1, 1])
    t_crit = t_quantile(ACCEL_P, dof) * math.sqrt(var_a)
    if accel > t_crit:
        return Growth(g, accel, float(cov[0, 0]), var_a, float(cov[0, 1]), dof, span)
    if -accel > t_crit:
        # Slowing down: carry on at today's pace rather than extrapolating the slowdown.
        return Growth(g, 0.0, float(cov[0, 0]), 0.0, 0.0, dof)
    # Long enough to test for a change of pace, and none found: a straight trend.
    return linear


def _growth_from_levels(x: FloatArray, y: FloatArray) -> tuple[Growth, float]:
    """Robust trend through level observations (troughs): growth, and the level now."""
    straight, cov1, dof = huber_fit(np.column_stack([np.ones_like(x), x]), y)
    linear = Growth(float(straight[1]), 0.0, float(cov1[1, 1]), 0.0, 0.0, dof)
    if x.size < 2 * ACCEL_MIN_CYCLES:
        return linear, float(straight[0])
    beta, cov, dof = huber_fit(np.column_stack([np.ones_like(x), x, 0.5 * x * x]), y)
    growth = _choose_pace(linear, beta[1:], cov[1:, 1:], dof, float(-x[0]))
    return growth, float(beta[0] if growth.a else straight[0])


def _profile(x: FloatArray, y: FloatArray, growth: Growth, cycle: float) -> Shape:
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
    bins, levels, counts = group_medians(resid, j)
    offsets = np.bincount(j, weights=offset)[bins] / counts
    noise_var = _bin_noise_var(resid, j, k)
    # James–Stein shrinkage: a flat volume's bins differ only by noise, and taking the
    # highest of many noisy bins would forecast the threshold too early.
    centre = float(np.median(levels))
    spread = float(np.mean((levels - centre) ** 2))
    # A shape no stronger than noise is no shape: use one level (an F-test, loosely).
    keep = max(0.0, 1.0 - noise_var / spread) if spread > SHAPE_F * noise_var else 0.0
    levels = centre + keep * (levels - centre)
    return Shape(cycle, offsets, levels, math.sqrt(noise_var))


def _bin_noise_var(resid: FloatArray, j: npt.NDArray[np.int64], k: npt.NDArray[np.int64]) -> float:
    """Variance of a phase bin's level, from how the same bin differs between cycles."""
    stride = int(k.max()) + 1
    cell_keys, cell_medians, cell_counts = group_medians(resid, j * stride + k)
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
    return (1.2533 * mad_scale(devs)) ** 2 / 6.0 if devs.size else 0.0


def _trough_model(x: FloatArray, y: FloatArray, drops: FloatArray) -> tuple[Growth, Shape] | None:
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
    return growth, Shape(0.0, np.zeros(1), top_now, mad_scale(peaks))


def _short_model(x: FloatArray, y: FloatArray, breaks: FloatArray) -> tuple[Growth, Shape] | None:
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
    beta, cov, dof = huber_fit(design, ys, blocks)
    growth = Growth(float(beta[1]), 0.0, float(cov[1, 1]), 0.0, 0.0, dof)
    # The intercept is the level before the shifts; today's level has them all.
    level = np.array([float(beta[0] + np.sum(beta[2:]))])
    level_var = float(np.sum(cov[np.ix_([0, *range(2, beta.size)], [0, *range(2, beta.size)])]))
    return growth, Shape(0.0, np.zeros(1), level, math.sqrt(max(level_var, 0.0)))


def _capacity_changes(x: FloatArray, c: FloatArray) -> FloatArray:
    """Times (days) at which the capacity changed: resizes."""
    ok = np.flatnonzero(np.isfinite(c) & (c > 0))
    if ok.size < 2:
        return np.empty(0)
    changed = np.abs(np.diff(c[ok])) > 1e-3 * c[ok][:-1]
    return np.asarray(x[ok[1:][changed]], dtype=np.float64)


def robust_fit(
    x: FloatArray, raw: FloatArray, c: FloatArray, cap: float, lookback: float | None
) -> tuple[Growth, Shape] | None:
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
    y = running_median(raw)
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


def crossing(growth: Growth, shape: Shape, target: float, side: int) -> float | None:
    """First day any phase of the lifted cycle reaches target (side -1/+1: the band's edges)."""
    rise = growth.rise(_TAU)
    if side != 0:
        sd = np.sqrt(
            growth.rise_sd(_TAU) ** 2 + shape.level_sd**2 + (MODEL_REL * np.abs(rise)) ** 2
        )
        z = t_quantile(0.9, growth.dof)
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
