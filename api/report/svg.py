"""Inline SVG charts: lines with thresholds and bands, stacked areas, bars, timelines, bullets.

Plain strings, no JavaScript, no external references; every coordinate goes through
`fmt.coord`, so the same figures always give the same bytes. Text is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from api.report.fmt import coord, esc

#: Okabe–Ito: told apart with the common colour-vision deficiencies, and in greyscale print.
PALETTE: Final = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000")
OTHER: Final = "#9E9E9E"
THRESHOLD: Final = "#C62828"
DAY_S: Final = 86400

Point = Sequence[float]
Fmt = Callable[[float], str]


@dataclass(frozen=True, slots=True)
class Frame:
    """A plot area in a width × height viewBox, mapping data ranges to pixels."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: float = 720.0
    height: float = 220.0
    left: float = 58.0
    right: float = 14.0
    top: float = 12.0
    bottom: float = 26.0

    def x(self, v: float) -> float:
        """The pixel column of data x."""
        span = self.x1 - self.x0 or 1.0
        return self.left + (v - self.x0) / span * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        """The pixel row of data y (up is more)."""
        span = self.y1 - self.y0 or 1.0
        return self.height - self.bottom - (v - self.y0) / span * self.plot_height

    @property
    def plot_height(self) -> float:
        """Height of the plot area in pixels."""
        return self.height - self.top - self.bottom

    @property
    def plot_right(self) -> float:
        """The right edge of the plot area."""
        return self.width - self.right


@dataclass(frozen=True, slots=True)
class Line:
    """A series drawn as a line; a gap longer than `gap` (data x units) breaks it."""

    label: str
    points: Sequence[Point]
    color: str
    dash: str | None = None
    width: float = 1.5
    gap: float | None = None


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded area between two lines sharing their x values (a forecast interval)."""

    label: str
    upper: Sequence[Point]
    lower: Sequence[Point]
    color: str
    opacity: float = 0.25


@dataclass(frozen=True, slots=True)
class Rule:
    """A horizontal reference line (a threshold, a budget)."""

    value: float
    label: str
    color: str = THRESHOLD
    dash: str = "6 4"
    anchor: str = "end"


@dataclass(frozen=True, slots=True)
class Shade:
    """A vertical strip over an x interval (a sustained-hot window)."""

    x0: float
    x1: float
    color: str
    label: str


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer of a stacked area: a value per x."""

    label: str
    values: Sequence[float]
    color: str


@dataclass(frozen=True, slots=True)
class Ticks:
    """Axis ticks: (data value, label) pairs."""

    items: Sequence[tuple[float, str]] = field(default_factory=tuple)


def nice_max(value: float, floor: float) -> float:
    """A round upper bound at or above `value` and `floor` (1, 2, 2.5, 5 × 10ⁿ steps)."""
    top = max(value, floor)
    if top <= 0:
        return 1.0
    step = nice_step(top / 4)
    return math.ceil(top / step - 1e-9) * step


def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10ⁿ that is at least `raw`."""
    if raw <= 0:
        return 1.0
    base = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * base >= raw - 1e-12:
            return float(m * base)
    return float(10 * base)


def value_ticks(top: float, fmt: Fmt, bottom: float = 0.0) -> Ticks:
    """About five evenly spaced ticks from bottom to top."""
    step = nice_step((top - bottom) / 4)
    n = math.floor((top - bottom) / step + 1e-9)
    return Ticks([(bottom + i * step, fmt(bottom + i * step)) for i in range(n + 1)])


def time_ticks(x0: float, x1: float, anchor: float, every_days: int, fmt: Fmt) -> Ticks:
    """Ticks every `every_days` days from `anchor` (epoch seconds), inside [x0, x1]."""
    step = every_days * DAY_S
    k = math.ceil((x0 - anchor) / step - 1e-9)
    out = []
    t = anchor + k * step
    while t <= x1 + 1e-9:
        out.append((t, fmt(t)))
        t += step
    return Ticks(out)


def _open(frame: Frame, name: str, title: str) -> list[str]:
    return [
        f'<svg class="chart-svg" data-chart-svg="{esc(name)}" viewBox="0 0 '
        f'{coord(frame.width)} {coord(frame.height)}" role="img" aria-label="{esc(title)}">',
        f"<title>{esc(title)}</title>",
    ]


def _axes(frame: Frame, xt: Ticks, yt: Ticks) -> list[str]:
    """Grid lines, tick labels and the plot's frame."""
    out = ['<g class="grid">']
    for v, _ in yt.items:
        y = coord(frame.y(v))
        out.append(
            f'<line x1="{coord(frame.left)}" y1="{y}" x2="{coord(frame.plot_right)}" y2="{y}"/>'
        )
    out.append("</g>")
    out.append('<g class="ticks">')
    for v, label in yt.items:
        out.append(
            f'<text x="{coord(frame.left - 6)}" y="{coord(frame.y(v) + 4)}" '
            f'text-anchor="end">{esc(label)}</text>'
        )
    base = frame.height - frame.bottom
    for v, label in xt.items:
        x = coord(frame.x(v))
        out.append(
            f'<line class="tick" x1="{x}" y1="{coord(base)}" x2="{x}" y2="{coord(base + 4)}"/>'
        )
        out.append(f'<text x="{x}" y="{coord(base + 16)}" text-anchor="middle">{esc(label)}</text>')
    out.append("</g>")
    out.append(
        f'<rect class="frame" x="{coord(frame.left)}" y="{coord(frame.top)}" '
        f'width="{coord(frame.plot_right - frame.left)}" height="{coord(frame.plot_height)}"/>'
    )
    return out


def _clip(frame: Frame, v: float) -> float:
    return min(max(v, frame.y0), frame.y1)


def path_d(frame: Frame, points: Sequence[Point], gap: float | None = None) -> str:
    """An SVG path through the points, broken where consecutive x differ by more than `gap`."""
    parts = []
    prev: float | None = None
    for p in points:
        x, y = coord(frame.x(p[0])), coord(frame.y(_clip(frame, p[1])))
        move = prev is None or (gap is not None and p[0] - prev > gap)
        parts.append(f"{'M' if move else 'L'}{x} {y}")
        prev = p[0]
    return "".join(parts)


def _rules(frame: Frame, rules: Sequence[Rule]) -> list[str]:
    out = []
    for r in rules:
        if not frame.y0 <= r.value <= frame.y1:
            continue
        y = coord(frame.y(r.value))
        out.append(
            f'<line class="rule" x1="{coord(frame.left)}" y1="{y}" x2="{coord(frame.plot_right)}" '
            f'y2="{y}" stroke="{r.color}" stroke-dasharray="{r.dash}"/>'
        )
        x = frame.plot_right - 4 if r.anchor == "end" else frame.left + 4
        out.append(
            f'<text class="rule-label" x="{coord(x)}" y="{coord(frame.y(r.value) - 4)}" '
            f'text-anchor="{r.anchor}" fill="{r.color}">{esc(r.label)}</text>'
        )
    return out


def _shades(frame: Frame, shades: Sequence[Shade]) -> list[str]:
    out = []
    for s in shades:
        a, b = max(s.x0, frame.x0), min(s.x1, frame.x1)
        if b < a:
            continue
        x0, x1 = frame.x(a), frame.x(b)
        out.append(
            f'<rect class="shade" x="{coord(x0)}" y="{coord(frame.top)}" '
            f'width="{coord(max(x1 - x0, 1.5))}" height="{coord(frame.plot_height)}" '
            f'fill="{s.color}"><title>{esc(s.label)}</title></rect>'
        )
    return out


