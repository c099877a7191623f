"""Histograms for the run report: equal-width bins, drawn as text and as plain hand-written SVG.

    histogram_bins(values, bins, value_range) -> list[Bin]
    text_histogram(values, bins, value_range)  -> str  (one line per bin, for Markdown / <pre>)
    histogram_svg(values, title, x_label, ...) -> str  (a standalone SVG document)
    line_chart_svg(series, title, x_label, y_label, y_range) -> str  (lines, one per series)
    text_lines(series)                         -> str  (one line per series, its points)

Both drawings use the same bins, so the text and the chart of one distribution cannot disagree.
The SVG is built from a handful of elements (svg, title, text, line, rect) with fixed attributes;
every piece of text in it goes through `xml_escape`, so a title naming run data (a ranker, a
problem id) cannot add markup. There is nothing scriptable in it: no <script>, no event
attributes, no foreignObject, no links, no external fonts or styles.

Each bar is one <rect> holding a <title> "[low, high): count" (browsers show it on hover, tests
read it); empty bins draw no rect. No values draw no bar and say "no values"; all values equal
(and no fixed range) draw one full-width bar labelled with that value.

The line chart follows the same rules with two more plain elements (polyline, circle): one
polyline plus a circle per point for each series, in fixed colours, and a legend below the plot.
Each circle holds a <title> "series: (x, y)"; series names are run data and escaped like all text.
Non-finite points are not drawn; no finite point says "no values".
"""

from __future__ import annotations

import bisect
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Bin",
    "HISTOGRAM_BINS",
    "SERIES_COLOURS",
    "SVG_NAMESPACE",
    "histogram_bins",
    "histogram_svg",
    "line_chart_svg",
    "text_histogram",
    "text_lines",
    "xml_escape",
]

HISTOGRAM_BINS = 10
SVG_NAMESPACE = "http://www.w3.org/2000/svg"

# Layout of one chart, in SVG user units (pixels at 100 % zoom).
WIDTH_PX = 480
HEIGHT_PX = 260
MARGIN_LEFT_PX = 52
MARGIN_RIGHT_PX = 16
MARGIN_TOP_PX = 40
MARGIN_BOTTOM_PX = 48
FONT_PX = 11
BAR_COLOUR = "#4c72b0"
AXIS_COLOUR = "#333333"
GRID_COLOUR = "#dddddd"
# Line charts: series colours in order (repeating past the last), the legend rows below the plot,
# the inset keeping end points off the axes, and the least gap between two x tick labels.
SERIES_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
LEGEND_ROW_PX = 16
LINE_INSET_PX = 10
MIN_TICK_GAP_PX = 24
POINT_RADIUS_PX = 3


@dataclass(frozen=True)
class Bin:
    """One histogram bin: values in [low, high), or [low, high] when `closed` (the last bin)."""

    low: float
    high: float
    count: int
    closed: bool = False

    def label(self) -> str:
        closing = "]" if self.closed else ")"
        return f"[{_number(self.low)}, {_number(self.high)}{closing}"


def xml_escape(text: str) -> str:
    """Text safe as XML character data and inside double-quoted attributes."""
    return html.escape(text, quote=True)


def _number(value: float) -> str:
    """A bin edge or tick for people: 4 significant digits (CodeT scores reach tens, ranks reach 1e4)."""
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"


def _finite(values: Sequence[float]) -> list[float]:
    return [float(value) for value in values if math.isfinite(value)]


def histogram_bins(
    values: Sequence[float], bins: int = HISTOGRAM_BINS, value_range: tuple[float, float] | None = None
) -> list[Bin]:
    """Count `values` into `bins` equal-width bins over `value_range` (default: min to max).

    Non-finite values are not counted (callers report how many). No values give no bins; all
    values equal without a fixed range give one closed bin [v, v]. Values outside a fixed range
    count in the first or last bin, so every value is in the picture.
    """
    finite = _finite(values)
    if not finite:
        return []
    low, high = value_range if value_range is not None else (min(finite), max(finite))
    if low == high:
        return [Bin(low, high, len(finite), closed=True)]
    # Edges as low + width * i / bins (not low + i * step): i / bins rounds once, so an edge such as
    # 0.3 is exactly float 0.3 and a confidence of 0.3 counts in [0.3, 0.4), as its label says.
    edges = [low + (high - low) * index / bins for index in range(bins)] + [high]
    counts = [0] * bins
    for value in finite:
        # Values outside a fixed range clamp to the end bins; `high` itself is in the closed last bin.
        counts[min(max(bisect.bisect_right(edges, value) - 1, 0), bins - 1)] += 1
    return [Bin(edges[index], edges[index + 1], count, index == bins - 1) for index, count in enumerate(counts)]


