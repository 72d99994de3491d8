"""The published view: what the renderers (HTML, CSV, markdown) receive, and all they receive.

It holds the printed form of every published count (a number, ``<11`` or ``>10``), never a true
count behind a marker. Rates, A/B tests and the holdout lift are computed here from printed counts
only, so a rate whose numerator or denominator is hidden is hidden too, and a test or an interval
needing a hidden count says "not enough data": none can leak what the markers hide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from carecast.reports.disclosure import Protection
from carecast.reports.facts import ALL, HOLDOUT, NOT_ATTEMPTED
from carecast.reports.statistics import Z_95, TestResult, compare_proportions, holm, newcombe_interval
from carecast.reports.tables import EXCLUDED_PREFIX, Cell, Layout

ALPHA = 0.05
RATES = {
    "delivery_rate": ("delivered", "sent"),
    "open_rate": ("opened", "delivered"),
    "click_rate": ("clicked", "delivered"),
    "click_to_open_rate": ("clicked", "opened"),
    "unsubscribe_rate": ("unsubscribed", "delivered"),
    "complaint_rate": ("complained", "delivered"),
}
"""Outcome rates: name -> (numerator, denominator), both outcome measures at the same position."""
COMPARED_RATES = ("open_rate", "click_rate")
HEADLINE_OUTCOMES = ("sent", "delivered", "bounced", "not_sent", "opened", "clicked", "unsubscribed", "complained")


@dataclass(frozen=True)
class CampaignRun:
    """What identifies the campaign run a report is about: names and hashes, no counts."""

    campaign: str
    purpose: str
    send_date: str
    segment_sha256: Mapping[str, str]
    """Segment name -> sha256 of its SQL."""
    template_sha256: str
    variants: tuple[str, ...] = ()
    """The campaign's variants in order; the first is the control the others are compared with."""
    goal: str | None = None
    """What counts as converted, in words; None when the campaign has no goal."""


@dataclass(frozen=True)
class Count:
    text: str
    value: int | None
    """None when hidden."""


NOT_PUBLISHED = Count(text="n/p", value=None)
"""A count of a split the report does not publish: a small campaign is reported in less detail when
the full variant x segment x day detail would leave a small count exposed."""


@dataclass(frozen=True)
class VariantComparison:
    rate: str
    control: str
    variant: str
    control_rate: float | None
    variant_rate: float | None
    method: str | None = None
    p_value: float | None = None
    """Holm-adjusted over the comparisons of this rate."""
    note: str = ""

    @property
    def significant(self) -> bool | None:
        return None if self.p_value is None else self.p_value < ALPHA


@dataclass(frozen=True)
class HoldoutLift:
    treated_rate: float | None = None
    holdout_rate: float | None = None
    absolute: float | None = None
    low: float | None = None
    high: float | None = None
    relative: float | None = None
    note: str = ""


