"""The engagement store: idempotent events, the feedback rules in the same transaction, the upgrade of a
first-version table, attribution of endpoint events, and the columnar reads reports use."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from carecast.engagement.events import FLAG_COLUMNS, EngagementEvents, Unsubscribe, suppression_for
from carecast.engagement.feedback import FeedbackEvent, TokenRecipient, endpoint_event, event_id
from carecast.ledger import Ledger, Outcome, Planned

AT = datetime(2026, 3, 3, 9, 30, tzinfo=UTC)
CAMPAIGN, PURPOSE = "spring_newsletter", "marketing"


def _key(n: int) -> str:
    return f"{n:032x}"


def _send(state_db, day: str, patients: range, campaign: str = CAMPAIGN) -> dict[int, str]:
    """Deliver one message per patient on ``day``; patient number -> message key."""
    keys = {n: f"{day.replace('-', '')}{n:024x}" for n in patients}
    with Ledger(state_db) as ledger:
        ledger.reserve(campaign, PURPOSE, day, [Planned(keys[n], _key(n), "A") for n in patients])
        ledger.commit([Outcome(keys[n], "delivered", 250, provider_message_id=f"ses-{keys[n]}") for n in patients])
    return keys


def _event(kind: str, detail: str | None = None, *, message_key: str | None = None, n: int = 0) -> FeedbackEvent:
    return FeedbackEvent(
        event_id("test", kind, detail or "", message_key or "", str(n)), kind, AT, "ses", detail, message_key
    )


def _suppressions(state_db) -> set[tuple[str, str, str]]:
    with sqlite3.connect(state_db) as connection:
        return set(connection.execute("select patient_key, reason, purpose from suppressions"))


def test_hard_bounces_complaints_and_unsubscribes_suppress_and_the_rest_do_not(tmp_path):
    state_db = tmp_path / "state.db"
    keys = _send(state_db, "2026-03-02", range(1, 8))
    events = [
        _event("bounce", "hard", message_key=keys[1]),
        _event("complaint", "abuse", message_key=keys[2]),
        _event("unsubscribe", "purpose", message_key=keys[3]),
        _event("unsubscribe", "all", message_key=keys[4]),
        _event("bounce", "soft", message_key=keys[5]),
        _event("bounce", "undetermined", message_key=keys[5]),
        _event("delay", message_key=keys[6]),
        _event("open", message_key=keys[7]),
        _event("click", "schedule", message_key=keys[7]),
    ]
    with EngagementEvents(state_db) as store:
        report = store.record(events)
        assert store.suppressed_among([_key(n) for n in range(1, 8)], "treatment") == {
            _key(1): "hard_bounce",
            _key(2): "complaint",
            _key(4): "unsubscribed",
        }
    assert report.recorded == 9 and report.duplicates == report.unmatched == 0
    assert report.suppressions_added == {"hard_bounce": 1, "complaint": 1, "unsubscribed": 2}
    assert _suppressions(state_db) == {
        (_key(1), "hard_bounce", "all"),
        (_key(2), "complaint", "all"),
        (_key(3), "unsubscribed", PURPOSE),
        (_key(4), "unsubscribed", "all"),
    }


def test_the_same_event_twice_counts_once_and_an_unknown_message_is_unmatched(tmp_path):
    state_db = tmp_path / "state.db"
    keys = _send(state_db, "2026-03-02", range(1, 3))
    bounce = _event("bounce", "hard", message_key=keys[1])
    by_provider = FeedbackEvent(event_id("p"), "open", AT, "ses", provider_message_id=f"ses-{keys[2]}")
    stranger = FeedbackEvent(event_id("s"), "complaint", AT, "ses", "abuse", provider_message_id="ses-unknown")
    with EngagementEvents(state_db) as store:
        first = store.record([bounce, bounce, by_provider, stranger])
        second = store.record([bounce, by_provider])
    assert (first.recorded, first.duplicates, first.unmatched) == (2, 1, 1)
    assert (second.recorded, second.duplicates, second.suppressions_added) == (0, 2, {})
    assert _suppressions(state_db) == {(_key(1), "hard_bounce", "all")}


def test_a_duplicate_does_not_bring_back_a_suppression_an_operator_lifted(tmp_path):
    state_db = tmp_path / "state.db"
    keys = _send(state_db, "2026-03-02", range(1, 2))
    bounce = _event("bounce", "hard", message_key=keys[1])
    with EngagementEvents(state_db) as store:
        store.record([bounce])
    with sqlite3.connect(state_db) as connection:
        connection.execute("delete from suppressions")
    with EngagementEvents(state_db) as store:
        assert store.record([bounce]).duplicates == 1
    assert _suppressions(state_db) == set()


def test_endpoint_events_are_attributed_to_the_latest_message_sent_by_then(tmp_path):
    state_db = tmp_path / "state.db"
    march = _send(state_db, "2026-03-02", range(1, 2))
    april = _send(state_db, "2026-04-06", range(1, 2))
    recipient = TokenRecipient(_key(1), CAMPAIGN, PURPOSE)
    clicks = [
        endpoint_event("click", recipient, datetime(2026, 3, 20, tzinfo=UTC), "endpoint", "schedule"),
        endpoint_event("click", recipient, datetime(2026, 4, 6, 18, tzinfo=UTC), "endpoint", "schedule"),
        endpoint_event("open", TokenRecipient(_key(9), CAMPAIGN, PURPOSE), AT, "endpoint"),
    ]
    with EngagementEvents(state_db) as store:
        assert store.record(clicks).recorded == 3
        assert store.per_message_flags(CAMPAIGN, "2026-03-02")["clicked"].to_pylist() == [True]
        assert store.per_message_flags(CAMPAIGN, "2026-04-06")["clicked"].to_pylist() == [True]
    with sqlite3.connect(state_db) as connection:
        rows = connection.execute("select message_key, send_date from engagement_log order by occurred_at").fetchall()
    assert sorted(rows, key=str) == sorted([(march[1], "2026-03-02"), (april[1], "2026-04-06"), (None, None)], key=str)


def test_per_message_flags_cover_every_message_of_the_run(tmp_path):
    state_db = tmp_path / "state.db"
    keys = _send(state_db, "2026-03-02", range(1, 5))
    _send(state_db, "2026-03-02", range(1, 3), campaign="other_campaign")
    with EngagementEvents(state_db) as store:
        store.record(
            [
                _event("open", message_key=keys[1]),
                _event("click", "schedule", message_key=keys[1]),
                _event("bounce", "soft", message_key=keys[2]),
                _event("bounce", "hard", message_key=keys[3], n=1),
                _event("complaint", "abuse", message_key=keys[3]),
                _event("unsubscribe", "purpose", message_key=keys[3]),
            ]
        )
        flags = store.per_message_flags(CAMPAIGN, "2026-03-02")
        empty = store.per_message_flags(CAMPAIGN, "2030-01-01")
    assert flags.schema == pa.schema([("message_key", pa.string())] + [(name, pa.bool_()) for name in FLAG_COLUMNS])
    none = dict.fromkeys(FLAG_COLUMNS, False)
    assert {row.pop("message_key"): row for row in flags.to_pylist()} == {
        keys[1]: none | {"opened": True, "clicked": True},
        keys[2]: none,
        keys[3]: none | {"bounced_hard": True, "complained": True, "unsubscribed": True},
        keys[4]: none,
    }
    assert empty.num_rows == 0 and empty.schema == flags.schema


def test_events_for_the_lake_are_pseudonymous_and_come_after_the_cursor(tmp_path):
    state_db = tmp_path / "state.db"
    keys = _send(state_db, "2026-03-02", range(1, 3))
    with EngagementEvents(state_db) as store:
        assert store.events_after(0, ("open", "bounce")) == []
        store.record([_event("open", message_key=keys[1]), _event("bounce", "hard", message_key=keys[2])])
        rows = store.events_after(0, ("open", "bounce"))
        assert store.events_after(rows[-1][0], ("open", "bounce")) == []
    assert sorted((row[2], row[3], row[4], row[6]) for row in rows) == [
        (_key(1), "open", None, CAMPAIGN),
        (_key(2), "bounce", "hard", CAMPAIGN),
    ]
    assert all(datetime.fromisoformat(row[5]) == AT for row in rows)


_FIRST_VERSION = """
create table engagement_events (
    event_id text primary key,
    patient_key text not null,
    campaign text not null,
    purpose text not null,
    kind text not null check (kind in ('unsubscribe')),
    source text not null check (source in ('one_click_post', 'page_post')),
    scope text not null check (scope in ('purpose', 'all')),
    occurred_at text not null
);
create index engagement_events_patient on engagement_events (patient_key, kind);
"""


def test_a_first_version_table_is_upgraded_in_place_and_its_events_still_deduplicate(tmp_path):
    state_db = tmp_path / "state.db"
    with Ledger(state_db):
        pass
    unsubscribe = Unsubscribe(_key(1), CAMPAIGN, PURPOSE, "purpose", "one_click_post", AT)
    first_version_id = hashlib.sha256(
        "\x1f".join(("unsubscribe", _key(1), CAMPAIGN, PURPOSE, "purpose", AT.date().isoformat())).encode()
    ).hexdigest()
    with sqlite3.connect(state_db) as connection:
        connection.executescript(_FIRST_VERSION)
        connection.execute(
            "insert into engagement_events values (?, ?, ?, ?, 'unsubscribe', 'one_click_post', 'purpose', ?)",
            (first_version_id, _key(1), CAMPAIGN, PURPOSE, AT.isoformat()),
        )
    with EngagementEvents(state_db) as store:
        assert store.record_unsubscribe(unsubscribe) is False, "the first version's event id is kept"
        assert store.record([_event("open", message_key="0" * 32)]).unmatched == 1
    with EngagementEvents(state_db):
        pass  # opening again finds nothing left to upgrade
    with sqlite3.connect(state_db) as connection:
        objects = dict(connection.execute("select name, type from sqlite_master where name like 'engagement%'"))
        rows = connection.execute("select * from engagement_events").fetchall()
    assert objects == {
        "engagement_log": "table",
        "engagement_log_run": "index",
        "engagement_events": "view",
        "engagement_exports": "table",
    }
    event_id_kept = unsubscribe.as_event().event_id
    assert first_version_id.startswith(event_id_kept)
    assert rows == [
        (event_id_kept, _key(1), CAMPAIGN, PURPOSE, "unsubscribe", "one_click_post", "purpose", AT.isoformat())
    ]


def test_record_unsubscribe_refuses_what_the_endpoint_never_sends(tmp_path):
    with EngagementEvents(tmp_path / "state.db") as store:
        with pytest.raises(ValueError, match="scope or source"):
            store.record_unsubscribe(Unsubscribe(_key(1), CAMPAIGN, PURPOSE, "everything", "page_post", AT))
        with pytest.raises(ValueError, match="kind or source"):
            store.record([FeedbackEvent(event_id("x"), "reply", AT, "ses")])


def test_an_unsubscribe_whose_purpose_is_unknown_stops_everything():
    assert suppression_for("unsubscribe", "purpose", None) == ("unsubscribed", "all")
    assert suppression_for("unsubscribe", "purpose", "fundraising") == ("unsubscribed", "fundraising")
    assert suppression_for("bounce", "soft", "treatment") is None
