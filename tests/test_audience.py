from collections import Counter
from datetime import datetime

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carecast.audience import HOLDOUT, assign_variants, build_audience
from carecast.campaigns import Campaign
from carecast.crypto.envelope import DataKey
from carecast.crypto.pseudonym import Pseudonymizer
from tests.reference import assign_variant

SEND = datetime(2026, 11, 23, 12, 0)
EARLIER = datetime(2025, 1, 1)
LATER = datetime(2027, 1, 1)
PSEUDONYMIZER = Pseudonymizer(DataKey(master_key_id="test", context="test", wrapped=b"", _plaintext=b"s" * 32))


def _campaign(purpose: str, **extra) -> Campaign:
    stream = "marketing" if purpose in ("marketing", "fundraising") else "transactional"
    return Campaign.model_validate(
        {
            "name": "test_campaign",
            "segment": "s",
            "template": "t",
            "purpose": purpose,
            "stream": stream,
            **extra,
        }
    )


def _profile(**overrides: dict) -> pa.Table:
    rows = []
    for patient_id, flags in overrides.items():
        rows.append(
            {
                "patient_id": patient_id,
                "is_deceased": False,
                "is_minor": False,
                "has_valid_email": True,
                "is_email_opted_in": True,
                **flags,
            }
        )
    return pa.Table.from_pylist(rows)


CONSENT_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("purpose", pa.string()),
        ("channel", pa.string()),
        ("consent_id", pa.string()),
        ("document_id", pa.string()),
        ("signed_at", pa.timestamp("us")),
        ("expires_at", pa.timestamp("us")),
        ("revoked_at", pa.timestamp("us")),
        ("expiry_event_at", pa.timestamp("us")),
    ]
)
SUPPRESSION_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("reason", pa.string()),
        ("purpose", pa.string()),
        ("suppressed_at", pa.timestamp("us")),
    ]
)


def _consent(
    patient_id: str, purpose: str, signed=EARLIER, expires=None, revoked=None, channel="email", event_at=None
) -> dict:
    return {
        "patient_id": patient_id,
        "purpose": purpose,
        "channel": channel,
        "consent_id": f"c-{patient_id}",
        "document_id": f"DOC-{patient_id}",
        "signed_at": signed,
        "expires_at": expires,
        "revoked_at": revoked,
        "expiry_event_at": event_at,
    }


def _run(campaign: Campaign, profile: pa.Table, consents: list[dict], suppressions: list[dict] = ()):
    segment = pa.table({"patient_id": profile.column("patient_id")})
    return build_audience(
        campaign,
        segment,
        profile,
        pa.Table.from_pylist(consents, schema=CONSENT_SCHEMA),
        pa.Table.from_pylist(list(suppressions), schema=SUPPRESSION_SCHEMA),
        as_of=SEND,
        pseudonymizer=PSEUDONYMIZER,
    )


def test_each_treatment_exclusion_is_counted_once() -> None:
    profile = _profile(
        ok={},
        dead={"is_deceased": True},
        child={"is_minor": True},
        no_email={"has_valid_email": False},
        opted_out={"is_email_opted_in": False},
        revoked={},
        bounced={},
        complained={},
        unsubscribed_here={},
        unsubscribed_marketing={},
    )
    consents = [_consent("revoked", "treatment", revoked=datetime(2026, 6, 1)), _consent("ok", "treatment")]
    suppressions = [
        {"patient_id": "bounced", "reason": "hard_bounce", "purpose": "all", "suppressed_at": EARLIER},
        {"patient_id": "complained", "reason": "complaint", "purpose": "all", "suppressed_at": EARLIER},
        {"patient_id": "unsubscribed_here", "reason": "unsubscribed", "purpose": "treatment", "suppressed_at": EARLIER},
        {
            "patient_id": "unsubscribed_marketing",
            "reason": "unsubscribed",
            "purpose": "marketing",
            "suppressed_at": EARLIER,
        },
    ]
    audience = _run(_campaign("treatment"), profile, consents, suppressions)
    assert audience.excluded == {
        "complaint": 1,
        "consent_revoked": 1,
        "deceased": 1,
        "email_opt_out": 1,
        "hard_bounce": 1,
        "minor": 1,
        "no_valid_email": 1,
        "unsubscribed": 1,
    }
    assert sorted(audience.members.column("patient_id").to_pylist()) == ["ok", "unsubscribed_marketing"]
    assert audience.segment_size == 10 and audience.size == 2