def text_histogram(
    values: Sequence[float],
    bins: int = HISTOGRAM_BINS,
    value_range: tuple[float, float] | None = None,
    width_chars: int = 40,
) -> str:
    """Text histogram: one line per bin, `[low, high)  count  ####` (the last bin is closed)."""
    counted = histogram_bins(values, bins, value_range)
    if not counted:
        return "(no values)"
    if len(counted) == 1 and counted[0].low == counted[0].high:
        only = counted[0]
        return f"[{only.low:.3g}, {only.high:.3g}]  {only.count:>6}  {'#' * width_chars}  (all equal)"
    peak = max(item.count for item in counted)
    lines = []
    for item in counted:
        closing = "]" if item.closed else ")"
        bar = "#" * round(width_chars * item.count / peak)
        lines.append(f"[{item.low:7.3g}, {item.high:7.3g}{closing}  {item.count:>6}  {bar}".rstrip())
    return "\n".join(lines)


def _count_axis(peak: int) -> tuple[int, list[int]]:
    """The count axis for a tallest bar of `peak` (>= 1): its top and whole-number ticks, evenly
    spaced at a round step (1, 2 or 5 x 10^k) with at most 5 steps, the top tick >= `peak`."""
    magnitude = 1
    while True:
        for mantissa in (1, 2, 5):
            step = mantissa * magnitude
            steps = math.ceil(peak / step)
            if steps <= 5:
                return step * steps, list(range(0, step * steps + 1, step))
        magnitude *= 10


def _text(x: float, y: float, text: str, anchor: str = "middle", size_px: int = FONT_PX, extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size_px}" text-anchor="{anchor}"{extra}>'
        f"{xml_escape(text)}</text>"
    )


def _chart_head(title: str, subtitle: str, height_px: int) -> list[str]:
    """A chart's opening: the <svg> element, its <title> and the title and subtitle lines."""
    return [
        f'<svg xmlns="{SVG_NAMESPACE}" width="{WIDTH_PX}" height="{height_px}" '
        f'viewBox="0 0 {WIDTH_PX} {height_px}" font-family="sans-serif" role="img">',
        f"<title>{xml_escape(title)}</title>",
        _text(WIDTH_PX / 2, 16, title, size_px=FONT_PX + 2, extra=' font-weight="bold"'),
        _text(WIDTH_PX / 2, 31, subtitle, size_px=FONT_PX - 1, extra=' fill="#666666"'),
    ]


