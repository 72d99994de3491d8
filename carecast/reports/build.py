"""From member rows to the files on disk: count, protect, publish, render.

The steps hand each other less and less: ``aggregate`` reads the rows and returns counts,
``build_tables`` adds the relations between them, ``protect`` decides what may be printed, and
``publish`` keeps only the printed forms. The renderers receive the published report alone, so no
renderer can print a count disclosure control did not clear.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from carecast.reports.csv_export import report_csv
from carecast.reports.disclosure import DisclosureError, protect
from carecast.reports.facts import Facts, aggregate
from carecast.reports.html_page import report_html
from carecast.reports.markdown import report_markdown
from carecast.reports.published import CampaignRun, PublishedReport, publish
from carecast.reports.tables import DETAIL_LEVELS, build_tables


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    csv: Path
    summary: Path
    """JSON: the run, the markdown summary, the A/B tests and the lift, as published."""


def build_report(
    members: pl.DataFrame, exclusions: Mapping[str, Mapping[str, int]], run: CampaignRun
) -> PublishedReport:
    """The published report of one campaign run (see ``carecast.reports.facts`` for the input contract).

    Disclosure control first tries the full detail; when a small count cannot be protected there (in
    a small campaign many counts sit at the 10/11 boundary the markers reveal), the report is
    published in less detail: two-way tables, then by variant, by segment and by day separately, then
    totals only. When not even totals can be published safely, ``DisclosureError``: no report rather
    than a leak.
    """
    facts = aggregate(members, exclusions, run.variants)
    *finer, coarsest = DETAIL_LEVELS
    for detail in finer:
        try:
            return _publish_in_detail(facts, run, detail)
        except DisclosureError:
            continue
    return _publish_in_detail(facts, run, coarsest)


def _publish_in_detail(facts: Facts, run: CampaignRun, detail: int) -> PublishedReport:
    tables = build_tables(facts, detail)
    protection = protect(
        tables.values, tables.atoms, tables.relations, unprinted=tables.unprinted, weights=tables.weights
    )
    return publish(run, tables.layout, protection)


def write_report(report: PublishedReport, reports_dir: Path) -> ReportFiles:
    """``<reports_dir>/<campaign>/<send date>/``: report.html, report.csv and summary.json."""
    folder = reports_dir / report.run.campaign / report.run.send_date
    folder.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(html=folder / "report.html", csv=folder / "report.csv", summary=folder / "summary.json")
    files.html.write_text(report_html(report), encoding="utf-8")
    files.csv.write_text(report_csv(report), encoding="utf-8")
    summary = {
        "run": {**asdict(report.run), "segment_sha256": dict(report.run.segment_sha256)},
        "generated_at": report.generated_at,
        "markdown": report_markdown(report),
        "marketer_view": report.marketer_view(),
        "ab_tests": [asdict(comparison) | {"significant": comparison.significant} for comparison in report.comparisons],
        "holdout_lift": asdict(report.lift),
    }
    files.summary.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return files
