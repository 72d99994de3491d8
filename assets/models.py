"""One asset per SQL model file and per seed; the YAML tests become (blocking) asset checks, and so
does each expectation of the model's Great Expectations suite: a critical one blocks the assets
downstream when it fails (ERROR), a warning is reported (WARN) and blocks nothing. Check metadata
holds counts and percentages only.
"""

import dagster as dg

from carecast import stages
from carecast.models.project import SqlModel
from carecast.models.seeds import Seed
from carecast.models.tests import declared_tests
from carecast.project import Project
from pipelines.resources import CarecastResource


def _model_asset(project: Project, model: SqlModel) -> dg.AssetsDefinition:
    check_specs = [
        dg.AssetCheckSpec(name=name, asset=model.name, blocking=True, description=f"{test['test']} on {column}")
        for name, column, test in declared_tests(model.spec)
    ]
    check_specs += [
        dg.AssetCheckSpec(
            name=expectation.check_name,
            asset=model.name,
            blocking=expectation.severity == "critical",
            description=f"Great Expectations: {expectation.expect} on {expectation.column} ({expectation.severity})",
        )
        for expectation in model.spec.expectations
    ]

    @dg.asset(
        key=model.name,
        deps=list(model.upstream),
        group_name=model.layer,
        kinds={"duckdb", "sql"},
        description=f"{model.spec.grain} {model.spec.description}".strip(),
        code_version=model.sha256[:16],
        check_specs=check_specs,
    )
    def _model(context: dg.AssetExecutionContext, carecast: CarecastResource) -> dg.MaterializeResult:
        with carecast.runtime(context, project) as runtime:
            result = stages.run_model(runtime, model.name)
        checks = [
            dg.AssetCheckResult(check_name=t.name, passed=t.passed, metadata={"failing_rows": t.failing_rows})
            for t in result.tests
        ]
        checks += [
            dg.AssetCheckResult(
                check_name=e.name,
                passed=e.passed,
                severity=dg.AssetCheckSeverity.ERROR if e.critical else dg.AssetCheckSeverity.WARN,
                metadata=e.counts(),
            )
            for e in getattr(result, "expectations", ())
        ]
        return dg.MaterializeResult(metadata=result.metadata, check_results=checks)

    return _model


def _seed_asset(project: Project, seed: Seed) -> dg.AssetsDefinition:
    @dg.asset(
        key=seed.name,
        group_name="seeds",
        kinds={"csv"},
        description=f"{seed.spec.grain} {seed.spec.description}".strip(),
        code_version=seed.sha256[:16],
    )
    def _seed(context: dg.AssetExecutionContext, carecast: CarecastResource) -> dg.MaterializeResult:
        with carecast.runtime(context, project) as runtime:
            result = stages.load_seed(runtime, seed.name)
        return dg.MaterializeResult(metadata=result.metadata)

    return _seed


def model_assets(project: Project) -> list[dg.AssetsDefinition]:
    seeds = [_seed_asset(project, seed) for seed in project.seeds.values()]
    return [*seeds, *(_model_asset(project, model) for model in project.models.values())]