def _axes() -> str:
    """The plot area's x and y axis lines."""
    left, right = MARGIN_LEFT_PX, WIDTH_PX - MARGIN_RIGHT_PX
    top, bottom = MARGIN_TOP_PX, HEIGHT_PX - MARGIN_BOTTOM_PX
    return (f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{AXIS_COLOUR}"/>'
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="{AXIS_COLOUR}"/>')


def histogram_svg(
    values: Sequence[float],
    title: str,
    x_label: str,
    bins: int = HISTOGRAM_BINS,
    value_range: tuple[float, float] | None = None,
) -> str:
    """A histogram of `values` as a standalone SVG document (bars, axes, ticks, labels, title).

    `title` and `x_label` may hold run data: they are escaped like every other text. The result
    carries the SVG namespace so it renders as a file or a data: URI; inline in HTML5 the
    namespace is implied.
    """
    finite = _finite(values)
    not_drawn = len(values) - len(finite)
    counted = histogram_bins(finite, bins, value_range)
    plot_left, plot_right = MARGIN_LEFT_PX, WIDTH_PX - MARGIN_RIGHT_PX
    plot_top, plot_bottom = MARGIN_TOP_PX, HEIGHT_PX - MARGIN_BOTTOM_PX
    plot_width, plot_height = plot_right - plot_left, plot_bottom - plot_top

    subtitle = f"{len(finite)} values" + (f" ({not_drawn} more not finite, not drawn)" if not_drawn else "")
    parts = _chart_head(title, subtitle, HEIGHT_PX)
    axes = _axes()
    x_label_text = _text((plot_left + plot_right) / 2, HEIGHT_PX - 8, x_label)
    y_label_text = _text(
        14, (plot_top + plot_bottom) / 2, "count", extra=f' transform="rotate(-90 14 {(plot_top + plot_bottom) / 2:.1f})"'
    )

    if not counted:
        parts += [axes, _text((plot_left + plot_right) / 2, (plot_top + plot_bottom) / 2, "no values"), x_label_text]
        parts.append("</svg>")
        return "\n".join(parts) + "\n"

    axis_top, ticks = _count_axis(max(item.count for item in counted))
    for tick in ticks:  # y axis: grid line, tick mark and value per tick
        y = plot_bottom - plot_height * tick / axis_top
        parts.append(f'<line x1="{plot_left}" y1="{y:.1f}" x2="{plot_right}" y2="{y:.1f}" stroke="{GRID_COLOUR}"/>')
        parts.append(f'<line x1="{plot_left - 4}" y1="{y:.1f}" x2="{plot_left}" y2="{y:.1f}" stroke="{AXIS_COLOUR}"/>')
        parts.append(_text(plot_left - 6, y + 4, str(tick), anchor="end"))

    bar_width = plot_width / len(counted)
    for index, item in enumerate(counted):
        if item.count == 0:
            continue
        bar_height = plot_height * item.count / axis_top
        x, y = plot_left + index * bar_width, plot_bottom - bar_height
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar_width - 2, 1):.1f}" height="{bar_height:.1f}" '
            f'fill="{BAR_COLOUR}"><title>{xml_escape(item.label())}: {item.count}</title></rect>'
        )

    # x axis: the bin edges; every other one when there are many bins, so labels do not overlap.
    if len(counted) == 1:
        edge_labels = [((plot_left + plot_right) / 2, _number(counted[0].low))]
    else:
        edges = [item.low for item in counted] + [counted[-1].high]
        every = 1 if len(counted) <= 5 else 2
        edge_labels = [
            (plot_left + index * bar_width, _number(edge)) for index, edge in enumerate(edges) if index % every == 0
        ]
        if (len(edges) - 1) % every:  # always label the top edge
            edge_labels.append((plot_right, _number(edges[-1])))
    for x, label in edge_labels:
        parts.append(f'<line x1="{x:.1f}" y1="{plot_bottom}" x2="{x:.1f}" y2="{plot_bottom + 4}" stroke="{AXIS_COLOUR}"/>')
        parts.append(_text(x, plot_bottom + 16, label))

    parts += [axes, x_label_text, y_label_text, "</svg>"]
    return "\n".join(parts) + "\n"


