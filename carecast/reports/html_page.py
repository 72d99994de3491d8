"""The report as one self-contained HTML file: inline CSS, inline SVG charts, no script, no URL.

The Content-Security-Policy meta tag allows nothing to load (``default-src 'none'``) and only the one
inline style block, by its hash, so even a browser that is online fetches nothing when opening it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from html import escape

from carecast.reports import formatting as fmt
from carecast.reports.charts import Bar, grouped_columns, horizontal_bars
from carecast.reports.disclosure import COMPLEMENT, SUPPRESSED
from carecast.reports.facts import ALL, HOLDOUT, NOT_ATTEMPTED
from carecast.reports.published import PublishedReport
from carecast.reports.tables import EXCLUDED_PREFIX

_CSS = """
body{font-family:system-ui,sans-serif;color:#222;max-width:62rem;margin:1.5rem auto;padding:0 1rem;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.meta{color:#555;margin-top:0}.meta code{font-size:.85em}
.cards{display:flex;flex-wrap:wrap;gap:.6rem;margin:1rem 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.5rem .8rem;min-width:8rem}
.card b{display:block;font-size:1.4rem}.card span{color:#555;font-size:.85rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .6rem}th{background:#f5f5f5;text-align:left}
td{text-align:right;font-variant-numeric:tabular-nums}td.text{text-align:left}
.chart{max-width:100%;height:auto;display:block;margin:.6rem 0}
.note{color:#555;font-size:.85rem}details{margin:1rem 0}summary{cursor:pointer}
""".strip()
_CSP = (
    "default-src 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()}'; "
    "img-src 'none'; base-uri 'none'; form-action 'none'"
)
_OUTCOME_COLUMNS = ("audience", "sent", "not_sent", "delivered", "bounced", "opened", "clicked", "unsubscribed")
_TABLE_RATES = ("delivery_rate", "open_rate", "click_rate", "click_to_open_rate", "unsubscribe_rate", "complaint_rate")
_CHART_RATES = ("open_rate", "click_rate", "click_to_open_rate", "unsubscribe_rate")


def report_html(report: PublishedReport) -> str:
    run = report.run
    title = f"{run.campaign}, {run.send_date}: campaign report"
    body = [
        f"<h1>{escape(run.campaign)}</h1>",
        _meta(report),
        *([f'<p class="note">{escape(note)}</p>'] if (note := fmt.detail_note(report.layout.detail)) else []),
        _cards(report),
        "<h2>Audience funnel</h2>",
        _funnel(report),
        "<h2>Outcomes by variant</h2>",
        _by_variant(report),
        *_ab_tests(report),
        "<h2>Holdout lift</h2>",
        _lift(report),
        "<h2>By day</h2>",
        _by_day(report),
        *_by_segment(report),
        _detail(report),
        _notes(report),
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _meta(report: PublishedReport) -> str:
    run = report.run
    segments = ", ".join(
        f"<code>{escape(name)}</code> (sha256 {escape(sha[:12])})" for name, sha in run.segment_sha256.items()
    )
    variants = ", ".join(escape(v) + (" (control)" if i == 0 else "") for i, v in enumerate(report.layout.variants))
    goal = f" Goal: {escape(run.goal)}." if run.goal else ""
    return (
        f'<p class="meta">Purpose <b>{escape(run.purpose)}</b>, send date {escape(run.send_date)}. '
        f"Segment {segments}; template sha256 {escape(run.template_sha256[:12])}. Variants: {variants}.{goal}</p>"
    )


def _cards(report: PublishedReport) -> str:
    cards = [
        ("targeted", report.funnel("targeted"), None),
        ("audience", report.funnel("audience"), None),
        ("delivered", report.outcome("delivered"), "delivery_rate"),
        ("opened", report.outcome("opened"), "open_rate"),
        ("clicked", report.outcome("clicked"), "click_rate"),
        ("unsubscribed", report.outcome("unsubscribed"), "unsubscribe_rate"),
    ]
    html = []
    for name, count, rate in cards:
        detail = f"{name} ({fmt.RATE_LABELS[rate]} {fmt.percent(report.rate(rate))})" if rate else name
        html.append(f'<div class="card"><b>{escape(fmt.count(count))}</b><span>{escape(detail)}</span></div>')
    return f'<div class="cards">{"".join(html)}</div>'


def _funnel(report: PublishedReport) -> str:
    steps = [
        ("targeted", report.funnel("targeted")),
        *((f"excluded: {reason}", count) for reason, count in report.excluded().items()),
        ("holdout", report.funnel("holdout")),
        ("audience", report.funnel("audience")),
        *((fmt.MEASURE_LABELS[m], report.outcome(m)) for m in ("sent", "delivered", "opened", "clicked")),
    ]
    chart = horizontal_bars("Audience funnel", [Bar(label, count.value, fmt.count(count)) for label, count in steps])
    segments = report.layout.axis(report.layout.segments)
    measures = ["targeted", *(EXCLUDED_PREFIX + reason for reason in report.layout.reasons), "holdout", "audience"]
    rows = [
        [fmt.MEASURE_LABELS.get(measure, measure), *(fmt.count(report.funnel(measure, s)) for s in segments)]
        for measure in measures
    ]
    return chart + _table(["", *map(fmt.label, segments)], rows)


def _by_variant(report: PublishedReport) -> str:
    variants = report.layout.axis(report.layout.variants)
    rows = [
        [fmt.MEASURE_LABELS[m], *(fmt.count(report.outcome(m, variant=v)) for v in variants)]
        for m in (*_OUTCOME_COLUMNS, "complained")
    ]
    rows += [
        [fmt.RATE_LABELS[rate], *(fmt.percent(report.rate(rate, variant=v)) for v in variants)] for rate in _TABLE_RATES
    ]
    if report.layout.has_goal:
        rows.append(["converted", *(fmt.count(report.conversion(v)) for v in variants)])
        rows.append(["conversion rate", *(fmt.percent(report.conversion_rate(v)) for v in variants)])
    series = [
        (
            fmt.label(variant),
            [
                Bar(rate, report.rate(rate, variant=variant), fmt.percent(report.rate(rate, variant=variant)))
                for rate in _CHART_RATES
            ],
        )
        for variant in report.layout.variants
    ]
    chart = grouped_columns(
        "Rates by variant", [fmt.RATE_LABELS[rate] for rate in _CHART_RATES], series, lambda v: f"{v * 100:.0f} %"
    )
    return _table(["", *map(fmt.label, variants)], rows) + chart


def _ab_tests(report: PublishedReport) -> list[str]:
    if not report.comparisons:
        return []
    rows = [
        [
            fmt.RATE_LABELS[c.rate],
            f"{c.variant} {fmt.percent(c.variant_rate)}",
            f"{c.control} {fmt.percent(c.control_rate)}",
            fmt.points(fmt.difference(c)),
            c.method or fmt.NOT_SHOWN,
            fmt.p_value(c.p_value),
            fmt.verdict(c),
        ]
        for c in report.comparisons
    ]
    header = ["rate", "variant", "control", "difference", "test", "p (Holm)", "result"]
    note = (
        '<p class="note">Each variant against the control; a two-proportion z-test, or Fisher\'s exact test '
        "when an expected count is under 5. p-values are Holm-adjusted over the variants compared on one rate. "
        "A test is shown only when every count it needs is published.</p>"
    )
    return ["<h2>A/B test</h2>", _table(header, rows, text_columns=(0, 1, 2, 4, 6)), note]


def _lift(report: PublishedReport) -> str:
    lift = report.lift
    if not (report.layout.has_goal and report.layout.has_holdout):
        return f'<p class="note">{escape(lift.note)}.</p>'
    rows = [
        [
            name,
            fmt.count(report.arm_size(arm)),
            fmt.count(report.conversion(arm)),
            fmt.percent(report.conversion_rate(arm)),
        ]
        for name, arm in (("treated", ALL), ("holdout", HOLDOUT))
    ]
    table = _table(["group", "members", "converted", "conversion rate"], rows, text_columns=(0,))
    note = (
        '<p class="note">Absolute lift with a 95 % Newcombe (hybrid Wilson score) interval for a difference of '
        "proportions; relative lift against the holdout rate.</p>"
    )
    return f"{table}<p>Lift: <b>{escape(fmt.lift_sentence(lift))}</b></p>{note}"


def _by_day(report: PublishedReport) -> str:
    days = report.sending_days()
    series = [
        (
            fmt.MEASURE_LABELS[m],
            [Bar(day, report.outcome(m, day=day).value, fmt.count(report.outcome(m, day=day))) for day in days],
        )
        for m in ("sent", "delivered", "opened", "clicked")
    ]
    chart = grouped_columns("Outcomes by day", days, series, lambda v: f"{v:,.0f}") if days else ""
    return chart + _outcome_table(report, "day", report.layout.axis(report.layout.days))


def _by_segment(report: PublishedReport) -> list[str]:
    if len(report.layout.segments) < 2:
        return []
    segments = report.layout.axis(report.layout.segments)
    return ["<h2>By segment</h2>", _outcome_table(report, "segment", segments)]


def _detail(report: PublishedReport) -> str:
    header = ["variant", "segment", "day", *(fmt.MEASURE_LABELS[m] for m in (*_OUTCOME_COLUMNS, "complained"))]
    rows = [
        [
            fmt.label(v),
            fmt.label(s),
            fmt.label(d),
            *(_outcome_text(report, m, v, s, d) for m in (*_OUTCOME_COLUMNS, "complained")),
        ]
        for v, s, d in report.layout.positions()
    ]
    return (
        "<details><summary>Every published count: variant × segment × day (as in the CSV export)</summary>"
        + _table(header, rows, text_columns=(0, 1, 2))
        + "</details>"
    )


def _outcome_table(report: PublishedReport, dimension: str, categories: Sequence[str]) -> str:
    header = [dimension, *(fmt.MEASURE_LABELS[m] for m in _OUTCOME_COLUMNS), "open rate", "click rate"]
    rows = []
    for category in categories:
        where = {dimension: category}
        rates = [
            fmt.percent(report.rate(r, **where)) if category != NOT_ATTEMPTED else ""
            for r in ("open_rate", "click_rate")
        ]
        rows.append([fmt.label(category), *(_outcome_text(report, m, **where) for m in _OUTCOME_COLUMNS), *rates])
    return _table(header, rows, text_columns=(0,))


def _outcome_text(report: PublishedReport, measure: str, variant: str = ALL, segment: str = ALL, day: str = ALL) -> str:
    """The printed count, or nothing where the measure does not exist (nothing is sent on ``not attempted``)."""
    if measure not in report.layout.outcomes_at(day):
        return ""
    return fmt.count(report.outcome(measure, variant, segment, day))


def _notes(report: PublishedReport) -> str:
    return (
        '<h2>About these numbers</h2><p class="note">'
        f"<b>{escape(SUPPRESSED)}</b>: a count from 1 to 10 (or a zero hidden along with one). "
        f"<b>{escape(COMPLEMENT)}</b>: a count of 11 or more, hidden so that no small count can be worked out by "
        "subtracting from a total. A rate is shown only when both of its counts are. Sent = delivered + bounced; "
        "delivery rate is over sent; open, click, unsubscribe and complaint rates are over delivered; click-to-open "
        f"is clicks over opens. {escape(NOT_ATTEMPTED.capitalize())}: members whose message was never attempted "
        "(excluded just before sending, or not yet sent). Aggregates only: no patient-level data. "
        f"Generated {escape(report.generated_at)}.</p>"
    )


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], text_columns: Sequence[int] = (0,)) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="text">{escape(v)}</td>' if i in text_columns else f"<td>{escape(v)}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
