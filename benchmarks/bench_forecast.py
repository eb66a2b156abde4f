"""Storage forecast accuracy: the robust default vs Prometheus predict_linear on synthetic PVCs.

Generates deterministic synthetic PVC traces (5-minute samples over 7-30 days) whose
noiseless process is known: linear, quadratic and exponential growth, daily log-rotation,
weekly compaction and irregular compaction sawtooths, resizes (half of them with the step in
"used" that an ext4 online expansion causes: inode tables for the added space), one-off
clean-ups, daily seasonality, noise, spikes and gaps. Each trace is forecast at several
`as_of` points. The ground truth is the first time after `as_of` that the NOISELESS process
(sawtooth and daily swing included, noise and spikes excluded) reaches 90 % of the capacity
in force at `as_of` (no future resize is known), found by simulating it forward at 1-minute
steps; a case is kept when that time is within (0, 60] days.

Printed: the median absolute error in days of `days_to_90` for the default method
(`robust_trend`) and for `predict_linear` over 6 h, 1 d and 7 d windows (a forecast of
"never" counts as 365 days); the baseline is the best of the three windows; the ratio
default / baseline (target <= 0.5); and how often the truth falls inside the default
method's 80 % interval [days_to_90_low, days_to_90_high] (target 0.75-0.85). The exit
status is 0 when both targets are met.

Run from the repository root:

    .venv/bin/python benchmarks/bench_forecast.py            # the reported set (seed 0)
    .venv/bin/python benchmarks/bench_forecast.py --seed 1   # seeds 1-3: the tuning sets
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from analytics.storage.forecast import PvcForecast, forecast_pvc

DAY = 86400.0
STEP = 300.0
NEVER = 365.0
FAMILIES = (
    "linear",
    "linear_noisy",
    "quadratic",
    "exponential",
    "rotation_daily",
    "compaction_weekly",
    "compaction_irregular",
    "resize",
    "cleanup",
    "seasonal_daily",
    "mixed",
)
WINDOWS = {"6h": 6 * 3600.0, "1d": DAY, "7d": 7 * DAY}

Curve = Callable[[np.ndarray], np.ndarray]


@dataclass
class Trace:
    """One synthetic PVC: observed samples plus its noiseless process and capacity."""

    family: str
    t: np.ndarray
    used: np.ndarray
    cap: np.ndarray
    process: Curve
    capacity: Curve
    as_ofs: list[float]


def _base_curve(
    rng: np.random.Generator, family: str, u0: float, top: float, t_star: float
) -> Curve:
    """Trend in capacity ratios (t in days) reaching `top` at `t_star`: linear or accelerating."""
    if family == "quadratic":
        g0 = (top - u0) / t_star * rng.uniform(0.1, 0.5)
        a = (top - u0 - g0 * t_star) / t_star**2
        return lambda d: u0 + g0 * d + a * d * d
    if family == "exponential":
        k = math.log(top / u0) / t_star
        return lambda d: u0 * np.exp(k * d)
    g = (top - u0) / t_star
    return lambda d: u0 + g * d


def _sawtooth(rng: np.random.Generator, kind: str, days: float, amp: float) -> Curve:
    """Accumulate-then-drop component in capacity ratios: amp just before each drop."""
    if kind == "none":
        return lambda d: np.zeros_like(d)
    if kind == "irregular":
        gaps = rng.uniform(0.5, 3.0, size=int((days + 400) / 0.5) + 2)
        drops = np.cumsum(gaps) - rng.uniform(0, 3.0)
        rate = amp / 1.75  # amp at the mean interval

        def irregular(d: np.ndarray) -> np.ndarray:
            idx = np.searchsorted(drops, d, side="right") - 1
            last = np.where(idx >= 0, drops[np.maximum(idx, 0)], d - 1.0)
            return rate * (d - last)

        return irregular
    period = {"daily": 1.0, "weekly": 7.0, "2h": 2.0 / 24.0}[kind]
    phase = rng.uniform(0, period)
    return lambda d: amp * np.mod(d - phase, period) / period


def _seasonal(rng: np.random.Generator, amp: float) -> Curve:
    """Daily swing in capacity ratios (batch jobs, caches), sinusoid or business-hours hump."""
    if amp == 0.0:
        return lambda d: np.zeros_like(d)
    phase = rng.uniform(0, 1)
    if rng.random() < 0.5:
        return lambda d: amp * 0.5 * (1 + np.sin(2 * np.pi * (d - phase)))
    return lambda d: amp * np.maximum(0.0, np.sin(2 * np.pi * (d - phase))) ** 2


def make_trace(index: int, seed: int) -> Trace:
    """The index-th trace of the set: a family, its parameters and its observed samples."""
    rng = np.random.default_rng([seed, index])
    family = FAMILIES[index % len(FAMILIES)]
    weekly = family == "compaction_weekly"
    days = float(rng.choice([28, 30])) if weekly else float(rng.choice([7, 10, 14, 21, 30]))
    cap_final = 2.0**30 * float(rng.uniform(10, 1000))

    saw_kind, saw_amp, seas_amp, resize, cleanup = "none", 0.0, 0.0, False, 0.0
    if family == "rotation_daily":
        saw_kind, saw_amp = str(rng.choice(["daily", "daily", "2h"])), rng.uniform(0.01, 0.08)
    elif family == "compaction_weekly":
        saw_kind, saw_amp = "weekly", rng.uniform(0.05, 0.15)
    elif family == "compaction_irregular":
        saw_kind, saw_amp = "irregular", rng.uniform(0.02, 0.08)
    elif family == "seasonal_daily":
        seas_amp = rng.uniform(0.01, 0.05)
    elif family == "resize":
        resize = True
    elif family == "cleanup":
        cleanup = rng.uniform(0.05, 0.2)
    elif family == "mixed":
        saw_kind, saw_amp = "daily", rng.uniform(0.01, 0.05)
        seas_amp, resize = rng.uniform(0.005, 0.03), rng.random() < 0.5

    growth_family = family if family in ("quadratic", "exponential") else "linear"
    if family == "mixed" and rng.random() < 0.4:
        growth_family = str(rng.choice(["quadratic", "exponential"]))
    top = 0.9 - saw_amp - seas_amp + cleanup
    u0 = rng.uniform(0.2, min(0.6, top - 0.1 - cleanup))
    t_star = rng.uniform(0.5 * days, days + 50.0)
    base = _base_curve(rng, growth_family, u0, top, t_star)
    saw = _sawtooth(rng, saw_kind, days, saw_amp)
    seas = _seasonal(rng, seas_amp)
    t_clean = rng.uniform(0.3, 0.8) * days

    def shape(t: np.ndarray) -> np.ndarray:
        d = t / DAY
        return np.asarray(cap_final * (base(d) + saw(d) + seas(d) - cleanup * (d >= t_clean)))

    capacity, step_at, step = _capacity_curve(rng, resize, days, cap_final, shape)

    def process(t: np.ndarray) -> np.ndarray:
        return np.asarray(shape(t) + step * (np.asarray(t) >= step_at))

    t = np.arange(0.0, days * DAY, STEP) + rng.uniform(-5, 5, size=int(days * DAY / STEP))
    t = np.sort(t[(t >= 0) & (t < days * DAY)])
    noise_sd = float(np.exp(rng.uniform(np.log(2e-4), np.log(5e-3))))
    if family == "linear_noisy":
        noise_sd = rng.uniform(5e-3, 1.5e-2)
    used = process(t) + cap_final * noise_sd * rng.standard_normal(t.size)
    if rng.random() < 0.3:  # transient spikes: temp files, a core dump, a restore
        hit = rng.random(t.size) < 0.002
        used = used + hit * cap_final * rng.uniform(0.01, 0.05, size=t.size)
    keep = _gaps(rng, t)
    t, used = t[keep], used[keep]
    cap = capacity(t)
    fracs = [0.5, 0.75, 1.0] if weekly else [0.4, 0.6, 0.8, 1.0]
    as_ofs = [max(2.0 * DAY, f * days * DAY - rng.uniform(0, DAY)) for f in fracs]
    return Trace(family, t, used, cap, process, capacity, as_ofs)


def _capacity_curve(
    rng: np.random.Generator, resize: bool, days: float, cap_final: float, shape: Curve
) -> tuple[Curve, float, float]:
    """Capacity over time, constant or expanded once mid-trace (online); with the expansion,
    when and by how much "used" steps up (ext4: inode tables of ~1.6 % of the added space)."""
    if not resize:
        return (lambda t: np.full(np.shape(t), cap_final)), math.inf, 0.0
    t_r = rng.uniform(0.3, 0.7) * days * DAY
    before = shape(np.arange(0.0, t_r, 60.0))
    cap0 = max(cap_final / rng.uniform(1.3, 2.0), float(before.max()) / 0.88)
    step = 0.016 * (cap_final - cap0) if rng.random() < 0.5 else 0.0
    return (lambda t: np.where(np.asarray(t) < t_r, cap0, cap_final)), t_r, step


def _gaps(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Which samples survive: missing hours at random and sometimes one long outage."""
    keep = np.ones(t.size, dtype=bool)
    if rng.random() < 0.5:
        hours = np.floor(t / 3600.0).astype(int)
        lost = rng.random(hours.max() + 1) < rng.uniform(0.05, 0.2)
        keep &= ~lost[hours]
    if rng.random() < 0.25:
        start = rng.uniform(0, t[-1])
        keep &= ~((t >= start) & (t < start + rng.uniform(4, 24) * 3600.0))
    return keep


