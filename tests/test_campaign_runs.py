"""Campaign runs are daily Dagster partitions keyed by send date, with a stopped-by-default schedule."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from pipelines.partitions import campaign_runs, send_date_of


def test_partition_keys_are_send_dates_up_to_today() -> None:
    assert send_date_of("2026-11-23") == date(2026, 11, 23)
    with pytest.raises(ValueError, match="ISO dates"):
        send_date_of("november")
    # today's run exists before the day is over (end_offset=1), tomorrow's does not yet
    assert campaign_runs.get_last_partition_key() == datetime.now(UTC).date().isoformat()


def test_every_campaign_asset_is_partitioned_by_campaign_run_and_scheduled_daily() -> None:
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    partitioned = {
        key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).partitions_def == campaign_runs
    }
    assert partitioned == {
        f"{stage}_breast_screening_reminder" for stage in ("audience", "outbox", "delivery", "report")
    }
    job = defs.resolve_job_def("carecast_campaign_run")
    assert job.partitions_def == campaign_runs
    schedule = defs.resolve_schedule_def("carecast_campaign_run_schedule")
    assert schedule.cron_schedule == "0 8 * * *" and schedule.job_name == "carecast_campaign_run"
