"""Engagement events go back into the lake through the events landing source, keyed by patient id."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from carecast import stages
from carecast.engagement.events import EngagementEvents
from carecast.engagement.export import land_engagement_events
from carecast.engagement.feedback import TokenRecipient, endpoint_event
from carecast.home import CarecastHome
from carecast.project import Project
from carecast.runtime import Runtime

PATIENTS = ["patient-0001", "patient-0002", "patient-gone"]


def _events(runtime: Runtime) -> None:
    keys = runtime.pseudonymizer().patient_keys(PATIENTS)
    at = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    with EngagementEvents(runtime.home.state_db) as events:
        events.record(
            [
                endpoint_event("click", TokenRecipient(keys[0], "news", "marketing"), at, "endpoint", "join"),
                endpoint_event("open", TokenRecipient(keys[1], "news", "marketing"), at, "endpoint"),
                endpoint_event("unsubscribe", TokenRecipient(keys[1], "news", "marketing"), at, "page_post", "all"),
                endpoint_event("click", TokenRecipient(keys[2], "news", "marketing"), at, "endpoint", "join"),
            ]
        )


def test_events_land_as_an_events_batch_the_ingest_applies_once(home: CarecastHome, project: Project) -> None:
    runtime = Runtime.open(home, project, as_of=date(2026, 11, 23))
    runtime.lake.write("stg_patients", pa.table({"patient_id": PATIENTS[:2]}))
    _events(runtime)
    exported = land_engagement_events(runtime)
    # the third patient is no longer among the patients: counted, not landed
    assert (exported.landed, exported.unknown_patients) == (3, 1)
    stages.ingest(runtime, "events", "events")
    stored = runtime.lake.read("raw_events_events").table
    rows = sorted(zip(*(stored.column(c).to_pylist() for c in ("patient_id", "event_type", "purpose")), strict=True))
    assert rows == [
        ("patient-0001", "click", "marketing"),
        ("patient-0002", "open", "marketing"),
        ("patient-0002", "unsubscribe", "all"),
    ]
    assert pc.all(pc.is_valid(stored.column("occurred_at"))).as_py()
    # nothing new: no batch; the same events again (a new batch) change nothing
    assert land_engagement_events(runtime).batch is None
    with EngagementEvents(runtime.home.state_db) as events:
        events.record_export("rewind", 0, 0)
    assert land_engagement_events(runtime).landed == 0, "the cursor only moves forward"
    assert not list((home.landing / "events").glob("*/events.ndjson")), "landed files are sealed"


def test_the_feedback_sensor_requests_a_refresh_until_the_batch_is_ingested(home: CarecastHome, project: Project):
    import shutil

    import dagster as dg

    from carecast.engagement.export import refresh_engagement
    from pipelines.resources import CarecastResource
    from pipelines.sensors import FEEDBACK_REFRESH, feedback_sensor

    runtime = Runtime.open(home, project, as_of=date(2026, 11, 23))
    runtime.lake.write("stg_patients", pa.table({"patient_id": PATIENTS[:2]}))
    sensor, resources = feedback_sensor(), {"carecast": CarecastResource(home=str(home.root))}
    with dg.build_sensor_context(resources=resources) as context:
        assert isinstance(sensor(context), dg.SkipReason)
    batch = home.landing / "feedback" / "batch-0001"
    shutil.copytree(Path(__file__).parent / "data" / "feedback" / "batch", batch)
    (batch / "_SUCCESS").touch()
    with dg.build_sensor_context(resources=resources) as context:
        request = sensor(context)
    assert isinstance(request, dg.RunRequest)
    assert sorted(key.to_user_string() for key in sensor.asset_selection.resolve(_graph())) == sorted(FEEDBACK_REFRESH)
    refreshed = refresh_engagement(runtime)
    assert refreshed.feedback["batch-0001"]["items"] > 0
    with dg.build_sensor_context(resources=resources) as context:
        assert isinstance(sensor(context), dg.SkipReason)


def _graph():
    from pipelines.definitions import defs

    return defs.resolve_asset_graph()