def _finite_points(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points with both coordinates finite, as floats, in x order (the order a line joins them)."""
    kept = [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    return sorted(kept, key=lambda point: point[0])


def _point_label(name: str, x: float, y: float) -> str:
    return f"{name}: ({_number(x)}, {_number(y)})"


def text_lines(series: Mapping[str, Sequence[tuple[float, float]]]) -> str:
    """The line chart as text: one line per series, `name: (x, y) (x, y) ...` in x order."""
    if not series:
        return "(no values)"
    lines = []
    for name, points in series.items():
        drawn = _finite_points(points)
        shown = " ".join(f"({_number(x)}, {_number(y)})" for x, y in drawn) or "(no values)"
        lines.append(f"{name}: {shown}")
    return "\n".join(lines)


def _padded(low: float, high: float) -> tuple[float, float]:
    """An axis range that is not a single value: one unit either side of it."""
    return (low - 1.0, high + 1.0) if low == high else (low, high)


def line_chart_svg(
    series: Mapping[str, Sequence[tuple[float, float]]],
    title: str,
    x_label: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
) -> str:
    """A line chart of `series` (name -> (x, y) points) as a standalone SVG document: per series
    one polyline and a marker per point in its colour, axes with ticks, labels and a legend.

    Names, `title` and the labels may hold run data: they are escaped like every other text. The
    plot area is the histogram's; the legend adds a row per series below it. The y axis spans
    `y_range` (default: the points' min to max); a point outside it is drawn on its edge, its
    <title> still giving the true value. The x ticks are the points' x values while there are at
    most 10 of them (labels closer than MIN_TICK_GAP_PX skipped), else 5 even steps.
    """
    drawn = {name: _finite_points(points) for name, points in series.items()}
    every_point = [point for points in drawn.values() for point in points]
    not_drawn = sum(len(points) for points in series.values()) - len(every_point)
    plot_left, plot_right = MARGIN_LEFT_PX, WIDTH_PX - MARGIN_RIGHT_PX
    plot_top, plot_bottom = MARGIN_TOP_PX, HEIGHT_PX - MARGIN_BOTTOM_PX
    plot_height = plot_bottom - plot_top
    height_px = HEIGHT_PX + (LEGEND_ROW_PX * len(series) + 4 if every_point else 0)

    subtitle = f"{len(every_point)} points" + (f" ({not_drawn} more not finite, not drawn)" if not_drawn else "")
    parts = _chart_head(title, subtitle, height_px)
    axes = _axes()
    x_label_text = _text((plot_left + plot_right) / 2, HEIGHT_PX - 8, x_label)
    middle_y = (plot_top + plot_bottom) / 2
    y_label_text = _text(14, middle_y, y_label, extra=f' transform="rotate(-90 14 {middle_y:.1f})"')

    if not every_point:
        parts += [axes, _text((plot_left + plot_right) / 2, middle_y, "no values"), x_label_text, y_label_text]
        parts.append("</svg>")
        return "\n".join(parts) + "\n"

    xs = sorted({x for x, _ in every_point})
    x_low, x_high = _padded(xs[0], xs[-1])
    y_low, y_high = _padded(*(y_range if y_range is not None else (min(y for _, y in every_point),
                                                                    max(y for _, y in every_point))))
    inner_left, inner_right = plot_left + LINE_INSET_PX, plot_right - LINE_INSET_PX

    def to_x(x: float) -> float:
        return inner_left + (inner_right - inner_left) * (x - x_low) / (x_high - x_low)

    def to_y(y: float) -> float:
        share = min(max((y - y_low) / (y_high - y_low), 0.0), 1.0)  # outside the range: on its edge
        return plot_bottom - plot_height * share

    for index in range(5):  # y axis: grid line, tick mark and value at 5 even steps
        tick = y_low + (y_high - y_low) * index / 4
        y = to_y(tick)
        parts.append(f'<line x1="{plot_left}" y1="{y:.1f}" x2="{plot_right}" y2="{y:.1f}" stroke="{GRID_COLOUR}"/>')
        parts.append(f'<line x1="{plot_left - 4}" y1="{y:.1f}" x2="{plot_left}" y2="{y:.1f}" stroke="{AXIS_COLOUR}"/>')
        parts.append(_text(plot_left - 6, y + 4, _number(tick), anchor="end"))

    ticks = xs if len(xs) <= 10 else [x_low + (x_high - x_low) * index / 4 for index in range(5)]
    labelled: list[tuple[float, float]] = []  # (position, value), at least MIN_TICK_GAP_PX apart
    for tick in ticks:
        position = to_x(tick)
        if labelled and position - labelled[-1][0] < MIN_TICK_GAP_PX:
            if tick != ticks[-1]:
                continue
            labelled.pop()  # always label the last tick
        labelled.append((position, tick))
    for position, tick in labelled:
        parts.append(
            f'<line x1="{position:.1f}" y1="{plot_bottom}" x2="{position:.1f}" y2="{plot_bottom + 4}" '
            f'stroke="{AXIS_COLOUR}"/>'
        )
        parts.append(_text(position, plot_bottom + 16, _number(tick)))

    for index, (name, points) in enumerate(drawn.items()):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        if len(points) > 1:
            joined = " ".join(f"{to_x(x):.1f},{to_y(y):.1f}" for x, y in points)
            parts.append(f'<polyline points="{joined}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in points:
            parts.append(
                f'<circle cx="{to_x(x):.1f}" cy="{to_y(y):.1f}" r="{POINT_RADIUS_PX}" fill="{colour}">'
                f"<title>{xml_escape(_point_label(name, x, y))}</title></circle>"
            )
        legend_y = HEIGHT_PX + 4 + LEGEND_ROW_PX * index + LEGEND_ROW_PX / 2  # one row per series
        parts.append(
            f'<line x1="{plot_left}" y1="{legend_y:.1f}" x2="{plot_left + 20}" y2="{legend_y:.1f}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(f'<circle cx="{plot_left + 10}" cy="{legend_y:.1f}" r="{POINT_RADIUS_PX}" fill="{colour}"/>')
        shown = name if points else f"{name} (no values)"
        parts.append(_text(plot_left + 26, legend_y + 4, shown, anchor="start"))

    parts += [axes, x_label_text, y_label_text, "</svg>"]
    return "\n".join(parts) + "\n"
