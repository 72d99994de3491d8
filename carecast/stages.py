"""The pipeline's stages as plain functions over a Runtime: what each Dagster asset calls.

Each returns its result and a metadata dict of counts, hashes, versions, columns and key ids, never
values, so the caller can put it in materialization metadata or a log as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from carecast.audience import (
    CONSENT_COLUMNS,
    PROFILE_COLUMNS,
    SUPPRESSION_COLUMNS,
    Audience,
    build_audience,
    ledger_exclusions,
    to_be_sent,
)
from carecast.campaign_report import GOAL_WORDS, campaign_members
from carecast.campaigns import Campaign, audience_dataset, outbox_dataset
from carecast.delivery import TransportSpec
from carecast.delivery import deliver_campaign as deliver_campaign_run
from carecast.delivery.engine import OUTBOX_ROW_GROUP
from carecast.ingest.journal import IngestJournal
from carecast.ingest.landing import MANIFEST, SUCCESS_MARKER, NoCompleteBatchError, pending_files
from carecast.ingest.load import IngestReport, apply_file
from carecast.lake import DatasetVersion, LakeRead
from carecast.ledger import Ledger
from carecast.link_tokens import LinkTokens
from carecast.models.expectations import ExpectationResult, run_expectations
from carecast.models.runner import describe_reads, run_sql
from carecast.models.tests import ModelTestResult, run_model_tests
from carecast.registry import raw_dataset_name
from carecast.rendering import render_outbox
from carecast.reports import (
    CampaignRun,
    PublishedReport,
    ReportFiles,
    build_report,
    report_markdown,
    write_report,
)
from carecast.run_lineage import record_run_lineage, run_version
from carecast.runtime import Runtime
from carecast.segments import check_segment_output
from carecast.send_windows import DEFAULT_FALLBACK_ZONE, time_zones_for
from carecast.tracking import issue_recipient_links


@dataclass(frozen=True)
class StageResult:
    metadata: dict[str, Any]
    written: DatasetVersion | None = None
    tests: list[ModelTestResult] = field(default_factory=list)
    expectations: list[ExpectationResult] = field(default_factory=list)


def _written_metadata(version: DatasetVersion) -> dict[str, Any]:
    return {"dataset_version": version.ref, "rows": version.rows, "key_ids_wrapped": list(version.key_ids)}


def ingest(runtime: Runtime, source: str, table: str) -> StageResult:
    """Apply every landed file of ``raw_<source>_<table>`` not applied yet, oldest batch first."""
    dataset = raw_dataset_name(source, table)
    with IngestJournal(runtime.home.state_db) as journal, runtime.kms.access_log.observe() as key_use:
        pending = pending_files(runtime.home.landing, runtime.project.registry, journal.applied(), {dataset})
        if not pending and not runtime.lake.exists(dataset):
            raise NoCompleteBatchError(
                f"no complete landing batch carries {dataset} (a batch needs {SUCCESS_MARKER} or {MANIFEST})"
            )
        reports = [apply_file(runtime.lake, journal, landed) for landed in pending]
        current = journal.latest_loaded(dataset)
    metadata = {
        "files_applied": [_file_summary(report) for report in reports],
        "rows_read": sum(r.rows_read for r in reports),
        "rows_loaded": sum(r.rows_loaded for r in reports),
        "rows_quarantined": sum(r.rows_quarantined for r in reports),
        "reconciled": all(r.reconciled for r in reports),
        "quarantine_reasons": _summed(r.quarantine_reasons for r in reports),
        "columns_dropped_undeclared": sorted({c for r in reports for c in r.columns_dropped}),
        "dataset_version": current.dataset_version if current else None,
        "rows": current.dataset_rows if current else None,
        "key_ids_wrapped": sorted({e["key_id"] for e in key_use if e["op"] == "wrap"}),
        "key_ids_unwrapped": sorted({e["key_id"] for e in key_use if e["op"] == "unwrap"}),
    }
    written = next((r.loaded for r in reversed(reports) if r.loaded), None)
    return StageResult(metadata=metadata, written=written)


def _file_summary(report: IngestReport) -> dict[str, Any]:
    summary: dict[str, Any] = {"batch": f"{report.source}/{report.batch}", "file": report.file_name}
    if report.duplicate_of:
        return {**summary, "duplicate_of": report.duplicate_of}
    return {
        **summary,
        "rows_read": report.rows_read,
        "rows_loaded": report.rows_loaded,
        "rows_quarantined": report.rows_quarantined,
        "reconciled": report.reconciled,
        **({"changes": report.changes.__dict__} if report.changes else {}),
    }


def _summed(counts) -> dict[str, int]:
    total: dict[str, int] = {}
    for mapping in counts:
        for name, count in mapping.items():
            total[name] = total.get(name, 0) + count
    return dict(sorted(total.items()))


def run_model(runtime: Runtime, name: str) -> StageResult:
    """Run a model, write its output, then its YAML tests and its expectation suite (Great Expectations,
    imported on the first model that declares one); the result's ``expectations`` hold counts only."""
    model = runtime.project.models[name]
    run = run_sql(runtime.lake, model.render(runtime.as_of), model.inputs)
    version = runtime.lake.write(name, run.table)
    tests = run_model_tests(run.table, model.spec, runtime.lake)
    expectations = run_expectations(run.table, model.spec, runtime.lake, runtime.as_of)
    metadata = {
        "sql_sha256": model.sha256,
        "grain": model.spec.grain,
        "as_of": runtime.send_date,
        **describe_reads(runtime.lake, run.reads),
        **_written_metadata(version),
    }
    return StageResult(metadata=metadata, written=version, tests=tests, expectations=expectations)


