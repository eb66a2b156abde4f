"""The statistics of the storage forecasts, without scipy: quantiles, regressions, intervals."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


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


def t_quantile(p: float, dof: float) -> float:
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


def ols_band(t: FloatArray, u: FloatArray) -> float:
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
    return t_quantile(0.9, t.size - 2) * se


# --- least squares as promql computes it (predict_linear) ----------------------------------


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


def linear_regression(
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


# --- robust estimates ----------------------------------------------------------------------


def running_median(y: FloatArray, width: int = 5) -> FloatArray:
    """Centred running median: removes single-sample spikes but keeps steps and peaks."""
    if y.size < width:
        return y.copy()
    half = width // 2
    padded = np.concatenate([np.repeat(y[:1], half), y, np.repeat(y[-1:], half)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    return np.asarray(np.median(windows, axis=1), dtype=np.float64)


def mad_scale(r: FloatArray) -> float:
    """Robust standard deviation: 1.4826 × the median absolute deviation."""
    return 1.4826 * float(np.median(np.abs(r - np.median(r)))) if r.size else 0.0


def group_medians(
    values: FloatArray, keys: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], FloatArray, npt.NDArray[np.int64]]:
    """Median of values per key, vectorised: (keys, medians, counts)."""
    order = np.lexsort((values, keys))
    ks, vs = keys[order], values[order]
    starts = np.flatnonzero(np.concatenate([[True], ks[1:] != ks[:-1]]))
    counts = np.diff(np.concatenate([starts, [ks.size]]))
    medians = 0.5 * (vs[starts + (counts - 1) // 2] + vs[starts + counts // 2])
    return ks[starts], medians, counts


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


def huber_fit(
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
        scale = mad_scale(resid) or float(np.sqrt(np.mean(resid**2)))
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