def truth_days(trace: Trace, as_of: float) -> float | None:
    """Days from as_of until the noiseless process first reaches 90 % of capacity at as_of."""
    threshold = 0.9 * float(trace.capacity(np.array([as_of]))[0])
    future = as_of + np.arange(60.0, 61 * DAY, 60.0)
    hit = np.flatnonzero(trace.process(future) >= threshold)
    if float(trace.process(np.array([as_of]))[0]) >= threshold:
        return None  # already past: nothing to forecast
    return float((future[hit[0]] - as_of) / DAY) if hit.size else None


def _predicted(f: PvcForecast) -> float:
    """days_to_90 with "never" as 365 days, so a wrong "never" counts as a large error."""
    return NEVER if f.days_to_90 is None else min(f.days_to_90, NEVER)


def _covered(f: PvcForecast, truth: float) -> bool:
    """Whether the truth is inside the 80 % interval (a missing bound is open)."""
    low = math.inf if f.days_to_90_low is None else f.days_to_90_low
    if f.days_to_90 is None and f.days_to_90_low is None:
        low = math.inf
    high = math.inf if f.days_to_90_high is None else f.days_to_90_high
    return low <= truth <= high


@dataclass
class Result:
    """Errors and interval hits per method ("auto" or a predict_linear window) and family."""

    errors: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    family_errors: dict[tuple[str, str], list[float]] = field(
        default_factory=lambda: defaultdict(list)
    )
    covered: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))
    family_covered: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))
    width: list[float] = field(default_factory=list)
    insufficient: int = 0
    auto_seconds: float = 0.0

    def add(self, family: str, label: str, f: PvcForecast, truth: float) -> None:
        """Record one forecast of one case."""
        err = abs(_predicted(f) - truth)
        self.errors[label].append(err)
        self.family_errors[(family, label)].append(err)
        self.covered[label].append(_covered(f, truth))
        if label == "auto":
            self.family_covered[family].append(_covered(f, truth))
            self.insufficient += f.status == "insufficient_data"
            if f.days_to_90_low is not None and f.days_to_90_high is not None:
                self.width.append(f.days_to_90_high - f.days_to_90_low)


