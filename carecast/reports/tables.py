"""What the report publishes: cells, the atoms they add up, and the relations a reader can check.

Three sections share totals:

* **outcomes**: a cube over variant x segment x day with a total over every dimension that has more
  than one category. In each position: ``audience = sent + not_sent``, ``sent = delivered +
  bounced``, and ``delivered = opened + not opened`` (likewise clicked, unsubscribed, complained).
  On the ``not attempted`` day only ``audience`` and ``not_sent`` exist (nothing was sent);
* **funnel**: per segment and in total, ``targeted = excluded (each reason) + holdout + audience``,
  where ``audience`` is the outcomes cell of that segment;
* **conversion** (campaigns with a goal): per variant, ``audience = converted + not converted``, and
  for the holdout, ``holdout = converted + not converted``.

The "not …" counts are never printed but follow by subtraction, so they are protected like the rest
(``unprinted``). Every cell is a sum of atoms: members alike in variant, segment, day, state (delivery
outcome, holdout or exclusion reason), each engagement flag and conversion. The atoms include the
empty ones a member could be in, but not those the campaign rules out (a holdout when it has none,
an engagement or a conversion nobody in the campaign has), which a reader may know cannot exist.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from carecast.reports.disclosure import Atom, Relation
from carecast.reports.facts import ALL, DELIVERY, ENGAGEMENT, HOLDOUT, NOT_ATTEMPTED, Facts

OUTCOMES, FUNNEL, CONVERSION = "outcomes", "funnel", "conversion"
PRINTED_OUTCOMES = ("audience", "sent", "not_sent", "delivered", "bounced", *ENGAGEMENT)
UNPRINTED_OUTCOMES = tuple(f"not_{name}" for name in ENGAGEMENT)
UNPRINTED = (*UNPRINTED_OUTCOMES, "not_converted")
"""Counts a reader can work out by subtraction but the report never prints."""
NEVER_ATTEMPTED_OUTCOMES = ("audience", "not_sent")
PARTITIONS = (
    ("audience", ("sent", "not_sent")),
    ("sent", ("delivered", "bounced")),
    *(("delivered", (name, f"not_{name}")) for name in ENGAGEMENT),
)
EXCLUDED_PREFIX = "excluded: "
FULL_DETAIL = 3
DETAIL_LEVELS = (FULL_DETAIL, 2, 1, 0)
"""The detail a report is published in, tried in turn (``Layout.detail``)."""
_TOTAL_WEIGHT = 4.0
"""Hiding a total costs this many times more per dimension it sums over: the campaign total and the
by-variant and by-day rows are what marketers read, the variant x segment x day detail the least."""
_BASE_WEIGHTS = {"targeted": 4.0, "holdout": 2.0, "converted": 2.0}
"""The segment size is the funnel's headline; holdout and conversions carry the lift."""


class Cell(NamedTuple):
    """One published count; ``ALL`` in a dimension is the total over it, "" where it does not apply."""

    section: str
    measure: str
    variant: str = ""
    segment: str = ""
    day: str = ""


@dataclass(frozen=True)
class Layout:
    """The categories of each dimension, and how a cell is named at any level of aggregation."""

    variants: tuple[str, ...]
    segments: tuple[str, ...]
    days: tuple[str, ...]
    reasons: tuple[str, ...]
    has_holdout: bool
    has_goal: bool
    detail: int = FULL_DETAIL
    """How many dimensions a published count may split by: 3 for the whole cube (variant x segment x
    day), 2 for the two-way tables, 1 for by variant, by segment and by day separately, 0 for totals."""

    @staticmethod
    def axis(categories: tuple[str, ...]) -> tuple[str, ...]:
        """A dimension's categories, and its total when there is more than one to add up (or when the
        only day is ``not attempted``, whose total still carries the measures that day has not)."""
        return (*categories, ALL) if len(categories) > 1 or categories == (NOT_ATTEMPTED,) else categories

    def outcome(self, measure: str, variant: str = ALL, segment: str = ALL, day: str = ALL) -> Cell:
        """``ALL`` over a dimension with a single category names that category (the same count)."""
        return Cell(
            OUTCOMES,
            measure,
            self._resolve(self.variants, variant),
            self._resolve(self.segments, segment),
            self._resolve(self.days, day),
        )

    def funnel(self, measure: str, segment: str = ALL) -> Cell:
        return Cell(FUNNEL, measure, segment=self._resolve(self.segments, segment))

    def conversion(self, measure: str, arm: str = ALL) -> Cell:
        return Cell(CONVERSION, measure, variant=arm if arm == HOLDOUT else self._resolve(self.variants, arm))

    def published(self, variant: str = ALL, segment: str = ALL, day: str = ALL) -> bool:
        """Whether counts split this way are published at this layout's detail."""
        dimensions = ((self.variants, variant), (self.segments, segment), (self.days, day))
        splits = sum(1 for categories, value in dimensions if value != ALL and ALL in self.axis(categories))
        return splits <= self.detail

    def positions(self) -> Iterator[tuple[str, str, str]]:
        """Every published (variant, segment, day) of the outcomes, totals included."""
        every = itertools.product(self.axis(self.variants), self.axis(self.segments), self.axis(self.days))
        return (position for position in every if self.published(*position))

    def funnel_segments(self) -> tuple[str, ...]:
        return tuple(segment for segment in self.axis(self.segments) if self.published(segment=segment))

    def arms(self) -> tuple[str, ...]:
        """The groups conversion is published for: each variant, their total, the holdout."""
        variants = tuple(variant for variant in self.axis(self.variants) if self.published(variant=variant))
        return (*variants, *((HOLDOUT,) if self.has_holdout else ()))

    @staticmethod
    def outcomes_at(day: str) -> tuple[str, ...]:
        return NEVER_ATTEMPTED_OUTCOMES if day == NOT_ATTEMPTED else (*PRINTED_OUTCOMES, *UNPRINTED_OUTCOMES)

    def _resolve(self, categories: tuple[str, ...], value: str) -> str:
        return categories[0] if value == ALL and ALL not in self.axis(categories) else value

    def levels(self, categories: tuple[str, ...], value: str) -> tuple[str, ...]:
        """The categories an atom at ``value`` counts in: its own and the total, when there is one."""
        return (value, ALL) if ALL in self.axis(categories) else (value,)