@dataclass(frozen=True)
class PublishedReport:
    run: CampaignRun
    layout: Layout
    counts: dict[Cell, Count]
    """Every printed count, in reading order: funnel, outcomes, conversion."""
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))

    def outcome(self, measure: str, variant: str = ALL, segment: str = ALL, day: str = ALL) -> Count:
        return self.counts.get(self.layout.outcome(measure, variant, segment, day), NOT_PUBLISHED)

    def funnel(self, measure: str, segment: str = ALL) -> Count:
        if measure == "audience":
            return self.outcome("audience", segment=segment)
        return self.counts.get(self.layout.funnel(measure, segment), NOT_PUBLISHED)

    def excluded(self, segment: str = ALL) -> dict[str, Count]:
        return {reason: self.funnel(EXCLUDED_PREFIX + reason, segment) for reason in self.layout.reasons}

    def conversion(self, arm: str = ALL) -> Count:
        return self.counts.get(self.layout.conversion("converted", arm), NOT_PUBLISHED)

    def arm_size(self, arm: str = ALL) -> Count:
        """The members of a variant (``ALL``: every treated member) or of the holdout."""
        return self.funnel("holdout") if arm == HOLDOUT else self.outcome("audience", variant=arm)

    def rate(self, name: str, variant: str = ALL, segment: str = ALL, day: str = ALL) -> float | None:
        numerator, denominator = RATES[name]
        return _ratio(
            self.outcome(numerator, variant, segment, day).value, self.outcome(denominator, variant, segment, day).value
        )

    def conversion_rate(self, arm: str = ALL) -> float | None:
        return _ratio(self.conversion(arm).value, self.arm_size(arm).value)

    def sending_days(self) -> tuple[str, ...]:
        """The days something was attempted (the ``not attempted`` bucket has no outcomes)."""
        return tuple(day for day in self.layout.days if day != NOT_ATTEMPTED)

    @cached_property
    def comparisons(self) -> list[VariantComparison]:
        """Each variant against the first, on each compared rate; Holm over the variants of one rate."""
        control, *others = self.layout.variants or ("",)
        comparisons = []
        for rate in COMPARED_RATES:
            tests = [self._test(rate, variant, control) for variant in others]
            # A comparison that cannot be tested counts as p = 1: the adjustment stays conservative.
            adjusted = holm([1.0 if test is None else test.p_value for test, _note in tests])
            for variant, (test, note), p_value in zip(others, tests, adjusted, strict=True):
                comparisons.append(
                    VariantComparison(
                        rate=rate,
                        control=control,
                        variant=variant,
                        control_rate=self.rate(rate, variant=control),
                        variant_rate=self.rate(rate, variant=variant),
                        method=None if test is None else test.method,
                        p_value=None if test is None else p_value,
                        note=note,
                    )
                )
        return comparisons

    def _test(self, rate: str, variant: str, control: str) -> tuple[TestResult | None, str]:
        numerator, denominator = RATES[rate]
        x1, n1, x2, n2 = (
            self.outcome(measure, variant=arm).value
            for arm in (variant, control)
            for measure in (numerator, denominator)
        )
        if None in (x1, n1, x2, n2):
            return None, "not enough data: counts hidden"
        if not n1 or not n2:
            return None, f"not enough data: no {denominator} messages"
        return compare_proportions(x1, n1, x2, n2), ""

    @cached_property
    def lift(self) -> HoldoutLift:
        """Conversion of every treated member against the holdout's."""
        if not self.layout.has_goal:
            return HoldoutLift(note="no conversion goal for this campaign")
        if not self.layout.has_holdout:
            return HoldoutLift(note="no holdout group in this campaign")
        rates = {"treated_rate": self.conversion_rate(), "holdout_rate": self.conversion_rate(HOLDOUT)}
        x1, n1 = self.conversion().value, self.arm_size().value
        x2, n2 = self.conversion(HOLDOUT).value, self.arm_size(HOLDOUT).value
        if None in (x1, n1, x2, n2):
            return HoldoutLift(**rates, note="not enough data: counts hidden")
        if not n1:
            return HoldoutLift(**rates, note="not enough data: no treated members")
        absolute, low, high = newcombe_interval(x1, n1, x2, n2, Z_95)
        relative = absolute / rates["holdout_rate"] if rates["holdout_rate"] else None
        return HoldoutLift(**rates, absolute=absolute, low=low, high=high, relative=relative)

    def marketer_view(self) -> dict[str, object]:
        """The headline counts as printed, for materialization metadata."""
        return {
            "segment": self.funnel("targeted").text,
            "excluded": {reason: count.text for reason, count in self.excluded().items()},
            "holdout": self.funnel("holdout").text,
            "audience": self.funnel("audience").text,
            "outcomes": {measure: self.outcome(measure).text for measure in HEADLINE_OUTCOMES},
        }


def publish(run: CampaignRun, layout: Layout, protection: Protection[Cell]) -> PublishedReport:
    """The report as printed: each printed cell's number or marker, in the layout's reading order."""
    counts = {cell: Count(text, protection.value(cell)) for cell, text in protection.shown.items()}
    return PublishedReport(run=run, layout=layout, counts=counts)


def _ratio(numerator: int | None, denominator: int | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator
