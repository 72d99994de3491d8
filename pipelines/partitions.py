"""Campaign runs as Dagster partitions: one daily partition per send date, shared by every campaign.

A campaign run is a campaign on one send date (its messages' idempotency keys include the date), so
the run's audience, outbox, delivery and report are one partition of their assets, materialized,
re-run and backfilled together from the UI or ``dagster asset materialize --partition``. Models and
segments are not partitioned: they describe the data as of the run. Keys are ISO dates
(``2026-11-23``); ``end_offset=1`` makes today's run a partition before the day is over.
"""

from __future__ import annotations

from datetime import date

import dagster as dg

FIRST_RUN_DATE = "2020-01-01"

campaign_runs = dg.DailyPartitionsDefinition(start_date=FIRST_RUN_DATE, end_offset=1)


def send_date_of(partition_key: str) -> date:
    """The send date a campaign-run partition stands for; a key that is not an ISO date is refused."""
    try:
        return date.fromisoformat(partition_key)
    except ValueError:
        raise ValueError(f"campaign run partition keys are ISO dates (YYYY-MM-DD), not {partition_key!r}") from None
