"""Per campaign YAML: audience -> outbox -> delivery -> report, each partitioned by campaign run (send date)."""

import dagster as dg

from carecast import stages
from carecast.campaigns import Campaign
from carecast.project import Project
from pipelines.partitions import campaign_runs
from pipelines.resources import CarecastResource, MailTransportResource


def campaign_assets(project: Project, campaign: Campaign) -> list[dg.AssetsDefinition]:
    segment = project.segments[campaign.segment]
    template = project.templates[campaign.template]
    audience_key = stages.audience_dataset(campaign)
    outbox_key = stages.outbox_dataset(campaign)
    delivery_key = f"delivery_{campaign.name}"
    group = f"campaign_{campaign.name}"

    @dg.asset(
        key=audience_key,
        deps=[segment.dataset, "mart_patient_profile", "mart_consent_latest", "mart_suppressions"],
        group_name=group,
        partitions_def=campaign_runs,
        description=f"Who {campaign.name} may reach for {campaign.purpose}, with every exclusion counted.",
    )
    def _audience(context: dg.AssetExecutionContext, carecast: CarecastResource) -> dg.MaterializeResult:
        with carecast.runtime(context, project, campaign.purpose) as runtime:
            result = stages.build_campaign_audience(runtime, campaign)
        return dg.MaterializeResult(metadata=result.metadata)

    @dg.asset(
        key=outbox_key,
        deps=[audience_key, "mart_patient_profile"],
        group_name=group,
        partitions_def=campaign_runs,
        code_version=template.sha256[:16],
        description=f"One rendered message per audience member (template {campaign.template}), encrypted.",
    )
    def _outbox(context: dg.AssetExecutionContext, carecast: CarecastResource) -> dg.MaterializeResult:
        with carecast.runtime(context, project, campaign.purpose) as runtime:
            result = stages.render_campaign(runtime, campaign)
        return dg.MaterializeResult(metadata=result.metadata)

    @dg.asset(
        key=delivery_key,
        deps=[outbox_key],
        group_name=group,
        partitions_def=campaign_runs,
        description="Sends the outbox idempotently; the send ledger records every message's state.",
    )
    def _delivery(
        context: dg.AssetExecutionContext, carecast: CarecastResource, mail: MailTransportResource
    ) -> dg.MaterializeResult:
        with carecast.runtime(context, project, campaign.purpose) as runtime, mail.open(runtime) as target:
            result = stages.deliver_campaign(runtime, campaign, target, mail.workers or None)
        return dg.MaterializeResult(metadata=result.metadata)

    @dg.asset(
        key=f"report_{campaign.name}",
        deps=[delivery_key],
        group_name=group,
        partitions_def=campaign_runs,
        description="Aggregated campaign report (small cells suppressed): HTML, CSV, JSON and a markdown summary.",
    )
    def _report(context: dg.AssetExecutionContext, carecast: CarecastResource) -> dg.MaterializeResult:
        with carecast.runtime(context, project, campaign.purpose) as runtime:
            result, _report = stages.report_campaign(runtime, campaign)
        # the same summary as the HTML report, rendered in the Dagster UI
        return dg.MaterializeResult(
            metadata={**result.metadata, "summary": dg.MetadataValue.md(result.metadata["summary"])}
        )

    return [_audience, _outbox, _delivery, _report]


def all_campaign_assets(project: Project) -> list[dg.AssetsDefinition]:
    return [asset for campaign in project.campaigns.values() for asset in campaign_assets(project, campaign)]
