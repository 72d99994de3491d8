"""carecast's core stage functions over a Runtime, timed one stage per call (no Dagster).

Opening the project and the Runtime happens before the clock starts: it is per-process setup that
a Dagster step pays too, and is not what a stage costs per patient.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

from bench.workload import CAMPAIGN, open_runtime
from carecast import stages
from carecast.mail import EmbeddedSink, Mailbox, SmtpTransport, ensure_sink_certificate
from carecast.runtime import Runtime


def _ingest(runtime: Runtime) -> int:
    return sum(
        stages.ingest(runtime, source, table).metadata["rows_read"]
        for source, spec in runtime.project.registry.sources.items()
        for table in spec.tables
    )


def _model_order(runtime: Runtime) -> list[str]:
    """Every model after the models it refs."""
    graph = {name: set(model.refs) for name, model in sorted(runtime.project.models.items())}
    return list(TopologicalSorter(graph).static_order())


def _models(runtime: Runtime) -> int:
    return sum(stages.run_model(runtime, name).metadata["rows"] for name in _model_order(runtime))


def _segment(runtime: Runtime) -> int:
    campaign = runtime.project.campaigns[CAMPAIGN]
    return stages.run_segment(runtime, campaign.segment).metadata["patients"]


def _audience(runtime: Runtime) -> dict[str, Any]:
    metadata = stages.build_campaign_audience(runtime, runtime.project.campaigns[CAMPAIGN]).metadata
    return {"rows": metadata["audience"], "excluded": metadata["excluded"]}


def _render(runtime: Runtime) -> int:
    return stages.render_campaign(runtime, runtime.project.campaigns[CAMPAIGN]).metadata["rendered"]


def _deliver(runtime: Runtime) -> dict[str, Any]:
    """Through the embedded STARTTLS sink, opened as ``MailTransportResource(kind="embedded_sink")``
    opens it (repeated here so this process does not import Dagster)."""
    campaign = runtime.project.campaigns[CAMPAIGN]
    cert_path, key_path = ensure_sink_certificate(runtime.home.keys / "sink")
    with Mailbox(runtime.home.mailbox, runtime.kms) as mailbox, EmbeddedSink(mailbox, cert_path, key_path) as sink:
        with SmtpTransport(sink.host, sink.port, cert_path.read_bytes()) as transport:
            result = stages.deliver_campaign(runtime, campaign, transport)
    states = result.metadata["ledger_states"]
    return {"rows": states.get("delivered", 0), "states": states}


def _report(runtime: Runtime) -> int:
    _result, summary = stages.report_campaign(runtime, runtime.project.campaigns[CAMPAIGN])
    return summary.audience


STAGES: dict[str, Callable[[Runtime], int | dict[str, Any]]] = {
    "ingest": _ingest,
    "models": _models,
    "segment": _segment,
    "audience": _audience,
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
