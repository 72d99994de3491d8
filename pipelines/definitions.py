"""The code location: composes the asset factories, resources and jobs; no logic lives here."""

from __future__ import annotations

import dagster as dg

from assets.campaigns import all_campaign_assets
from assets.engagement import engagement_assets
from assets.ingest import ingest_assets
from assets.models import model_assets
from assets.segments import segment_assets
from carecast.project import Project, load_project
from pipelines.maintenance import maintenance_jobs
from pipelines.resources import CarecastResource, MailTransportResource
from pipelines.sensors import feedback_sensor, landing_sensor

everything_job = dg.define_asset_job(
    "carecast_everything", selection=dg.AssetSelection.all(), description="Ingest through report, every campaign."
)
campaign_run_job = dg.define_asset_job(
    "carecast_campaign_run",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("ingest"),
    description="Models, segments and every campaign for one campaign run (partition: the send date).",
)
daily_campaign_run = dg.build_schedule_from_partitioned_job(
    campaign_run_job,
    hour_of_day=8,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every day at 08:00 UTC: models, segments and every campaign for that day's campaign run.",
)
ingest_job = dg.define_asset_job(
    "carecast_ingest", selection=dg.AssetSelection.groups("ingest"), description="Apply every pending landing batch."
)


def build_definitions(project: Project) -> dg.Definitions:
    maintenance, schedules = maintenance_jobs(project)
    return dg.Definitions(
        assets=[
            *ingest_assets(project),
            *engagement_assets(project),
            *model_assets(project),
            *segment_assets(project),
            *all_campaign_assets(project),
        ],
        resources={"carecast": CarecastResource(), "mail": MailTransportResource()},
        jobs=[everything_job, campaign_run_job, ingest_job, *maintenance],
        schedules=[*schedules, daily_campaign_run],
        sensors=[landing_sensor(project), feedback_sensor()],
    )


defs = build_definitions(load_project())