@dataclass(frozen=True)
class Tables:
    """True counts with their atoms and relations: the input of disclosure control, and nothing else's."""

    layout: Layout
    values: dict[Cell, int]
    atoms: list[Atom[Cell]]
    relations: list[Relation[Cell]]
    unprinted: frozenset[Cell]
    weights: dict[Cell, float]


def build_tables(facts: Facts, detail: int = FULL_DETAIL) -> Tables:
    layout = Layout(
        variants=facts.variants,
        segments=facts.segments,
        days=facts.days,
        reasons=tuple(sorted({reason for reasons in facts.exclusions.values() for reason in reasons})),
        has_holdout=sum(facts.holdout.values()) > 0,
        has_goal=facts.has_goal,
        detail=detail,
    )
    values = dict.fromkeys(_cells(layout), 0)
    atoms = _atoms(facts, layout)
    for atom in atoms:
        for cell in atom.cells:
            values[cell] += atom.count
    weights = {cell: _weight(cell) for cell in values}
    unprinted = frozenset(cell for cell in values if cell.measure in UNPRINTED)
    return Tables(layout, values, atoms, _relations(layout), unprinted, weights)


def _cells(layout: Layout) -> Iterator[Cell]:
    """Every published cell, in reading order."""
    for segment in layout.funnel_segments():
        yield layout.funnel("targeted", segment)
        yield from (layout.funnel(EXCLUDED_PREFIX + reason, segment) for reason in layout.reasons)
        yield layout.funnel("holdout", segment)
    for position in layout.positions():
        yield from (Cell(OUTCOMES, measure, *position) for measure in layout.outcomes_at(position[2]))
    if layout.has_goal:
        for arm in layout.arms():
            yield from (layout.conversion(measure, arm) for measure in ("converted", "not_converted"))


def _weight(cell: Cell) -> float:
    summed_over = sum(1 for level in (cell.variant, cell.segment, cell.day) if level == ALL)
    return _BASE_WEIGHTS.get(cell.measure, 1.0) * _TOTAL_WEIGHT**summed_over


def _atoms(facts: Facts, layout: Layout) -> list[Atom[Cell]]:
    """Every atom a member of this campaign could be in, with its members and the cells it adds to.

    Coordinates: (variant, segment, day, state, opened, clicked, unsubscribed, complained, converted).
    A holdout member or an excluded one has no variant or day of its own: they count in the first
    variant's atoms, on the ``not attempted`` day, which no outcome cell reads.
    """
    first = layout.variants[0]
    counts: dict[tuple, int] = dict(facts.treated)
    for (segment, converted), members in facts.holdout.items():
        counts[(first, segment, NOT_ATTEMPTED, HOLDOUT, *_NO_ENGAGEMENT, converted)] = members
    excluded_conversion = False if facts.has_goal else None
    for segment, reasons in facts.exclusions.items():
        for reason, members in reasons.items():
            state = EXCLUDED_PREFIX + reason
            counts[(first, segment, NOT_ATTEMPTED, state, *_NO_ENGAGEMENT, excluded_conversion)] = members
    seen_engagement = [any(key[4 + e] for key in facts.treated) for e in range(len(ENGAGEMENT))]
    flag_values = [(False, True) if seen else (False,) for seen in seen_engagement]
    seen_conversion = any(key[-1] for key in facts.treated) or any(converted for _, converted in facts.holdout)
    conversions = ((False, True) if seen_conversion else (False,)) if facts.has_goal else (None,)
    states = [(day, delivery) for day in facts.days if day != NOT_ATTEMPTED for delivery in DELIVERY]
    states += [(NOT_ATTEMPTED, "not_sent"), *((NOT_ATTEMPTED, EXCLUDED_PREFIX + r) for r in layout.reasons)]
    if layout.has_holdout:
        states.append((NOT_ATTEMPTED, HOLDOUT))
    atoms = []
    for variant, segment, (day, state), converted in itertools.product(
        layout.variants, layout.segments, states, conversions
    ):
        flag_choices = itertools.product(*flag_values) if state == "delivered" else [_NO_ENGAGEMENT]
        for flags in flag_choices:
            coordinates = (variant, segment, day, state, *flags, converted)
            cells = _cells_of(layout, coordinates)
            atoms.append(Atom(coordinates, counts.get(coordinates, 0), cells))
    return atoms