def line_chart(
    *,
    name: str,
    title: str,
    lines: Sequence[Line],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    x_ticks: Ticks,
    y_ticks: Ticks,
    rules: Sequence[Rule] = (),
    bands: Sequence[Band] = (),
    shades: Sequence[Shade] = (),
    markers: Sequence[tuple[float, str]] = (),
    height: float = 220.0,
    width: float = 720.0,
) -> str:
    """Lines over time with threshold rules, shaded bands and vertical strips."""
    left = 58.0 if width >= 600 else 40.0
    f = Frame(x_range[0], x_range[1], y_range[0], y_range[1], width, height, left=left)
    out = _open(f, name, title)
    out += _shades(f, shades)
    out += _axes(f, x_ticks, y_ticks)
    for b in bands:
        upper = [f"{coord(f.x(p[0]))},{coord(f.y(_clip(f, p[1])))}" for p in b.upper]
        lower = [f"{coord(f.x(p[0]))},{coord(f.y(_clip(f, p[1])))}" for p in reversed(b.lower)]
        out.append(
            f'<polygon class="band" points="{" ".join(upper + lower)}" fill="{b.color}" '
            f'fill-opacity="{b.opacity}"><title>{esc(b.label)}</title></polygon>'
        )
    for x, label in markers:
        px = coord(f.x(x))
        out.append(
            f'<line class="marker" x1="{px}" y1="{coord(f.top)}" x2="{px}" '
            f'y2="{coord(f.height - f.bottom)}"/>'
            f'<text class="marker-label" x="{coord(f.x(x) + 4)}" y="{coord(f.top + 11)}">'
            f"{esc(label)}</text>"
        )
    for line in lines:
        if not line.points:
            continue
        dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
        out.append(
            f'<path class="series" d="{path_d(f, line.points, line.gap)}" stroke="{line.color}" '
            f'stroke-width="{line.width}"{dash}><title>{esc(line.label)}</title></path>'
        )
    out += _rules(f, rules)
    out.append("</svg>")
    return "".join(out)


def stacked_chart(
    *,
    name: str,
    title: str,
    xs: Sequence[float],
    layers: Sequence[Layer],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    x_ticks: Ticks,
    y_ticks: Ticks,
    rules: Sequence[Rule] = (),
    height: float = 220.0,
) -> str:
    """Layers stacked on each other at each x: their top is the total."""
    f = Frame(x_range[0], x_range[1], y_range[0], y_range[1], height=height)
    out = _open(f, name, title)
    out += _axes(f, x_ticks, y_ticks)
    base = [0.0] * len(xs)
    for layer in layers:
        top = [b + v for b, v in zip(base, layer.values, strict=True)]
        upper = [f"{coord(f.x(x))},{coord(f.y(_clip(f, t)))}" for x, t in zip(xs, top, strict=True)]
        lower = [
            f"{coord(f.x(x))},{coord(f.y(_clip(f, b)))}"
            for x, b in reversed(list(zip(xs, base, strict=True)))
        ]
        out.append(
            f'<polygon class="layer" points="{" ".join(upper + lower)}" fill="{layer.color}">'
            f"<title>{esc(layer.label)}</title></polygon>"
        )
        base = top
    out += _rules(f, rules)
    out.append("</svg>")
    return "".join(out)


def bar_chart(
    *,
    name: str,
    title: str,
    categories: Sequence[str],
    groups: Sequence[tuple[str, Sequence[float | None], str]],
    y_fmt: Fmt,
    height: float = 200.0,
) -> str:
    """Grouped vertical bars: one group of bars per category, one colour per series."""
    values = [v for _, vs, _ in groups for v in vs if v is not None]
    top = nice_max(max(values, default=0.0), 1e-9 if values else 1.0)
    f = Frame(0, len(categories), 0, top, height=height)
    out = _open(f, name, title)
    out += _axes(
        f,
        Ticks([(i + 0.5, c) for i, c in enumerate(categories)]),
        value_ticks(top, y_fmt),
    )
    slot = (f.x(1) - f.x(0)) * 0.8
    bar = slot / max(len(groups), 1)
    for i in range(len(categories)):
        left = f.x(i) + (f.x(1) - f.x(0)) * 0.1
        for j, (label, vs, color) in enumerate(groups):
            v = vs[i]
            if v is None:
                continue
            y = f.y(v)
            out.append(
                f'<rect class="bar" x="{coord(left + j * bar)}" y="{coord(y)}" '
                f'width="{coord(bar * 0.92)}" height="{coord(f.y(0) - y)}" fill="{color}">'
                f"<title>{esc(f'{categories[i]}, {label}: {y_fmt(v)}')}</title></rect>"
            )
            if v > 0:
                out.append(
                    f'<text class="bar-label" x="{coord(left + j * bar + bar * 0.46)}" '
                    f'y="{coord(y - 3)}" text-anchor="middle">{esc(y_fmt(v))}</text>'
                )
    out.append("</svg>")
    return "".join(out)


