"""The CSV export: every published count (as printed) with its rates, one row per count and rate."""

from __future__ import annotations

import csv
import io

from carecast.reports.facts import HOLDOUT
from carecast.reports.published import RATES, Count, PublishedReport
from carecast.reports.tables import CONVERSION, OUTCOMES, Cell

COLUMNS = ("section", "variant", "segment", "day", "measure", "count", "rate", "rate_of")
HIDDEN_RATE = "hidden"
"""A rate whose numerator or denominator is hidden."""


def report_csv(report: PublishedReport) -> str:
    """``section`` is funnel, outcomes or conversion; ``all`` in variant, segment or day is the total over
    it; ``rate`` is a proportion (4 decimals) of the count named in ``rate_of``, blank where none applies."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for cell, count in report.counts.items():
        for rate, rate_of in _rates(report, cell) or [("", "")]:
            writer.writerow(
                [cell.section, cell.variant, cell.segment, cell.day, cell.measure, count.text, rate, rate_of]
            )
    return out.getvalue()


def _rates(report: PublishedReport, cell: Cell) -> list[tuple[str, str]]:
    if cell.section == CONVERSION:
        size = report.arm_size(cell.variant)
        return [(_rate_text(report.counts[cell], size), HOLDOUT if cell.variant == HOLDOUT else "audience")]
    if cell.section != OUTCOMES:
        return []
    position = (cell.variant, cell.segment, cell.day)
    return [
        (_rate_text(report.outcome(numerator, *position), report.outcome(denominator, *position)), denominator)
        for numerator, denominator in RATES.values()
        if numerator == cell.measure
    ]


def _rate_text(numerator: Count, denominator: Count) -> str:
    if numerator.value is None or denominator.value is None:
        return HIDDEN_RATE
    return f"{numerator.value / denominator.value:.4f}" if denominator.value else ""