_NO_ENGAGEMENT = (False,) * len(ENGAGEMENT)


def _cells_of(layout: Layout, coordinates: tuple) -> tuple[Cell, ...]:
    variant, segment, day, state, *flags, converted = coordinates
    segments = [s for s in layout.levels(layout.segments, segment) if layout.published(segment=s)]
    cells = [layout.funnel("targeted", s) for s in segments]
    if state == HOLDOUT:
        cells += [layout.funnel("holdout", s) for s in segments]
        if layout.has_goal:
            cells.append(layout.conversion("converted" if converted else "not_converted", HOLDOUT))
        return tuple(cells)
    if state.startswith(EXCLUDED_PREFIX):
        return tuple(cells + [layout.funnel(state, s) for s in segments])
    measures = ["audience", "not_sent" if state == "not_sent" else "sent"]
    if state != "not_sent":
        measures.append(state)
    if state == "delivered":
        measures += [name if flag else f"not_{name}" for name, flag in zip(ENGAGEMENT, flags, strict=True)]
    positions = itertools.product(
        layout.levels(layout.variants, variant),
        layout.levels(layout.segments, segment),
        layout.levels(layout.days, day),
    )
    for position in positions:
        if layout.published(*position):
            cells += [Cell(OUTCOMES, measure, *position) for measure in measures]
    if layout.has_goal:
        measure = "converted" if converted else "not_converted"
        arms = [v for v in layout.levels(layout.variants, variant) if layout.published(variant=v)]
        cells += [layout.conversion(measure, v) for v in arms]
    return tuple(cells)


def _relations(layout: Layout) -> list[Relation[Cell]]:
    """Every additive relation between published cells, as a reader could write them down."""
    relations = []
    categories = (layout.variants, layout.segments, layout.days)
    for position in layout.positions():
        measures = layout.outcomes_at(position[2])
        for measure in measures:
            for dimension, level in enumerate(position):
                if level != ALL:
                    continue
                split = [
                    (*position[:dimension], category, *position[dimension + 1 :]) for category in categories[dimension]
                ]
                if layout.published(*split[0]):
                    parts = (Cell(OUTCOMES, measure, *part) for part in split)
                    present = tuple(part for part in parts if measure in layout.outcomes_at(part.day))
                    relations.append(Relation(Cell(OUTCOMES, measure, *position), present))
        for total, parts in PARTITIONS:
            if total in measures:
                present = tuple(Cell(OUTCOMES, part, *position) for part in parts if part in measures)
                relations.append(Relation(Cell(OUTCOMES, total, *position), present))
    funnel_measures = (*(EXCLUDED_PREFIX + reason for reason in layout.reasons), "holdout")
    segments = layout.funnel_segments()
    for segment in segments:
        parts = (*(layout.funnel(m, segment) for m in funnel_measures), layout.outcome("audience", segment=segment))
        relations.append(Relation(layout.funnel("targeted", segment), parts))
        if segment == ALL and len(segments) > 1:
            for measure in funnel_measures:
                by_segment = tuple(layout.funnel(measure, s) for s in layout.segments)
                relations.append(Relation(layout.funnel(measure), by_segment))
    if layout.has_goal:
        arms = layout.arms()
        for arm in arms:
            members = layout.funnel("holdout") if arm == HOLDOUT else layout.outcome("audience", variant=arm)
            split = (layout.conversion("converted", arm), layout.conversion("not_converted", arm))
            relations.append(Relation(members, split))
        if ALL in arms and len(layout.variants) > 1 and layout.published(variant=layout.variants[0]):
            for measure in ("converted", "not_converted"):
                by_variant = tuple(layout.conversion(measure, v) for v in layout.variants)
                relations.append(Relation(layout.conversion(measure), by_variant))
    return relations