def time_bars(
    *,
    name: str,
    title: str,
    bars: Sequence[tuple[float, float]],
    width_s: float,
    x_range: tuple[float, float],
    x_ticks: Ticks,
    y_fmt: Fmt,
    color: str,
    label: Callable[[float, float], str],
    height: float = 160.0,
) -> str:
    """One bar per (start, value), each `width_s` wide (daily spend)."""
    top = nice_max(max((v for _, v in bars), default=0.0), 1e-9 if bars else 1.0)
    f = Frame(x_range[0], x_range[1], 0, top, height=height)
    out = _open(f, name, title)
    out += _axes(f, x_ticks, value_ticks(top, y_fmt))
    for x, v in bars:
        x0, x1, y = f.x(x), f.x(x + width_s), f.y(max(v, 0.0))
        out.append(
            f'<rect class="bar" x="{coord(x0 + 1)}" y="{coord(y)}" width="{coord(x1 - x0 - 2)}" '
            f'height="{coord(f.y(0) - y)}" fill="{color}"><title>{esc(label(x, v))}</title></rect>'
        )
    out.append("</svg>")
    return "".join(out)


def timeline_chart(
    *,
    name: str,
    title: str,
    rows: Sequence[tuple[str, Sequence[tuple[float, float, str, str]]]],
    x_range: tuple[float, float],
    x_ticks: Ticks,
) -> str:
    """One lane per row, with a bar per (start, end, colour, tooltip) interval."""
    lane = 22.0
    f = Frame(
        x_range[0],
        x_range[1],
        0,
        max(len(rows), 1),
        height=26 + 12 + lane * max(len(rows), 1),
        left=170.0,
    )
    out = _open(f, name, title)
    out += _axes(f, x_ticks, Ticks())
    for i, (label, spans) in enumerate(rows):
        y = f.top + i * lane
        out.append(
            f'<text x="{coord(f.left - 6)}" y="{coord(y + lane / 2 + 4)}" text-anchor="end">'
            f"{esc(label)}</text>"
        )
        if i:
            out.append(
                f'<line class="lane" x1="{coord(f.left)}" y1="{coord(y)}" '
                f'x2="{coord(f.plot_right)}" y2="{coord(y)}"/>'
            )
        for a, b, color, tip in spans:
            x0, x1 = f.x(max(a, f.x0)), f.x(min(b, f.x1))
            out.append(
                f'<rect class="span" x="{coord(x0)}" y="{coord(y + 4)}" '
                f'width="{coord(max(x1 - x0, 2.0))}" height="{coord(lane - 8)}" fill="{color}">'
                f"<title>{esc(tip)}</title></rect>"
            )
    out.append("</svg>")
    return "".join(out)


def bullet(
    *,
    name: str,
    title: str,
    value: float,
    marks: Sequence[tuple[float, str, str]],
    top: float = 1.0,
) -> str:
    """A small horizontal bar of `value` (0..top) with labelled marks (85 %, N-1 at 85 %)."""
    width, height, pad = 200.0, 22.0, 2.0

    def x(v: float) -> float:
        return pad + min(max(v, 0.0), top) / top * (width - 2 * pad)

    out = [
        f'<svg class="bullet" data-chart-svg="{esc(name)}" viewBox="0 0 {coord(width)} '
        f'{coord(height)}" role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>',
        f'<rect class="bullet-track" x="{coord(pad)}" y="6" width="{coord(width - 2 * pad)}" '
        f'height="10"/>',
        f'<rect class="bullet-bar" x="{coord(pad)}" y="6" width="{coord(x(value) - pad)}" '
        f'height="10"/>',
    ]
    for v, color, tip in marks:
        px = coord(x(v))
        out.append(
            f'<line x1="{px}" y1="2" x2="{px}" y2="20" stroke="{color}" stroke-width="2">'
            f"<title>{esc(tip)}</title></line>"
        )
    out.append("</svg>")
    return "".join(out)


def swatch(color: str, dash: str | None = None, area: bool = False) -> str:
    """A legend key: a short line, dashed or not, or a filled square (prints without CSS)."""
    if area:
        shape = f'<rect x="1" y="2" width="14" height="10" fill="{color}"/>'
    else:
        d = f' stroke-dasharray="{dash}"' if dash else ""
        shape = f'<line x1="0" y1="7" x2="16" y2="7" stroke="{color}" stroke-width="2.5"{d}/>'
    return f'<svg class="swatch" viewBox="0 0 16 14" aria-hidden="true">{shape}</svg>'