def run(n_traces: int, seed: int) -> Result:
    """Forecast every case with every method."""
    result = Result()
    for i in range(n_traces):
        trace = make_trace(i, seed)
        for as_of in trace.as_ofs:
            truth = truth_days(trace, as_of)
            if truth is None or truth > 60.0:
                continue
            started = time.perf_counter()
            auto = forecast_pvc(trace.t, trace.used, trace.cap, as_of)
            result.auto_seconds += time.perf_counter() - started
            result.add(trace.family, "auto", auto, truth)
            for label, window in WINDOWS.items():
                pl = forecast_pvc(
                    trace.t, trace.used, trace.cap, as_of, method="predict_linear", window_s=window
                )
                result.add(trace.family, label, pl, truth)
    return result


def report(result: Result, n_traces: int, seconds: float) -> bool:
    """Print the figures and PASS/MISS lines; True when both targets are met."""
    med = {k: float(np.median(v)) for k, v in result.errors.items()}
    n_cases = len(result.errors["auto"])
    print(f"traces: {n_traces}   cases (trace x as_of, truth within 60 d): {n_cases}")
    print(f"insufficient_data from the default method: {result.insufficient}")
    print("median absolute error of days_to_90 (days):")
    print(f"  robust_trend (default)   {med['auto']:7.3f}")
    for label in WINDOWS:
        print(f"  predict_linear [{label:>2}]      {med[label]:7.3f}")
    best = min(WINDOWS, key=lambda k: med[k])
    ratio = med["auto"] / med[best]
    ok_ratio = ratio <= 0.5
    print(f"baseline = predict_linear [{best}]: {med[best]:.3f} d")
    print(f"ratio default / baseline: {ratio:.3f}  (target <= 0.5)  {_verdict(ok_ratio)}")
    coverage = float(np.mean(result.covered["auto"]))
    ok_cov = 0.75 <= coverage <= 0.85
    print(
        f"80 % interval coverage: {coverage:.3f}  (target 0.75-0.85)  {_verdict(ok_cov)}"
        f"   median width {float(np.median(result.width)):.2f} d"
    )
    textbook = "  ".join(f"[{k}] {float(np.mean(result.covered[k])):.3f}" for k in WINDOWS)
    print(f"  (for comparison, predict_linear's textbook OLS 80 % interval: {textbook})")
    print("by family: cases, median absolute error (days) auto 6h 1d 7d, auto coverage")
    for family in FAMILIES:
        rows = [result.family_errors.get((family, k), []) for k in ("auto", *WINDOWS)]
        if rows[0]:
            cells = " ".join(f"{float(np.median(v)):6.2f}" for v in rows)
            cover = float(np.mean(result.family_covered[family]))
            print(f"  {family:<22} {len(rows[0]):4d} {cells}  {cover:5.2f}")
    per_call = 1000.0 * result.auto_seconds / max(n_cases, 1)
    print(f"default method: {per_call:.1f} ms per forecast; elapsed: {seconds:.1f} s")
    return ok_ratio and ok_cov


def _verdict(ok: bool) -> str:
    """PASS or MISS."""
    return "PASS" if ok else "MISS"


def main() -> int:
    """Parse arguments, run the benchmark, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=int, default=240, help="synthetic PVC traces")
    parser.add_argument("--seed", type=int, default=0, help="trace set (0 = reported set)")
    args = parser.parse_args()
    started = time.perf_counter()
    result = run(args.traces, args.seed)
    ok = report(result, args.traces, time.perf_counter() - started)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
