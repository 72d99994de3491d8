"""One asset per landed table: the latest complete batch, validated, into encrypted Parquet."""

import dagster as dg

from assets.engagement import ENGAGEMENT_ASSET
from carecast import stages
from carecast.project import Project
from carecast.registry import raw_dataset_name
from pipelines.resources import CarecastResource


def _ingest_asset(project: Project, source: str, table: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=raw_dataset_name(source, table),
        group_name="ingest",
        kinds={"parquet"},
        # the engagement store's new events land as an events batch first (assets/engagement.py)
        deps=[ENGAGEMENT_ASSET] if (source, table) == ("events", "events") else [],
        description=f"The `{table}` table of the newest complete `{source}` landing batch, encrypted per column class.",
    )
    def _ingest(context: dg.AssetExecutionContext, carecast: CarecastResource) -> dg.MaterializeResult:
        with carecast.runtime(context, project) as runtime:
            result = stages.ingest(runtime, source, table)
        return dg.MaterializeResult(metadata=result.metadata)

    return _ingest


def ingest_assets(project: Project) -> list[dg.AssetsDefinition]:
    return [
        _ingest_asset(project, source_name, table_name)
        for source_name, source in project.registry.sources.items()
        for table_name in source.tables
    ]
