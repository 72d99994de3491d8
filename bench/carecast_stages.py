"""carecast's core stage functions over a Runtime, timed one stage per call (no Dagster).

Opening the project and the Runtime happens before the clock starts: it is per-process setup that
a Dagster step pays too, and is not what a stage costs per patient.
"""

from __future__ import annotations

import importlib
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import yaml

from bench.isolation import peak_mb
from bench.workload import BENCH_CAMPAIGN_PREFIX, CAMPAIGN, open_runtime
from carecast import stages
from carecast.campaigns import Campaign
from carecast.delivery import open_target
from carecast.project import Project
from carecast.runtime import Runtime
from carecast.segments import in_dependency_order

INGEST_WORKERS = 2
"""Raw tables are independent, so they are applied side by side, as Dagster's multiprocess
executor runs the ingest assets (one process per step, as many as there are cores)."""


def _ingest_table(home: Path, source: str, table: str) -> dict[str, Any]:
    started = time.perf_counter()
    rows = stages.ingest(open_runtime(home), source, table).metadata["rows_read"]
    return {"rows": rows, "seconds": round(time.perf_counter() - started, 3), "peak_mb": round(peak_mb(), 1)}


def _landed_bytes(runtime: Runtime, source: str, table: str) -> int:
    return sum(path.stat().st_size for path in (runtime.home.landing / source).glob(f"*/{table}.*"))


def _ingest(runtime: Runtime) -> dict[str, Any]:
    """Every raw table, biggest first over a pool of spawned workers (process start-up is on the clock).

    ``peak_mb`` adds the workers' peaks to this process's: an upper bound on what was resident at once."""
    tables = sorted(
        ((source, table) for source, spec in runtime.project.registry.sources.items() for table in spec.tables),
        key=lambda pair: -_landed_bytes(runtime, *pair),
    )
    home = runtime.home.root
    with ProcessPoolExecutor(INGEST_WORKERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {f"{s}_{t}": pool.submit(_ingest_table, home, s, t) for s, t in tables}
        per_table = {name: future.result() for name, future in futures.items()}
    worker_peaks = sorted((r["peak_mb"] for r in per_table.values()), reverse=True)[:INGEST_WORKERS]
    return {
        "rows": sum(r["rows"] for r in per_table.values()),
        "tables": {name: {"rows": r["rows"], "seconds": r["seconds"]} for name, r in per_table.items()},
        "workers": INGEST_WORKERS,
        "peak_mb_with_workers": round(peak_mb() + sum(worker_peaks), 1),
    }


def _model_order(runtime: Runtime) -> list[str]:
    """Every model after the models it needs: its refs and its relationship tests' targets. Seeds and
    raw sources are not models: seeds are loaded first (``_models``), sources are ingested before."""
    models = runtime.project.models
    graph = {name: {d for d in model.upstream if d in models} for name, model in sorted(models.items())}
    return list(TopologicalSorter(graph).static_order())


def _models(runtime: Runtime) -> int:
    seeded = sum(stages.load_seed(runtime, name).metadata["rows"] for name in sorted(runtime.project.seeds))
    return seeded + sum(stages.run_model(runtime, name).metadata["rows"] for name in _model_order(runtime))


def _segments(runtime: Runtime) -> dict[str, Any]:
    """Every shipped segment, each after the segments it includes: read from the lake, write the members."""
    segments = runtime.project.segments
    members, seconds = {}, {}
    for name in in_dependency_order(segments, sorted(segments)):
        started = time.perf_counter()
        members[name] = stages.run_segment(runtime, name).metadata["patients"]
        seconds[name] = round(time.perf_counter() - started, 3)
    return {"rows": sum(members.values()), "segments": members, "segment_seconds": seconds}


def audience_campaigns(project: Project) -> dict[str, Campaign]:
    """The shipped campaigns, then for every segment none of them uses a campaign made up from the
    shipped one (``campaigns/breast_screening_reminder.yaml``): the segment, the first purpose its
    header declares and the stream that purpose goes on."""
    campaigns = dict(project.campaigns)
    covered = {campaign.segment for campaign in campaigns.values()}
    model = yaml.safe_load((project.root / "campaigns" / f"{CAMPAIGN}.yaml").read_text())
    for name, segment in sorted(project.segments.items()):
        if name in covered:
            continue
        purpose = segment.header.purposes[0]
        stream = next(name for name, stream in project.streams.items() if purpose in stream.purposes)
        made_up = {"name": BENCH_CAMPAIGN_PREFIX + name, "description": f"bench audience for {name}"}
        campaigns[made_up["name"]] = Campaign.model_validate(
            {**model, **made_up, "segment": name, "purpose": purpose, "stream": stream}
        )
    return campaigns


def _audiences(runtime: Runtime) -> dict[str, Any]:
    """An audience per segment: ``build_campaign_audience`` for the shipped campaigns (written, recorded
    in the ledger), ``plan_audience`` over the segment's members read from the lake for the others."""
    project = runtime.project
    audiences = {}
    for name, campaign in audience_campaigns(project).items():
        started = time.perf_counter()
        if name in project.campaigns:
            funnel = stages.build_campaign_audience(runtime, campaign).metadata
        else:
            members = runtime.lake.read(project.segments[campaign.segment].dataset, ["patient_id"])
            audience, _reads = stages.plan_audience(runtime, campaign, members.table)
            funnel = audience.funnel()
        audiences[name] = {
            "segment": campaign.segment,
            "purpose": campaign.purpose,
            "members": funnel["audience"] + funnel["holdout"],
            "excluded": funnel["excluded"],
            "seconds": round(time.perf_counter() - started, 3),
        }
    return {
        "rows": sum(audience["members"] for audience in audiences.values()),
        "audiences": audiences,
        "excluded": audiences[CAMPAIGN]["excluded"],
        "campaign_audience": audiences[CAMPAIGN]["members"],
    }


def _render(runtime: Runtime) -> int:
    return stages.render_campaign(runtime, runtime.project.campaigns[CAMPAIGN]).metadata["rendered"]


def _deliver(runtime: Runtime) -> dict[str, Any]:
    """Through the embedded STARTTLS sink, as ``MailTransportResource(kind="embedded_sink")`` opens it."""
    campaign = runtime.project.campaigns[CAMPAIGN]
    with open_target(runtime) as target:
        result = stages.deliver_campaign(runtime, campaign, target)
    states = result.metadata["ledger_states"]
    return {"rows": states.get("delivered", 0), "states": states}


def _report(runtime: Runtime) -> int:
    _result, summary = stages.report_campaign(runtime, runtime.project.campaigns[CAMPAIGN])
    return summary.audience


STAGES: dict[str, Callable[[Runtime], int | dict[str, Any]]] = {
    "ingest": _ingest,
    "models": _models,
    "segments": _segments,
    "audiences": _audiences,
    "render": _render,
    "deliver": _deliver,
    "report": _report,
}


def run_stage(home: Path, stage: str) -> dict[str, Any]:
    # pyarrow.compute imports pandas on first use; import it before the clock, as the naive
    # script's modules do, so neither side's seconds include module imports.
    importlib.import_module("pandas")
    runtime = open_runtime(home)
    started = time.perf_counter()
    outcome = STAGES[stage](runtime)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, **(outcome if isinstance(outcome, dict) else {"rows": outcome})}
