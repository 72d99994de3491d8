"""Engagement events back into the lake, so the behavior and suppression marts see them.

The store in ``state.db`` names patients by pseudonym; the marts (``stg_events`` → ``mart_behavior``,
``mart_suppressions``) are keyed by patient id, and a behavioral segment (lapsed engagement) reads
them. ``land_engagement_events`` writes the events stored since the last export as a sealed batch of
the ``events`` landing source (the endpoint's own NDJSON, ``docs/formats.md``), which the ingest
applies like any other: validated, merged by ``event_id`` (so an event landed twice is one row),
journaled. Pseudonyms are turned back into ids by pseudonymizing the profile's ids (the keyed hash
cannot be inverted); events of patients no longer in ``stg_patients`` are counted and left out.

The export's cursor (the store's last exported row) is kept in ``state.db`` and advanced in the same
step that lands the batch, so a crash in between lands the same events again next time, harmlessly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from carecast.crypto.sealed_file import SUFFIX as SEALED_SUFFIX
from carecast.crypto.sealed_file import seal_bytes
from carecast.engagement.events import EngagementEvents
from carecast.engagement.ingest import ingest_event_batch, pending_event_batches
from carecast.ingest.landing import SUCCESS_MARKER
from carecast.runtime import Runtime

EXPORTED_KINDS = ("delivery", "bounce", "complaint", "open", "click", "unsubscribe")
"""What ``stg_events`` accepts; sends, delays and rejects stay in the store only."""
SOURCE = "events"


@dataclass(frozen=True)
class EngagementExport:
    """Counts only: events landed, events left out (their patient is no longer known), and the batch."""

    batch: str | None
    landed: int
    unknown_patients: int


def land_engagement_events(runtime: Runtime) -> EngagementExport:
    profile = runtime.lake.read("stg_patients", ["patient_id"]).table.column("patient_id").to_pylist()
    id_of = dict(zip(runtime.pseudonymizer().patient_keys(profile), profile, strict=True))
    with EngagementEvents(runtime.home.state_db) as events:
        rows = events.events_after(events.export_cursor(), EXPORTED_KINDS)
        if not rows:
            return EngagementExport(None, 0, 0)
        lines, unknown = [], 0
        for _rowid, event_id, patient_key, kind, detail, occurred_at, campaign, purpose in rows:
            patient_id = id_of.get(patient_key)
            if patient_id is None:
                unknown += 1
                continue
            lines.append(json.dumps(_record(event_id, patient_id, kind, detail, occurred_at, campaign, purpose)))
        batch = f"engagement-{datetime.now(UTC):%Y%m%dT%H%M%S}-{rows[-1][0]}"
        if lines:
            _land(runtime, batch, ("\n".join(lines) + "\n").encode("utf-8"))
        events.record_export(batch, rows[-1][0], len(lines))
    return EngagementExport(batch if lines else None, len(lines), unknown)


def _record(
    event_id: str, patient_id: str, kind: str, detail: str | None, occurred_at: str, campaign: str, purpose: str | None
) -> dict[str, str | None]:
    """One ``events`` landing row: the bounce class for bounces, ``all`` for an unsubscribe from everything."""
    return {
        "event_id": event_id,
        "event_type": kind,
        "bounce_type": detail if kind == "bounce" else None,
        "occurred_at": datetime.fromisoformat(occurred_at).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "patient_id": patient_id,
        "campaign": campaign,
        "purpose": "all" if kind == "unsubscribe" and detail == "all" else purpose,
    }


def _land(runtime: Runtime, batch: str, data: bytes) -> Path:
    folder = runtime.home.landing / SOURCE / batch
    folder.mkdir(parents=True)
    seal_bytes(data, folder / f"events.ndjson{SEALED_SUFFIX}", runtime.kms)
    (folder / SUCCESS_MARKER).touch()
    return folder


@dataclass(frozen=True)
class EngagementRefresh:
    """What one refresh did: feedback batches ingested (their counts) and the export to the lake."""

    feedback: dict[str, dict]
    exported: EngagementExport


def refresh_engagement(runtime: Runtime) -> EngagementRefresh:
    """Ingest every pending feedback batch, then land the new events for the lake (``stg_events``)."""
    feedback = {
        batch.name: ingest_event_batch(runtime.home, runtime.kms, batch).counts()
        for batch in pending_event_batches(runtime.home)
    }
    return EngagementRefresh(feedback, land_engagement_events(runtime))
