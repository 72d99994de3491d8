"""The report's input contract, and the one pass over member rows that turns it into counts.

**Members** (a Polars DataFrame): one row per audience member of one campaign run, holdout members
included, and no identifier of any kind:

============== ======= ==================================================================
column         dtype   meaning
============== ======= ==================================================================
variant        String  the variant the member was assigned (ignored for holdout rows)
segment        String  the segment the member came from
day            Date    the day the message was sent or attempted; null when never attempted
group          String  ``treated`` (was to get a message) or ``holdout`` (kept back, never sent)
state          String  the ledger's final state: delivered, bounced, failed, deferred, held or
                       excluded (dropped just before sending); null for holdout members, and
                       for treated members with no ledger row yet (not attempted)
opened         Boolean the member opened the message (null counts as false)
clicked        Boolean the member clicked a link
unsubscribed   Boolean the member unsubscribed from it
complained     Boolean the member marked it as spam
converted      Boolean the member reached the campaign's goal (e.g. closed the care gap); null in
                       every row when the campaign has no goal, never null otherwise
============== ======= ==================================================================

Engagement counts only for delivered messages (an open of a bounced message cannot be told apart
from noise), so every engagement count is a part of ``delivered``. ``delivered`` and ``bounced``
rows must carry their day.

**Exclusions**: the audience funnel's exclusions, counted before the audience was drawn, as
``{segment: {reason: count}}``. The segment's size (*targeted*) is its exclusions plus its holdout
plus its treated members.

Everything is aggregated here, columnar, in one group-by over the member rows; what leaves this
module is counts of members by attribute (``Facts``), never a row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from carecast.ledger import FINAL_STATES

TREATED = "treated"
HOLDOUT = "holdout"
STATES = (*FINAL_STATES, "deferred")
ENGAGEMENT = ("opened", "clicked", "unsubscribed", "complained")
NOT_ATTEMPTED = "not attempted"
"""The day of a treated member whose message was never attempted."""
ALL = "all"
"""Reserved: the label of a total over a dimension."""

SCHEMA: dict[str, type[pl.DataType]] = {
    "variant": pl.String,
    "segment": pl.String,
    "day": pl.Date,
    "group": pl.String,
    "state": pl.String,
    **dict.fromkeys(ENGAGEMENT, pl.Boolean),
    "converted": pl.Boolean,
}

DELIVERY = ("delivered", "bounced", "not_sent")
"""What became of a treated member's message, as the report tells it (failed, deferred, held,
excluded just before sending and not attempted are all "not sent")."""


@dataclass(frozen=True)
class Facts:
    """True counts of one campaign run, by every attribute the report splits members by. Private to
    the report: they go to disclosure control only."""

    variants: tuple[str, ...]
    segments: tuple[str, ...]
    days: tuple[str, ...]
    """ISO dates in order, then ``NOT_ATTEMPTED``."""
    treated: dict[tuple[str, str, str, str, bool, bool, bool, bool, bool | None], int]
    """(variant, segment, day, delivery, opened, clicked, unsubscribed, complained, converted) -> members.
    Engagement is true only for delivered members; converted is None when there is no goal."""
    holdout: dict[tuple[str, bool | None], int]
    """(segment, converted) -> holdout members."""
    exclusions: dict[str, dict[str, int]]
    has_goal: bool


def aggregate(
    members: pl.DataFrame, exclusions: Mapping[str, Mapping[str, int]], variants: Sequence[str] = ()
) -> Facts:
    """Count the members; ``variants`` gives the campaign's variants in order (control first), so a
    variant nobody was assigned to still shows, with zeros."""
    _check(members)
    has_goal = _has_goal(members)
    state = pl.col("state")
    delivered = state == "delivered"
    delivery = pl.when(delivered).then(pl.lit("delivered")).when(state == "bounced").then(pl.lit("bounced"))
    treated_rows = (
        members.filter(pl.col("group") == TREATED)
        .group_by(
            pl.col("variant"),
            pl.col("segment"),
            pl.col("day").dt.to_string("%Y-%m-%d").fill_null(NOT_ATTEMPTED).alias("day"),
            delivery.otherwise(pl.lit("not_sent")).alias("delivery"),
            *((delivered & pl.col(name).fill_null(False)).alias(name) for name in ENGAGEMENT),
            pl.col("converted"),
        )
        .agg(pl.len())
        .rows()
    )
    holdout_rows = members.filter(pl.col("group") == HOLDOUT).group_by("segment", "converted").agg(pl.len()).rows()
    ordered_variants = tuple(dict.fromkeys([*variants, *sorted({row[0] for row in treated_rows})]))
    segments = tuple(sorted({row[1] for row in treated_rows} | {row[0] for row in holdout_rows} | {*exclusions}))
    if not ordered_variants or not segments:
        raise ValueError("a report needs at least one variant and one segment")
    reserved = [name for name in (*ordered_variants, *segments) if name in (ALL, HOLDOUT)]
    if reserved:
        raise ValueError(f"{reserved} are reserved labels (totals, the holdout) and cannot name a variant or segment")
    return Facts(
        variants=ordered_variants,
        segments=segments,
        days=(*sorted({row[2] for row in treated_rows} - {NOT_ATTEMPTED}), NOT_ATTEMPTED),
        treated={row[:-1]: int(row[-1]) for row in treated_rows},
        holdout={(segment, converted): int(count) for segment, converted, count in holdout_rows},
        exclusions={segment: dict(exclusions.get(segment, {})) for segment in segments},
        has_goal=has_goal,
    )


def _has_goal(members: pl.DataFrame) -> bool:
    unknown = members.get_column("converted").null_count()
    if unknown and unknown != members.height:
        raise ValueError("converted is null in some rows only: null means 'the campaign has no goal', for every row")
    return members.height > 0 and not unknown


def _check(members: pl.DataFrame) -> None:
    missing = [name for name in SCHEMA if name not in members.columns]
    if missing:
        raise ValueError(f"members lack columns {missing}")
    wrong = {name: str(members.schema[name]) for name, dtype in SCHEMA.items() if members.schema[name] != dtype}
    if wrong:
        raise ValueError(f"members columns of the wrong type: {wrong}")
    problems = members.select(
        unknown_group=(~pl.col("group").is_in([TREATED, HOLDOUT])).sum(),
        unknown_state=(pl.col("state").is_not_null() & ~pl.col("state").is_in(STATES)).sum(),
        holdout_sent=((pl.col("group") == HOLDOUT) & pl.col("state").is_not_null()).sum(),
        sent_without_day=(pl.col("state").is_in(["delivered", "bounced"]) & pl.col("day").is_null()).sum(),
        treated_without_variant=((pl.col("group") == TREATED) & pl.col("variant").is_null()).sum(),
        without_segment=pl.col("segment").is_null().sum(),
    ).row(0, named=True)
    found = {problem: count for problem, count in problems.items() if count}
    if found:
        raise ValueError(f"members break the input contract: {found}")
