"""One campaign run's member rows for the marketer report (``carecast.reports.facts``'s contract).

Joins, columnar: the run's audience (the version its own audience stage wrote), the send ledger's
messages of the run, and the engagement store's per-message flags. A message SES accepted and that
later bounced for good counts as bounced. With a ``goal`` (``left_segment``), a member converted when
they are no longer in the campaign's segment as rebuilt after the run; before any rebuild there is
nothing to measure yet and the report says so (no goal shown). Nothing here leaves as rows: the
report aggregates and suppresses before anything is printed.
"""

from __future__ import annotations

import re

import polars as pl

from carecast.audience import HOLDOUT
from carecast.campaigns import Campaign, audience_dataset
from carecast.engagement.events import EngagementEvents
from carecast.lake import LakeRead
from carecast.reports import HOLDOUT as HOLDOUT_GROUP
from carecast.reports import TREATED
from carecast.reports.facts import SCHEMA, STATES
from carecast.run_lineage import run_lineage
from carecast.runtime import Runtime

GOAL_WORDS = {"left_segment": "no longer in the segment when the report was built (the care gap closed)"}
_VERSION = re.compile(r"@v(\d+)#")


def campaign_members(runtime: Runtime, campaign: Campaign) -> tuple[pl.DataFrame, tuple[LakeRead, ...], bool]:
    """The run's member rows, the lake reads behind them, and whether the goal could be measured."""
    with EngagementEvents(runtime.home.state_db) as store:
        lineage = run_lineage(store, campaign.name, runtime.send_date, "audience") or {}
        messages = pl.DataFrame(
            store.run_messages(campaign.name, runtime.send_date),
            schema={"message_key": pl.String, "patient_key": pl.String, "state": pl.String, "day": pl.String},
        )
        flags = pl.from_arrow(store.per_message_flags(campaign.name, runtime.send_date))
    audience = runtime.lake.read(
        audience_dataset(campaign), ["patient_id", "patient_key", "variant"], lineage.get("version")
    )
    members = pl.from_arrow(audience.table).join(messages, on="patient_key", how="left")
    members = members.join(flags, on="message_key", how="left")
    converted, goal_reads = _converted(runtime, campaign, members.get_column("patient_id"), lineage)
    state = pl.when(pl.col("bounced_hard").fill_null(False)).then(pl.lit("bounced")).otherwise(pl.col("state"))
    rows = members.select(
        pl.col("variant"),
        pl.lit(campaign.segment).alias("segment"),
        pl.col("day").str.to_date("%Y-%m-%d"),
        pl.when(pl.col("variant") == HOLDOUT).then(pl.lit(HOLDOUT_GROUP)).otherwise(pl.lit(TREATED)).alias("group"),
        pl.when(state.is_in(STATES)).then(state).alias("state"),
        *(pl.col(name).cast(pl.Boolean) for name in ("opened", "clicked", "unsubscribed", "complained")),
        converted.alias("converted"),
    )
    return rows.select(list(SCHEMA)), (audience, *goal_reads), converted.null_count() == 0 and rows.height > 0


def _converted(
    runtime: Runtime, campaign: Campaign, patient_ids: pl.Series, lineage: dict
) -> tuple[pl.Series, tuple[LakeRead, ...]]:
    """Per member, whether they left the segment since the run; all null without a goal or a rebuild."""
    unknown = pl.Series("converted", [None] * patient_ids.len(), dtype=pl.Boolean)
    if campaign.goal != "left_segment":
        return unknown, ()
    dataset = runtime.project.segments[campaign.segment].dataset
    read = next((_version(ref) for ref in lineage.get("read", []) if ref.startswith(f"{dataset}@")), None)
    latest = runtime.lake.version(dataset).version
    if read is None or latest <= read:
        return unknown, ()  # the segment was not rebuilt since the run: nothing to measure yet
    still = runtime.lake.read(dataset, ["patient_id"], latest)
    remaining = pl.from_arrow(still.table).get_column("patient_id")
    return (~patient_ids.is_in(remaining.implode())).alias("converted"), (still,)


def _version(ref: str) -> int:
    """The version number of a lineage ref (``dataset@v3#<sha prefix>``)."""
    return int(_VERSION.search(ref).group(1))
