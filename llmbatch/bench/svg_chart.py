"""A small line chart as SVG text, for docs/benchmarks.md (no plotting library needed).

Panels side by side share the x values, each with its own y axis from zero: the benchmark
draws throughput and p99 latency against concurrency. x positions are on a log2 scale, since
the concurrencies swept double from one point to the next.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

PANEL_WIDTH = 340
PANEL_HEIGHT = 230
#: Room around each panel's plotting area for its title, tick labels and axis labels.
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 34, 44
Y_TICKS = 5
#: Space between the y axis (and the right edge) and the first (last) point.
X_INSET = 12
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


@dataclass(frozen=True)
class Panel:
    """One panel: a title, the y axis's label, and one value per x."""

    title: str
    y_label: str
    values: Sequence[float]


def nice_ceiling(value: float) -> float:
    """The smallest round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) at or
    above ``value``, where the y axis ends."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10 * power


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.3g}"


def _text(x: float, y: float, s: str, *, anchor: str = "middle", size: int = 11, extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}"{extra}>{escape(s)}</text>'


def _panel(xs: Sequence[float], panel: Panel, *, x_label: str, left: float, colour: str) -> list[str]:
    plot_w = PANEL_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    x0, y0 = left + MARGIN_LEFT, MARGIN_TOP + plot_h  # the plotting area's bottom-left corner
    logs = [math.log2(x) for x in xs]
    lo, hi = min(logs), max(logs)

    def px(i: int) -> float:
        inner = plot_w - 2 * X_INSET
        return x0 + X_INSET + (inner / 2 if hi == lo else (logs[i] - lo) / (hi - lo) * inner)

    top = nice_ceiling(max(panel.values))

    def py(v: float) -> float:
        return y0 - max(0.0, v) / top * plot_h

    out = [f'<g class="panel" data-title="{escape(panel.title)}">']
    out.append(_text(x0 + plot_w / 2, 18, panel.title, size=13, extra=' font-weight="bold"'))
    for k in range(Y_TICKS + 1):
        v = top * k / Y_TICKS
        y = py(v)
        out.append(f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x0 + plot_w:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(_text(x0 - 6, y + 4, _fmt(v), anchor="end", extra=' class="y-tick"'))
    for i, x in enumerate(xs):
        out.append(_text(px(i), y0 + 16, _fmt(x), extra=' class="x-tick"'))
    out.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x0 + plot_w:.1f}" y2="{y0:.1f}" stroke="#333"/>')
    out.append(f'<line x1="{x0:.1f}" y1="{MARGIN_TOP:.1f}" x2="{x0:.1f}" y2="{y0:.1f}" stroke="#333"/>')
    out.append(_text(x0 + plot_w / 2, PANEL_HEIGHT - 8, x_label, extra=' class="x-label"'))
    ly = MARGIN_TOP + plot_h / 2
    out.append(
        _text(left + 14, ly, panel.y_label, extra=f' class="y-label" transform="rotate(-90 {left + 14:.1f} {ly:.1f})"')
    )
    points = " ".join(f"{px(i):.1f},{py(v):.1f}" for i, v in enumerate(panel.values))
    out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
    for i, v in enumerate(panel.values):
        out.append(
            f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="3.5" fill="{colour}">'
            f"<title>{escape(f'{_fmt(xs[i])}: {v:.1f} {panel.y_label}')}</title></circle>"
        )
    out.append("</g>")
    return out


def line_chart_svg(xs: Sequence[float], panels: Sequence[Panel], *, x_label: str, title: str = "") -> str:
    """The panels side by side as one SVG document.

    ``xs`` must be positive (log2 scale) and every panel needs one value per x.
    """
    if not xs or not panels:
        raise ValueError("a chart needs at least one x and one panel")
    if any(x <= 0 for x in xs):
        raise ValueError("x values must be positive (the x axis is log2)")
    for p in panels:
        if len(p.values) != len(xs):
            raise ValueError(f"panel {p.title!r} has {len(p.values)} values for {len(xs)} x values")
        if any(not math.isfinite(v) for v in p.values):
            raise ValueError(f"panel {p.title!r} has a value that is not finite")
    width, height = PANEL_WIDTH * len(panels), PANEL_HEIGHT
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">',
        f"<title>{escape(title or ', '.join(p.title for p in panels))}</title>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for n, panel in enumerate(panels):
        out += _panel(xs, panel, x_label=x_label, left=n * PANEL_WIDTH, colour=COLOURS[n % len(COLOURS)])
    out.append("</svg>")
    return "\n".join(out) + "\n"
