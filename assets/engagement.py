"""Engagement: provider feedback ingested into the store, and the store's new events landed for the lake."""

import dagster as dg

from carecast.engagement.export import refresh_engagement
from carecast.project import Project
from pipelines.resources import CarecastResource

ENGAGEMENT_ASSET = "engagement_events"


def engagement_assets(project: Project) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=ENGAGEMENT_ASSET,
        group_name="engagement",
        deps=["stg_patients"],
        description=(
            "Ingests pending feedback batches (SES events, DSNs, abuse reports) into the engagement store, "
            "with their suppressions, then lands the store's new events as an `events` batch for the lake."
        ),
    )
    def _engagement(context: dg.AssetExecutionContext, carecast: CarecastResource) -> dg.MaterializeResult:
        with carecast.runtime(context, project) as runtime:
            refresh = refresh_engagement(runtime)
        return dg.MaterializeResult(
            metadata={
                "feedback_batches": refresh.feedback,
                "events_landed": refresh.exported.landed,
                "events_of_unknown_patients": refresh.exported.unknown_patients,
                "landed_batch": refresh.exported.batch or "",
            }
        )

    return [_engagement]
