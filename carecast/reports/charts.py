"""Charts as inline SVG written here, so the report needs no script, font or file from anywhere.

A hidden count has no bar height to give away: it is drawn as a dashed stub of fixed size labelled
with its marker. Colours are SVG presentation attributes (not ``style``), which the report's
Content-Security-Policy allows without loosening it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PALETTE = ("#2f6db5", "#e07b39", "#3a9a5b", "#8e5ea2", "#c94f4f", "#6b7b8c")
_INK, _GRID, _HIDDEN = "#222222", "#dddddd", "#9a9a9a"


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None
    """None when the count (or a count behind the rate) is hidden."""
    text: str
    """What is printed by the bar: the count or rate as published."""


def horizontal_bars(title: str, bars: Sequence[Bar], width: int = 720) -> str:
    """One bar per row, labels on the left, printed values on the right: for a funnel."""
    row, label_width, text_width = 24, 250, 90
    height = row * len(bars) + 10
    scale = (width - label_width - text_width) / max([bar.value or 0 for bar in bars] + [1])
    parts = []
    for i, bar in enumerate(bars):
        y = 5 + i * row
        parts.append(_text(label_width - 8, y + 16, bar.label, anchor="end"))
        if bar.value is None:
            parts.append(_hidden_stub(label_width, y + 4, 30, row - 8))
            end = label_width + 30
        else:
            length = bar.value * scale
            parts.append(_rect(label_width, y + 4, length, row - 8, PALETTE[0]))
            end = label_width + length
        parts.append(_text(end + 6, y + 16, bar.text))
    return _svg(title, width, height, parts)


def grouped_columns(
    title: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[Bar]]],
    axis_label: Callable[[float], str],
    width: int = 720,
    height: int = 260,
) -> str:
    """Columns per group (one per series, in legend order), with a value axis from zero."""
    left, right, top, bottom = 64, 12, 28, 40
    plot_width, plot_height = width - left - right, height - top - bottom
    shown = [bar.value for _name, bars in series for bar in bars if bar.value is not None]
    ceiling = _nice_ceiling(max(shown, default=0.0))
    parts = [*_legend(left, 14, [name for name, _bars in series])]
    for tick in range(5):
        value = ceiling * tick / 4
        y = top + plot_height - plot_height * tick / 4
        parts.append(_line(left, y, left + plot_width, y, _GRID))
        parts.append(_text(left - 6, y + 4, axis_label(value), anchor="end"))
    group_width = plot_width / max(len(groups), 1)
    column = min(36.0, group_width * 0.8 / max(len(series), 1))
    for g, group in enumerate(groups):
        start = left + g * group_width + (group_width - column * len(series)) / 2
        for s, (_name, bars) in enumerate(series):
            bar = bars[g]
            x = start + s * column
            if bar.value is None:
                parts.append(_hidden_stub(x + 2, top + plot_height - 18, column - 4, 18))
                y = top + plot_height - 18
            else:
                bar_height = plot_height * bar.value / ceiling
                y = top + plot_height - bar_height
                parts.append(_rect(x + 2, y, column - 4, bar_height, PALETTE[s % len(PALETTE)]))
            parts.append(_text(x + column / 2, y - 4, bar.text, anchor="middle", size=10))
        parts.append(_text(start + column * len(series) / 2, height - bottom + 16, group, anchor="middle"))
    parts.append(_line(left, top + plot_height, left + plot_width, top + plot_height, _INK))
    return _svg(title, width, height, parts)


def _nice_ceiling(value: float) -> float:
    """The axis maximum: 1, 2 or 5 times a power of ten, at or above the largest value."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def _legend(x: float, y: float, names: Sequence[str]) -> list[str]:
    parts = []
    for i, name in enumerate(names):
        parts.append(_rect(x, y - 9, 10, 10, PALETTE[i % len(PALETTE)]))
        parts.append(_text(x + 14, y, name))
        x += 24 + 7 * len(name)
    return parts


def _svg(title: str, width: int, height: int, parts: list[str]) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>{"".join(parts)}</svg>'
    )


def _rect(x: float, y: float, width: float, height: float, fill: str) -> str:
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width, 0):.1f}" height="{height:.1f}" fill="{fill}"/>'


def _hidden_stub(x: float, y: float, width: float, height: float) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" fill="none" '
        f'stroke="{_HIDDEN}" stroke-dasharray="3 2"/>'
    )


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}"/>'


def _text(x: float, y: float, content: str, anchor: str = "start", size: int = 12) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{_INK}" font-family="system-ui, sans-serif" '
        f'font-size="{size}">{html.escape(content)}</text>'
    )
