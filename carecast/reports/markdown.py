"""The short markdown summary that goes into Dagster's materialization metadata."""

from __future__ import annotations

from carecast.reports import formatting as fmt
from carecast.reports.disclosure import COMPLEMENT, SUPPRESSED
from carecast.reports.published import RATES, PublishedReport

_OUTCOMES = ("sent", "delivered", "bounced", "not_sent", "opened", "clicked", "unsubscribed", "complained")
_RATE_OF = {numerator: name for name, (numerator, _denominator) in RATES.items() if name != "click_to_open_rate"}


def report_markdown(report: PublishedReport) -> str:
    run = report.run
    lines = [
        f"### `{run.campaign}`, {run.send_date} ({run.purpose})",
        "",
        "| | count | rate |",
        "| --- | ---: | ---: |",
        f"| targeted | {fmt.count(report.funnel('targeted'))} | |",
        *(f"| excluded: `{reason}` | {fmt.count(count)} | |" for reason, count in report.excluded().items()),
        f"| holdout | {fmt.count(report.funnel('holdout'))} | |",
        f"| audience | {fmt.count(report.funnel('audience'))} | |",
        *(
            f"| {fmt.MEASURE_LABELS[measure]} | {fmt.count(report.outcome(measure))} | "
            f"{fmt.percent(report.rate(_RATE_OF[measure])) if measure in _RATE_OF else ''} |"
            for measure in _OUTCOMES
        ),
        "",
    ]
    for comparison in report.comparisons:
        lines.append(
            f"- A/B {fmt.RATE_LABELS[comparison.rate]}: {comparison.variant} {fmt.percent(comparison.variant_rate)} "
            f"vs {comparison.control} {fmt.percent(comparison.control_rate)} "
            f"({fmt.points(fmt.difference(comparison))}), p {fmt.p_value(comparison.p_value)} (Holm): "
            f"{fmt.verdict(comparison)}"
        )
    lines.append(f"- Holdout lift in conversion: {fmt.lift_sentence(report.lift)}")
    if note := fmt.detail_note(report.layout.detail):
        lines.append(f"- {note}")
    lines.append("")
    lines.append(
        f"`{SUPPRESSED}`: a count from 1 to 10 (or a zero hidden with it); `{COMPLEMENT}`: a larger count hidden "
        "so that a small one cannot be worked out by subtraction."
    )
    return "\n".join(lines)
