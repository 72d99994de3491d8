"""One asset per segment SQL file: the patient ids it selects, nothing else."""

import dagster as dg

from carecast import stages
from carecast.project import Project
from carecast.segments import Segment
from pipelines.resources import CarecastResource


def _segment_asset(project: Project, segment: Segment) -> dg.AssetsDefinition:
    @dg.asset(
        key=segment.dataset,
        deps=list(segment.inputs),
        group_name="segments",
        kinds={"duckdb", "sql"},
        description=segment.header.description,
        code_version=segment.sha256[:16],
        tags={"owner": segment.header.owner},
    )
    def _segment(context: dg.AssetExecutionContext, carecast: CarecastResource) -> dg.MaterializeResult:
        with carecast.runtime(context, project) as runtime:
            result = stages.run_segment(runtime, segment.name)
        return dg.MaterializeResult(metadata=result.metadata)

    return _segment


def segment_assets(project: Project) -> list[dg.AssetsDefinition]:
    return [_segment_asset(project, segment) for segment in project.segments.values()]
