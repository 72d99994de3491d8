"""Campaign runs are Dagster partitions keyed by send date; a sensor opens one per UTC day."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import pytest

from pipelines.partitions import CAMPAIGN_RUNS, campaign_runs, send_date_of
from pipelines.sensors import campaign_run_sensor


def _sensor() -> dg.SensorDefinition:
    job = dg.define_asset_job("runs", selection=dg.AssetSelection.all())
    return campaign_run_sensor(job)


def test_the_sensor_opens_todays_run_once() -> None:
    today = datetime.now(UTC).date().isoformat()
    with dg.DagsterInstance.ephemeral() as instance:
        with dg.build_sensor_context(instance=instance) as context:
            result = _sensor()(context)
        assert isinstance(result, dg.SensorResult)
        assert [request.partition_key for request in result.run_requests] == [today]
        assert result.dynamic_partitions_requests == [campaign_runs.build_add_request([today])]
        # once the partition exists (as the daemon adds it from the request), the day is done
        instance.add_dynamic_partitions(CAMPAIGN_RUNS, [today])
        with dg.build_sensor_context(instance=instance) as context:
            assert isinstance(_sensor()(context), dg.SkipReason)


def test_partition_keys_are_send_dates() -> None:
    assert send_date_of("2026-11-23") == date(2026, 11, 23)
    with pytest.raises(ValueError, match="ISO dates"):
        send_date_of("november")


def test_every_campaign_asset_is_partitioned_by_campaign_run() -> None:
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