def load_seed(runtime: Runtime, name: str) -> StageResult:
    seed = runtime.project.seeds[name]
    version = runtime.lake.write(name, seed.read())
    return StageResult(metadata={"csv_sha256": seed.sha256, **_written_metadata(version)}, written=version)


def compute_segment(runtime: Runtime, name: str) -> tuple[pa.Table, dict[str, Any]]:
    """A segment's members and what was read to find them, without writing anything."""
    segment = runtime.project.segments[name]
    withheld = runtime.project.policy.withheld_categories(segment.header.purposes)
    run = run_sql(runtime.lake, segment.render(runtime.as_of), segment.inputs, withheld)
    members = check_segment_output(segment, run.table)
    metadata = {
        "sql_sha256": segment.sha256,
        "owner": segment.header.owner,
        "purposes": list(segment.header.purposes),
        "as_of": runtime.send_date,
        "patients": members.num_rows,
        "sensitive_categories_withheld": sorted(withheld),
        "rows_withheld_sensitive": run.withheld_rows,
        **describe_reads(runtime.lake, run.reads),
    }
    return members, metadata


def run_segment(runtime: Runtime, name: str) -> StageResult:
    segment = runtime.project.segments[name]
    members, metadata = compute_segment(runtime, name)
    version = runtime.lake.write(segment.dataset, members)
    return StageResult(metadata={**metadata, **_written_metadata(version)}, written=version)


def plan_audience(runtime: Runtime, campaign: Campaign, members: pa.Table) -> tuple[Audience, tuple[LakeRead, ...]]:
    """Judge a segment's members for a campaign, recording nothing (the stage and the preview share it)."""
    lake = runtime.lake
    reads = (
        lake.read("mart_patient_profile", list(PROFILE_COLUMNS)),
        lake.read("mart_consent_latest", list(CONSENT_COLUMNS)),
        lake.read("mart_suppressions", list(SUPPRESSION_COLUMNS)),
    )
    policy_cap = runtime.project.policy.rule(campaign.purpose).frequency_cap
    caps = [cap for cap in (policy_cap, campaign.frequency_cap) if cap]
    with Ledger(runtime.home.state_db) as ledger:
        excluded_by_ledger = ledger_exclusions(ledger, campaign, caps, runtime.as_of)
    audience = build_audience(
        campaign,
        members.select(["patient_id"]),
        *(read.table for read in reads),
        as_of=runtime.send_time,
        pseudonymizer=runtime.pseudonymizer(),
        ledger_exclusions=excluded_by_ledger,
    )
    return audience, reads


def build_campaign_audience(runtime: Runtime, campaign: Campaign) -> StageResult:
    segment = runtime.project.segments[campaign.segment]
    members = runtime.lake.read(segment.dataset, ["patient_id"])
    audience, reads = plan_audience(runtime, campaign, members.table)
    funnel = audience.funnel()
    version = runtime.lake.write(audience_dataset(campaign), audience.members)
    with Ledger(runtime.home.state_db) as ledger:
        ledger.record_stage(campaign.name, runtime.send_date, "audience", funnel)
        ledger.record_exclusions(
            campaign.name,
            runtime.send_date,
            audience.exclusions.column("patient_key").to_pylist(),
            audience.exclusions.column("reason").to_pylist(),
        )
        record_run_lineage(
            ledger,
            campaign,
            runtime.send_date,
            "audience",
            version,
            (members, *reads),
            {f"segment {segment.name}": segment.sha256},
        )
    metadata = {
        "purpose": campaign.purpose,
        "as_of": runtime.send_time.isoformat(timespec="seconds"),
        **funnel,
        "variants": dict(sorted(_value_counts(audience.members, "variant").items())),
        **describe_reads(runtime.lake, (members, *reads)),
        **_written_metadata(version),
    }
    return StageResult(metadata=metadata, written=version)


