"""Materialize every asset of the code location in-process, on a persistent Dagster instance.

Used by ``carecast demo`` and the integration tests; the same assets run from the UI and from
``dagster asset materialize``. Returns counts per stage, read back from the ledger and the
materialization metadata, never values.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

from carecast.dagster_home import prepare_dagster_home
from carecast.home import CarecastHome
from carecast.ledger import Ledger

DEMO_CAMPAIGN = "breast_screening_reminder"
"""The campaign whose counts head the demo's JSON line (all campaigns are under "campaigns")."""


def _materialize(
    home: CarecastHome, as_of: date, quiet: bool, selection: list[str] | None = None
) -> tuple[Any, dict[str, dict[str, Any]], dict[str, float]]:
    """Run the selected assets (all by default) in process; return the result, metadata per asset
    and seconds per step."""
    prepare_dagster_home(home)
    import dagster as dg

    from pipelines.definitions import defs
    from pipelines.resources import CarecastResource, MailTransportResource

    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING" if quiet else "INFO"}}}}
    with dg.DagsterInstance.get() as instance:
        graph = defs.resolve_asset_graph()
        selected = [dg.AssetKey(name) for name in selection] if selection else graph.get_all_asset_keys()
        # the campaign-run partition (the send date), when a campaign asset is selected
        partitioned = any(graph.get(key).partitions_def is not None for key in selected)
        run = as_of.isoformat() if partitioned else None
        result = dg.materialize(
            list(defs.assets),
            selection=selection,
            instance=instance,
            partition_key=run,
            resources={
                "carecast": CarecastResource(home=str(home.root), as_of=as_of.isoformat()),
                "mail": MailTransportResource(),
            },
            run_config=run_config,
        )
        step_seconds = _step_seconds(instance, result.run_id)
    metadata = {
        event.materialization.asset_key.to_user_string(): {
            k: v.value for k, v in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }
    return result, metadata, step_seconds


def materialize_assets(home: CarecastHome, as_of: date, assets: list[str]) -> dict[str, dict[str, Any]]:
    """Run these assets (campaign ones for the campaign run of ``as_of``); return their metadata."""
    _result, metadata, _seconds = _materialize(home, as_of, quiet=True, selection=assets)
    return metadata


def materialize_everything(home: CarecastHome, as_of: date, quiet: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    result, metadata, step_seconds = _materialize(home, as_of, quiet)
    patients = metadata["raw_synthea_patients"]["rows"]
    quarantined = sum(m.get("rows_quarantined", 0) for m in metadata.values())
    campaigns: dict[str, dict[str, Any]] = {}
    with Ledger(home.state_db) as ledger:
        for key, values in metadata.items():
            if not key.startswith("report_"):
                continue
            name = key.removeprefix("report_")
            funnel = ledger.stage(name, as_of.isoformat(), "audience")
            states = ledger.counts(name, as_of.isoformat())
            campaigns[name] = {
                "segment": funnel["segment"],
                "audience": funnel["audience"],
                "excluded": funnel["excluded"],
                "holdout": funnel["holdout"],
                "rendered": ledger.stage(name, as_of.isoformat(), "render")["rendered"],
                "sent": states.get("delivered", 0) + states.get("bounced", 0),
                "delivered": states.get("delivered", 0),
                "bounced": states.get("bounced", 0),
                "deferred": states.get("deferred", 0),
                "held": states.get("held", 0),
                "report": values["report"],
            }
    headline = campaigns.get(DEMO_CAMPAIGN) or next(iter(campaigns.values()))
    return {
        "patients": patients,
        "quarantined": quarantined,
        **{
            k: headline[k]
            for k in ("segment", "audience", "excluded", "rendered", "sent", "delivered", "bounced", "report")
        },
        "run_id": result.run_id,
        "seconds": {"materialize": round(time.perf_counter() - started, 2), **step_seconds},
        "campaigns": campaigns,
    }


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    """Wall time per asset step, from the run's own event log."""
    stats = instance.get_run_step_stats(run_id)
    return {
        stat.step_key: round((stat.end_time or 0) - (stat.start_time or 0), 2)
        for stat in stats
        if stat.start_time and stat.end_time
    }
