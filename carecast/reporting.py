"""Campaign reports for marketers: aggregates only, small cells suppressed.

Any count from 1 to 10 is shown as ``<11``. When a group of cells adds up to a published total and
exactly one cell in it is suppressed, the next smallest cell is suppressed too, so the hidden one
cannot be recovered by subtraction.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SMALL_CELL = 11
SUPPRESSED = f"<{SMALL_CELL}"


def suppress_cells(cells: dict[str, int]) -> dict[str, str]:
    """Suppress 1..10, then complementary cells, within one group whose total is published."""
    hidden = {name for name, count in cells.items() if 0 < count < SMALL_CELL}
    if len(hidden) == 1:
        # Even a zero must go: total - shown cells would otherwise give the hidden one exactly.
        visible = sorted((count, name) for name, count in cells.items() if name not in hidden)
        if visible:
            hidden.add(visible[0][1])
    return {name: (SUPPRESSED if name in hidden else str(count)) for name, count in cells.items()}


def suppress_count(count: int) -> str:
    return SUPPRESSED if 0 < count < SMALL_CELL else str(count)


@dataclass(frozen=True)
class CampaignSummary:
    campaign: str
    purpose: str
    send_date: str
    segment: str
    segment_sha256: str
    template_sha256: str
    segment_size: int
    excluded: dict[str, int]
    holdout: int
    audience: int
    rendered: int
    states: dict[str, int]

    def counts(self) -> dict[str, object]:
        return {
            "segment": self.segment_size,
            "excluded": self.excluded,
            "holdout": self.holdout,
            "audience": self.audience,
            "rendered": self.rendered,
            "sent": sum(self.states.get(s, 0) for s in ("delivered", "bounced")),
            "delivered": self.states.get("delivered", 0),
            "bounced": self.states.get("bounced", 0),
            "deferred": self.states.get("deferred", 0),
            "held": self.states.get("held", 0),
        }

    def marketer_view(self) -> dict[str, object]:
        counts = self.counts()
        return {
            "segment": suppress_count(self.segment_size),
            "excluded": suppress_cells(self.excluded | {"(reached audience)": self.audience}),
            "outcomes": suppress_cells(
                {state: int(counts[state]) for state in ("delivered", "bounced", "deferred", "held")}
            ),
        }


def write_report(summary: CampaignSummary, reports_dir: Path) -> Path:
    folder = reports_dir / summary.campaign / summary.send_date
    folder.mkdir(parents=True, exist_ok=True)
    view = summary.marketer_view()
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "campaign": summary.campaign,
                "purpose": summary.purpose,
                "send_date": summary.send_date,
                "segment": summary.segment,
                "segment_sha256": summary.segment_sha256,
                "template_sha256": summary.template_sha256,
                "counts": view,
            },
            indent=2,
        )
    )
    path = folder / "report.html"
    path.write_text(_html(summary, view))
    return path


def _rows(cells: dict[str, str]) -> str:
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in cells.items())


def _html(summary: CampaignSummary, view: dict[str, object]) -> str:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(summary.campaign)} — carecast report</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>body{{font-family:sans-serif;max-width:48rem;margin:2rem auto;color:#222}}
table{{border-collapse:collapse;margin:1rem 0}}th,td{{border:1px solid #ccc;padding:.3rem .7rem;text-align:left}}
td{{text-align:right}}small{{color:#666}}</style></head>
<body>
<h1>{html.escape(summary.campaign)}</h1>
<p>Purpose <b>{html.escape(summary.purpose)}</b>, send date {html.escape(summary.send_date)},
segment <code>{html.escape(summary.segment)}</code> (sha256 {summary.segment_sha256[:12]}),
template sha256 {summary.template_sha256[:12]}.</p>
<h2>Audience funnel</h2>
<table><tr><th>segment size</th><td>{html.escape(str(view["segment"]))}</td></tr>{_rows(view["excluded"])}</table>
<h2>Delivery</h2>
<table>{_rows(view["outcomes"])}</table>
<p><small>Counts from 1 to 10 are shown as {SUPPRESSED}; a second cell is hidden where needed so a hidden
count cannot be recovered from the others. Generated {generated}. No patient-level data.</small></p>
</body></html>
"""