def _value_counts(table: pa.Table, column: str) -> dict[str, int]:
    counts = pc.value_counts(table.column(column)).to_pylist()
    return {item["values"]: item["counts"] for item in counts}


def render_campaign(runtime: Runtime, campaign: Campaign) -> StageResult:
    template = runtime.project.templates[campaign.template]
    lake = runtime.lake
    segment = runtime.project.segments[campaign.segment]
    members = lake.read(
        audience_dataset(campaign),
        ["patient_id", "patient_key", "variant"],
        version=run_version(runtime, campaign, "audience"),
    )
    # A field the segment declares (say latest_hba1c) comes from the segment; the rest from the profile.
    from_segment = [name for name in template.spec.fields if name in segment.header.columns]
    from_profile = [name for name in template.spec.fields if name not in segment.header.columns]
    # The address (state, ZIP) is read only to find time zones for a campaign with a send window.
    address = ["state", "zip_code"] if campaign.send_window is not None else []
    profile_columns = list(dict.fromkeys(["patient_id", "email", "preferred_language", *from_profile, *address]))
    profile = lake.read("mart_patient_profile", profile_columns)
    reads = [members, profile]
    recipients = to_be_sent(members.table).join(profile.table, "patient_id", join_type="inner")
    if from_segment:
        reads.append(lake.read(segment.dataset, ["patient_id", *from_segment]))
        recipients = recipients.join(reads[-1].table, "patient_id", join_type="inner")
    recipients = recipients.sort_by("patient_key")
    stream = runtime.project.stream_of(campaign)
    links = issue_recipient_links(
        LinkTokens.load_or_create(runtime.kms, runtime.home.keys),
        campaign,
        stream,
        recipients.column("patient_key").to_pylist(),
    )
    outbox = render_outbox(
        campaign, stream, template, recipients.drop_columns(["patient_id"]), runtime.send_date, links
    )
    if campaign.send_window is not None:
        zones = time_zones_for(
            recipients.column("state").to_pylist(), recipients.column("zip_code").to_pylist(), DEFAULT_FALLBACK_ZONE
        )
        outbox = outbox.append_column("time_zone", pa.array(zones, pa.string()))
    runtime.start_epoch("message")
    version = lake.write(outbox_dataset(campaign), outbox, row_group_rows=OUTBOX_ROW_GROUP)
    with Ledger(runtime.home.state_db) as ledger:
        ledger.record_stage(campaign.name, runtime.send_date, "render", {"rendered": outbox.num_rows})
        record_run_lineage(
            ledger,
            campaign,
            runtime.send_date,
            "render",
            version,
            tuple(reads),
            {f"template {template.spec.name}": template.sha256},
        )
    metadata = {
        "template": campaign.template,
        "template_sha256": template.sha256,
        "rendered": outbox.num_rows,
        "locales": dict(sorted(_value_counts(outbox, "locale").items())),
        **describe_reads(runtime.lake, tuple(reads)),
        **_written_metadata(version),
    }
    return StageResult(metadata=metadata, written=version)


def deliver_campaign(
    runtime: Runtime,
    campaign: Campaign,
    target: TransportSpec,
    workers: int | None = None,
    chunk_rows: int | None = None,
) -> StageResult:
    metadata = deliver_campaign_run(runtime, campaign, target, workers, chunk_rows)
    return StageResult(metadata=metadata)


@dataclass(frozen=True)
class CampaignReport:
    published: PublishedReport
    files: ReportFiles
    audience: int
    """Treated members the report covers (for the caller's row counts; not itself published)."""


def report_campaign(runtime: Runtime, campaign: Campaign) -> tuple[StageResult, CampaignReport]:
    """The marketer report of a campaign run: its audience, the ledger's outcomes, the engagement
    store's opens, clicks, unsubscribes and complaints, and the goal when it can be measured."""
    with Ledger(runtime.home.state_db) as ledger:
        funnel = ledger.stage(campaign.name, runtime.send_date, "audience")
    members, reads, goal_measured = campaign_members(runtime, campaign)
    run = CampaignRun(
        campaign=campaign.name,
        purpose=campaign.purpose,
        send_date=runtime.send_date,
        segment_sha256={campaign.segment: runtime.project.segments[campaign.segment].sha256},
        template_sha256=runtime.project.templates[campaign.template].sha256,
        variants=tuple(campaign.variants),
        goal=GOAL_WORDS[campaign.goal] if campaign.goal and goal_measured else None,
    )
    published = build_report(members, {campaign.segment: funnel["excluded"]}, run)
    files = write_report(published, runtime.home.reports)
    metadata = {
        "report": str(files.html),
        "csv": str(files.csv),
        "marketer_view": published.marketer_view(),
        "summary": report_markdown(published),
        **describe_reads(runtime.lake, reads),
    }
    return StageResult(metadata=metadata), CampaignReport(published, files, audience=funnel["audience"])
