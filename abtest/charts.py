"""Server-rendered SVG line charts for the report page (no JavaScript, nothing from a CDN)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

# One colour per arm in report order (control first); the holdout is always grey.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
HOLDOUT_COLOUR = "#7f7f7f"
WIDTH, HEIGHT = 460, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 28, 40
LEGEND_ROW, LEGEND_PER_ROW, LEGEND_WIDTH = 14, 3, 150


def _nice_max(value: float) -> float:
    """A round upper bound for the y axis (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if step * magnitude >= value)


def line_chart(
    *,
    title: str,
    dates: Sequence[str],
    series: Sequence[dict],
    value_format: str = "{:.3f}",
) -> str:
    """One SVG with a line per series; each series has `label`, `group`, `values`, `dashed`."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_max(max((max(s["values"], default=0) for s in series), default=0))
    steps = max(len(dates) - 1, 1)

    def xy(i: int, v: float) -> str:
        return f"{LEFT + plot_w * i / steps:.1f},{TOP + plot_h * (1 - v / top):.1f}"

    height = HEIGHT + LEGEND_ROW * max(
        (len(series) - 1) // LEGEND_PER_ROW, 0
    )  # room for every legend row
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{LEFT}" y="16" font-weight="bold">{escape(title)}</text>',
    ]
    for k in range(5):  # horizontal grid with labels
        v = top * k / 4
        y = TOP + plot_h * (1 - k / 4)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(value_format.format(v))}</text>"
        )
    for i, day in enumerate(dates):
        if i in (0, len(dates) - 1) or len(dates) <= 8:
            parts.append(
                f'<text x="{LEFT + plot_w * i / steps:.1f}" y="{HEIGHT - BOTTOM + 14}" '
                f'text-anchor="middle">{escape(day[5:])}</text>'
            )
    for n, s in enumerate(series):
        colour = s.get("colour", "#333")
        dash = ' stroke-dasharray="5,3"' if s.get("dashed") else ""
        points = " ".join(xy(i, v) for i, v in enumerate(s["values"]))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{points}"/>'
        )
        legend_y = HEIGHT - 12 + LEGEND_ROW * (n // LEGEND_PER_ROW)  # rows below the plot
        legend_x = 8 + (n % LEGEND_PER_ROW) * LEGEND_WIDTH
        parts.append(
            f'<line x1="{legend_x}" x2="{legend_x + 16}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{legend_x + 20}" y="{legend_y}">{escape(s["label"])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def report_charts(daily: dict) -> list[str]:
    """Cumulative active rate and ARPU per arm (solid: whole arm, dashed: targeted)."""
    groups = list(dict.fromkeys(s["group"] for s in daily.get("series", [])))
    arms = [g for g in groups if g != "holdout"]
    colours = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(arms)}
    colours["holdout"] = HOLDOUT_COLOUR
    charts = []
    for metric, title, fmt in (
        ("active_rate", "Cumulative active rate", "{:.1%}"),
        ("arpu", "Cumulative ARPU", "{:,.2f}"),
    ):
        series = [
            {
                "label": f"{s['group']}{' (targeted)' if s['population'] == 'targeted' else ''}",
                "group": s["group"],
                "colour": colours[s["group"]],
                "dashed": s["population"] == "targeted",
                "values": s[metric],
            }
            for s in daily.get("series", [])
        ]
        charts.append(
            line_chart(title=title, dates=daily.get("dates", []), series=series, value_format=fmt)
        )
    return charts
