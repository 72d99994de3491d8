"""``carecast segment preview``: a segment's size, funnel and the data it read, for an analyst.

Counts only, each under 11 shown as ``<11`` with complementary suppression inside the funnel (whose
cells add up to the segment size), and never a row. Nothing is written to the lake.
"""

from __future__ import annotations

from carecast.campaigns import Campaign
from carecast.reports import suppress_cells, suppress_count
from carecast.runtime import Runtime
from carecast.stages import compute_segment, plan_audience


def preview_segment(runtime: Runtime, name: str, campaign: Campaign | None = None) -> list[str]:
    segment = runtime.project.segments[name]
    members, metadata = compute_segment(runtime, name)
    lines = [
        f"segment {name} (purposes: {', '.join(segment.header.purposes)}; owner: {segment.header.owner}) "
        f"as of {runtime.send_date}",
        f"  members: {suppress_count(members.num_rows)}",
        "  columns read:",
        *(f"    {phi_class:12s} {', '.join(columns)}" for phi_class, columns in metadata["classes_read"].items()),
        f"  keys unwrapped: {', '.join(metadata['key_ids_unwrapped'])}",
    ]
    if metadata["sensitive_categories_withheld"]:
        withheld = sum(metadata["rows_withheld_sensitive"].values())
        lines.append(
            f"  sensitive categories withheld: {', '.join(metadata['sensitive_categories_withheld'])} "
            f"({suppress_count(withheld)} rows)"
        )
    if campaign is not None:
        audience, _reads = plan_audience(runtime, campaign, members)
        cells = {f"excluded: {reason}": count for reason, count in audience.excluded.items()}
        cells |= {"holdout": audience.holdout, "audience": audience.size}
        lines.append(f"  funnel for campaign {campaign.name} ({campaign.purpose}):")
        lines.extend(f"    {label:32s} {shown:>10s}" for label, shown in suppress_cells(cells).items())
    return lines
