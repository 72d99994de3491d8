"""Sensors: a new complete landing batch launches the ingest of the raw datasets it feeds; a new
feedback batch launches the engagement refresh through to the marts that read events."""

from __future__ import annotations

import dagster as dg

from carecast.engagement.ingest import pending_event_batches
from carecast.ingest.journal import IngestJournal
from carecast.ingest.landing import pending_files
from carecast.project import Project
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


FEEDBACK_REFRESH = ("engagement_events", "raw_events_events", "stg_events", "mart_behavior", "mart_suppressions")
"""The feedback's way to the next audience: the store, the lake's events, the marts that read them."""


def feedback_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name="feedback_batches",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        asset_selection=list(FEEDBACK_REFRESH),
        description="Launches the engagement refresh for each complete, not yet ingested feedback batch.",
    )
    def _feedback(context: dg.SensorEvaluationContext, carecast: CarecastResource):
        home = carecast.data_home()
        pending = pending_event_batches(home)
        if not pending:
            return dg.SkipReason("every complete feedback batch is ingested")
        # the batches' names and times: a batch rewritten in place is a new request
        run_key = ",".join(f"{path.name}@{path.stat().st_mtime_ns}" for path in pending)
        return dg.RunRequest(run_key=run_key, tags={"carecast/feedback_batches": str(len(pending))})

    return _feedback
