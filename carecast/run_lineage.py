"""Which lake versions each stage of a campaign run wrote and read, kept in the ledger's stage records.

Campaign runs are Dagster partitions (one per send date), so two runs' stages may interleave: a later
stage of a run must read the version its own earlier stage wrote, not whatever was written last. The
same records name the data snapshot behind every message for ``carecast audit``. Refs only, no PHI.
"""

from __future__ import annotations

from carecast.campaigns import Campaign
from carecast.lake import DatasetVersion, LakeRead
from carecast.ledger import Ledger
from carecast.runtime import Runtime


def record_run_lineage(
    ledger: Ledger,
    campaign: Campaign,
    send_date: str,
    stage: str,
    written: DatasetVersion,
    reads: tuple[LakeRead, ...],
    code: dict[str, str],
) -> None:
    """Keep what a stage of one campaign run wrote and read, and the hashes of the SQL or template it
    ran (``code``: name -> sha256), as ``<stage>_lineage``."""
    lineage = {
        "written": written.ref,
        "version": written.version,
        "read": [read.version.ref for read in reads],
        "code": code,
    }
    ledger.record_stage(campaign.name, send_date, f"{stage}_lineage", lineage)


def run_version(runtime: Runtime, campaign: Campaign, stage: str) -> int | None:
    """The dataset version a stage of this campaign run wrote; None (the latest) when the stage never
    recorded one (datasets written by hand, as fixtures do)."""
    with Ledger(runtime.home.state_db) as ledger:
        lineage = run_lineage(ledger, campaign.name, runtime.send_date, stage)
    return None if lineage is None else lineage["version"]


def run_lineage(ledger: Ledger, campaign: str, send_date: str, stage: str) -> dict | None:
    """What ``record_run_lineage`` kept for a stage of a run, or None."""
    try:
        return ledger.stage(campaign, send_date, f"{stage}_lineage")
    except LookupError:
        return None
