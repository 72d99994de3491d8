"""Sensors: a new complete landing batch launches the ingest of the raw datasets it feeds; a new UTC
day adds its campaign-run partition and runs the campaigns for it."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from carecast.ingest.journal import IngestJournal
from carecast.ingest.landing import pending_files
from carecast.project import Project
from pipelines.partitions import CAMPAIGN_RUNS, campaign_runs
from pipelines.resources import CarecastResource


def landing_sensor(project: Project) -> dg.SensorDefinition:
    @dg.sensor(
        name="landing_batches",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        asset_selection=dg.AssetSelection.groups("ingest"),
        description="Launches ingest for each complete landing batch (_SUCCESS or manifest) with unapplied files.",
    )
    def _landing(context: dg.SensorEvaluationContext, carecast: CarecastResource):
        home = carecast.data_home()
        if not home.landing.is_dir():
            return dg.SkipReason(f"no landing folder under {home.root}")
        with IngestJournal(home.state_db) as journal:
            pending = pending_files(home.landing, project.registry, journal.applied())
        if not pending:
            return dg.SkipReason("every complete batch is applied")
        batches: dict[str, list] = {}
        for landed in pending:
            batches.setdefault(f"{landed.source}/{landed.batch}", []).append(landed)
        return [
            dg.RunRequest(
                # the files' names and times: a corrected file in the same batch is a new request
                run_key=f"{batch}:" + ",".join(f"{f.name}@{f.path.stat().st_mtime_ns}" for f in files),
                asset_selection=[dg.AssetKey(dataset) for dataset in sorted({f.dataset for f in files})],
                tags={"carecast/batch": batch},
            )
            for batch, files in batches.items()
        ]

    return _landing


def campaign_run_sensor(job: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="daily_campaign_run",
        job=job,
        minimum_interval_seconds=3600,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Once per UTC day: adds the day's campaign-run partition and runs every campaign for it.",
    )
    def _daily(context: dg.SensorEvaluationContext):
        today = datetime.now(UTC).date().isoformat()
        if context.instance.has_dynamic_partition(CAMPAIGN_RUNS, today):
            return dg.SkipReason(f"the campaign run of {today} exists")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=today, partition_key=today)],
            dynamic_partitions_requests=[campaign_runs.build_add_request([today])],
        )

    return _daily
