"""The benchmark's SVG line chart: its shape (panels, points, axis labels), not its pixels."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest

from llmbatch.bench.svg_chart import Panel, line_chart_svg, nice_ceiling

NS = {"svg": "http://www.w3.org/2000/svg"}
XS = [4, 8, 16, 32, 64]
THROUGHPUT = Panel("Throughput", "ok/s", [19.5, 38.0, 71.2, 108.3, 121.0])
P99 = Panel("p99 latency", "ms", [4100.0, 2050.0, 1220.0, 790.0, 1010.0])


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def panels_of(root: ET.Element) -> list[ET.Element]:
    return root.findall("svg:g[@class='panel']", NS)


def texts(el: ET.Element, cls: str) -> list[str]:
    return [t.text or "" for t in el.findall(f"svg:text[@class='{cls}']", NS)]


def test_one_panel_per_series_with_one_point_per_x() -> None:
    root = parse(line_chart_svg(XS, [THROUGHPUT, P99], x_label="model calls per invocation"))

    panels = panels_of(root)
    assert [p.get("data-title") for p in panels] == ["Throughput", "p99 latency"]
    for p in panels:
        assert len(p.findall("svg:circle", NS)) == len(XS)
        (line,) = p.findall("svg:polyline", NS)
        assert len((line.get("points") or "").split()) == len(XS)


def test_axes_are_labelled_with_the_x_values_and_each_panels_unit() -> None:
    root = parse(line_chart_svg(XS, [THROUGHPUT, P99], x_label="model calls per invocation"))

    for panel, series in zip(panels_of(root), (THROUGHPUT, P99), strict=True):
        assert texts(panel, "x-tick") == [str(x) for x in XS]
        assert texts(panel, "x-label") == ["model calls per invocation"]
        assert texts(panel, "y-label") == [series.y_label]
        ticks = [float(t) for t in texts(panel, "y-tick")]
        assert ticks[0] == 0 and ticks == sorted(ticks)
        assert ticks[-1] >= max(series.values)  # the axis reaches past the highest point


def test_a_higher_value_is_drawn_higher_and_a_larger_x_further_right() -> None:
    root = parse(line_chart_svg(XS, [P99], x_label="x"))

    circles = panels_of(root)[0].findall("svg:circle", NS)
    cx = [float(c.get("cx") or 0) for c in circles]
    cy = [float(c.get("cy") or 0) for c in circles]
    assert cx == sorted(cx) and len(set(cx)) == len(cx)
    # SVG's y grows downwards: the largest latency has the smallest y.
    assert cy.index(min(cy)) == P99.values.index(max(P99.values))
    # log2 x: the doubling steps are evenly spaced.
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(cx)]
    assert len(set(gaps)) == 1


def test_every_point_lies_inside_the_drawing() -> None:
    root = parse(line_chart_svg(XS, [THROUGHPUT, P99], x_label="x"))

    width, height = float(root.get("width") or 0), float(root.get("height") or 0)
    for c in root.iter("{http://www.w3.org/2000/svg}circle"):
        assert 0 <= float(c.get("cx") or -1) <= width
        assert 0 <= float(c.get("cy") or -1) <= height


def test_text_is_escaped() -> None:
    root = parse(line_chart_svg([1, 2], [Panel("a < b & c", "ms", [1.0, 2.0])], x_label="<x>"))

    assert panels_of(root)[0].get("data-title") == "a < b & c"
    assert texts(panels_of(root)[0], "x-label") == ["<x>"]


@pytest.mark.parametrize(
    ("xs", "panels"),
    [
        ([], [THROUGHPUT]),
        (XS, []),
        (XS[:3], [THROUGHPUT]),
        ([0, 1, 2, 4, 8], [THROUGHPUT]),
        (XS, [Panel("nan", "ms", [1.0, 2.0, float("nan"), 3.0, 4.0])]),
    ],
)
def test_inconsistent_input_is_refused(xs: list[float], panels: list[Panel]) -> None:
    with pytest.raises(ValueError):
        line_chart_svg(xs, panels, x_label="x")


@pytest.mark.parametrize(("value", "ceiling"), [(0.7, 0.8), (108.3, 150.0), (121, 150), (4100, 5000), (25, 25), (0, 1)])
def test_axes_end_on_round_numbers(value: float, ceiling: float) -> None:
    assert nice_ceiling(value) == ceiling
