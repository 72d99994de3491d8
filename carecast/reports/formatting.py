"""How published numbers read, the same in the HTML, the markdown and the charts."""

from __future__ import annotations

from carecast.reports.facts import ALL
from carecast.reports.published import Count, HoldoutLift, VariantComparison

NOT_SHOWN = "—"
"""A rate or a test that is not shown: one of its counts is hidden, or there is nothing to divide by."""
RATE_LABELS = {
    "delivery_rate": "delivery rate",
    "open_rate": "open rate",
    "click_rate": "click rate",
    "click_to_open_rate": "click-to-open rate",
    "unsubscribe_rate": "unsubscribe rate",
    "complaint_rate": "complaint rate",
}
MEASURE_LABELS = {
    "targeted": "targeted (segment)",
    "holdout": "holdout (not sent, for comparison)",
    "audience": "audience",
    "sent": "sent",
    "not_sent": "not sent",
    "delivered": "delivered",
    "bounced": "bounced",
    "opened": "opened",
    "clicked": "clicked",
    "unsubscribed": "unsubscribed",
    "complained": "complained",
}


DETAIL = {
    2: "two-way tables only (variant × segment, variant × day, segment × day)",
    1: "by variant, by segment and by day separately",
    0: "in total only",
}
"""What a report published in less than full detail shows (``Layout.detail``)."""


def detail_note(detail: int) -> str:
    """Why some splits read n/p, or nothing when the report has its full detail."""
    if detail not in DETAIL:
        return ""
    return (
        f"This run is published {DETAIL[detail]}: the finer split would have left a small count that no "
        "complementary suppression could hide. n/p: not published."
    )


def count(published: Count) -> str:
    return published.text if published.value is None else f"{published.value:,}"


def percent(rate: float | None) -> str:
    return NOT_SHOWN if rate is None else f"{rate * 100:.1f} %"


def points(difference: float | None) -> str:
    """A difference of two rates, in percentage points."""
    return NOT_SHOWN if difference is None else f"{difference * 100:+.1f} pts"


def p_value(value: float | None) -> str:
    if value is None:
        return NOT_SHOWN
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def label(category: str) -> str:
    return "total" if category == ALL else category


def verdict(comparison: VariantComparison) -> str:
    if comparison.significant is None:
        return comparison.note
    return "significant at 0.05" if comparison.significant else "not significant at 0.05"


def difference(comparison: VariantComparison) -> float | None:
    if comparison.variant_rate is None or comparison.control_rate is None:
        return None
    return comparison.variant_rate - comparison.control_rate


def lift_sentence(lift: HoldoutLift) -> str:
    if lift.absolute is None:
        return lift.note
    relative = "" if lift.relative is None else f", {lift.relative * 100:+.0f} % relative"
    return (
        f"{points(lift.absolute)} (95 % CI {points(lift.low)} to {points(lift.high)}){relative}: "
        f"treated {percent(lift.treated_rate)} against holdout {percent(lift.holdout_rate)}"
    )