def test_marketing_needs_a_valid_authorization_at_send_time() -> None:
    profile = _profile(
        valid={},
        none={},
        expired={},
        revoked={},
        future={},
        sms_only={},
        revoked_later={},
        event_ended={},
        event_later={},
    )
    consents = [
        _consent("valid", "marketing", expires=LATER),
        # an authorization that ends on an event (no date): expired once the event is known to have happened
        _consent("event_ended", "marketing", event_at=datetime(2026, 11, 20)),
        _consent("event_later", "marketing", event_at=LATER),
        _consent("expired", "marketing", expires=datetime(2026, 11, 1)),
        _consent("revoked", "marketing", revoked=datetime(2026, 11, 22)),
        _consent("future", "marketing", signed=datetime(2026, 12, 1)),
        _consent("sms_only", "marketing", channel="sms"),
        _consent("revoked_later", "marketing", revoked=LATER),
        _consent("none", "treatment"),
    ]
    audience = _run(_campaign("marketing"), profile, consents)
    assert audience.excluded == {
        "authorization_expired": 2,
        "authorization_revoked": 1,
        "no_authorization": 3,
    }
    assert sorted(audience.members.column("patient_id").to_pylist()) == ["event_later", "revoked_later", "valid"]
    assert (
        dict(zip(*audience.members.select(["patient_id", "consent_document_id"]).to_pydict().values(), strict=True))[
            "valid"
        ]
        == "DOC-valid"
    )


def test_fundraising_honors_the_opt_out_and_minors_can_be_allowed() -> None:
    profile = _profile(opted_out={}, silent={}, child={"is_minor": True})
    consents = [_consent("opted_out", "fundraising", revoked=datetime(2026, 1, 1))]
    assert _run(_campaign("fundraising"), profile, consents).excluded == {"fundraising_opt_out": 1, "minor": 1}
    allowed = _run(_campaign("treatment", allow_minors=True), _profile(child={"is_minor": True}), [])
    assert allowed.size == 1


def test_holdout_and_variants_are_stable_and_near_their_weights() -> None:
    campaign = _campaign("treatment", variants={"A": 0.5, "B": 0.5}, holdout=0.1)
    keys = PSEUDONYMIZER.patient_keys([f"p{i}" for i in range(4000)])
    first = assign_variants(campaign, keys)
    assert first == assign_variants(campaign, keys)
    shares = {v: first.count(v) / len(first) for v in ("A", "B", HOLDOUT)}
    assert shares[HOLDOUT] == pytest.approx(0.1, abs=0.02)
    assert shares["A"] == pytest.approx(0.45, abs=0.03)


@settings(max_examples=40, deadline=None)
@given(st.sets(st.text(min_size=1, max_size=8), min_size=1, max_size=40), st.sampled_from(["treatment", "marketing"]))
def test_funnel_always_adds_up(patient_ids: set[str], purpose: str) -> None:
    ids = sorted(patient_ids)
    profile = pa.Table.from_pylist(
        [
            {
                "patient_id": pid,
                "is_deceased": len(pid) % 5 == 0,
                "is_minor": len(pid) % 4 == 0,
                "has_valid_email": len(pid) % 3 != 0,
                "is_email_opted_in": hash(pid) % 2 == 0,
            }
            for pid in ids
        ]
    )
    consents = [_consent(pid, purpose, revoked=SEND if i % 2 else None) for i, pid in enumerate(ids)]
    audience = _run(_campaign(purpose), profile, consents)
    assert audience.members.num_rows + sum(audience.excluded.values()) == audience.segment_size == len(ids)
    # every left-out patient is named (by pseudonym) with the reason the funnel counts them under
    left_out = audience.exclusions.to_pylist()
    assert Counter(row["reason"] for row in left_out) == Counter(audience.excluded)
    assert {row["patient_key"] for row in left_out}.isdisjoint(audience.members.column("patient_key").to_pylist())
    assert {row["patient_key"] for row in left_out} | set(audience.members.column("patient_key").to_pylist()) == set(
        PSEUDONYMIZER.patient_keys(ids)
    )


def test_frequency_cap_counts_every_campaign_of_the_purpose_in_a_rolling_window(tmp_path) -> None:
    from datetime import date

    from carecast.audience import ledger_exclusions
    from carecast.ledger import Ledger, Outcome, Planned
    from carecast.policy import FrequencyCap

    campaign = _campaign("marketing")
    with Ledger(tmp_path / "state.db") as ledger:
        # a message 6 days before counts for a 7-day window, 7 days before does not
        ledger.reserve("spring_news", "marketing", "2026-11-17", [Planned("m1", "recent", "A")])
        ledger.reserve("spring_news", "marketing", "2026-11-16", [Planned("m2", "old", "A")])
        # another purpose, and a bounced message, do not count
        ledger.reserve("reminder", "treatment", "2026-11-20", [Planned("m3", "other_purpose", "A")])
        ledger.reserve("spring_news", "marketing", "2026-11-20", [Planned("m4", "bounced", "A")])
        ledger.commit([Outcome("m4", "bounced", 550, "hard_bounce")])
        # nor one that failed for good, or was excluded just before sending
        ledger.reserve("spring_news", "marketing", "2026-11-21", [Planned("m6", "failed", "A")])
        ledger.commit([Outcome("m6", "failed", 451, "retries_exhausted")])
        ledger.record_unsent(
            "spring_news", "marketing", "2026-11-21", [(Planned("m7", "excluded", "A"), Outcome("m7", "excluded"))]
        )
        # this campaign's own earlier attempt today is the run being re-planned: it does not count
        ledger.reserve(campaign.name, "marketing", "2026-11-23", [Planned("m5", "rerun", "A")])
        excluded = ledger_exclusions(ledger, campaign, [FrequencyCap(messages=1, days=7)], date(2026, 11, 23))
        assert excluded == {"recent": "frequency_cap"}
        looser = ledger_exclusions(ledger, campaign, [FrequencyCap(messages=2, days=7)], date(2026, 11, 23))
        assert looser == {}
        ledger.suppress(["recent"], "hard_bounce", "all", "smtp")
        assert ledger_exclusions(ledger, campaign, [FrequencyCap(messages=1, days=7)], date(2026, 11, 23)) == {
            "recent": "hard_bounce"
        }


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=12),
    weights=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=4),
    holdout=st.sampled_from([0.0, 0.05, 0.1, 0.5]),
    campaign_name=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
)
def test_vectorized_assignment_agrees_with_the_rule_patient_by_patient(
    names: list[str], weights: list[int], holdout: float, campaign_name: str
) -> None:
    # earlier runs assigned arms one patient at a time: a re-run must put every patient in the same arm
    variants = {chr(65 + i): w / sum(weights) for i, w in enumerate(weights)}
    campaign = _campaign("treatment", variants=variants, holdout=holdout).model_copy(update={"name": campaign_name})
    keys = PSEUDONYMIZER.patient_keys(names)
    assert assign_variants(campaign, keys) == [assign_variant(campaign, key) for key in keys]


@given(st.lists(st.text(max_size=20), max_size=30))
def test_batched_patient_keys_equal_the_one_by_one_hmac(ids: list[str]) -> None:
    assert PSEUDONYMIZER.patient_keys(ids) == [PSEUDONYMIZER.patient_key(i) for i in ids]
