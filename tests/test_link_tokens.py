"""Link tokens: opaque (nothing readable, not even the pseudonym), authenticated, expiring, rotatable."""

from __future__ import annotations

import base64
import json
import math
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carecast.crypto.access_log import access_context
from carecast.crypto.kms import LocalKms
from carecast.link_tokens import (
    KINDS,
    LINK_TOKEN_FILE,
    MAX_TTL,
    ExpiredToken,
    ForgedToken,
    InvalidToken,
    LinkTokens,
    prune_link_token_keys,
    rewrap_link_token_keys,
    rotate_link_token_key,
)

PATIENT = "3f9a0c2be47d1856a0b3c9e2f4d17a58"
NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

patient_keys = st.binary(min_size=16, max_size=16).map(bytes.hex)
names = st.text(min_size=1, max_size=80).filter(lambda s: len(s.encode("utf-8")) <= 255)
moments = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)).map(
    lambda moment: moment.replace(microsecond=0)
)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> LinkTokens:
    keys = tmp_path_factory.mktemp("home") / "keys"
    return LinkTokens.load_or_create(LocalKms(keys), keys)


def _issue(tokens: LinkTokens, **overrides) -> str:
    claims = {"patient_key": PATIENT, "campaign": "flu-2025", "purpose": "treatment", "kind": "open", "now": NOW}
    return tokens.issue(**{**claims, **overrides})


@settings(max_examples=100, deadline=None)
@given(
    patient=patient_keys,
    campaign=names,
    purpose=names,
    kind=st.sampled_from(KINDS),
    link=names,
    days=st.integers(min_value=30, max_value=MAX_TTL.days),
    now=moments,
)
def test_round_trip(tokens: LinkTokens, patient, campaign, purpose, kind, link, days, now) -> None:
    link = link if kind == "click" else None
    token = tokens.issue(patient, campaign, purpose, kind, link, ttl=timedelta(days=days), now=now)
    claims = tokens.verify(token, now=now)
    assert (claims.patient_key, claims.campaign, claims.purpose, claims.kind, claims.link) == (
        patient,
        campaign,
        purpose,
        kind,
        link,
    )
    assert (claims.issued_at, claims.expires_at) == (now, now + timedelta(days=days))
    assert claims.key_version == tokens.current_version


def _base64_cores(data: bytes) -> list[str]:
    """The base64 (standard and URL-safe) of ``data`` at each of the three byte alignments, without the
    edge characters that depend on neighbouring bytes."""
    cores = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data + b"\0\0").decode("ascii")
        core = encoded[(4 * shift + 2) // 3 : 4 * (shift + len(data)) // 3]
        cores += [core, core.replace("+", "-").replace("/", "_")]
    return [core for core in cores if len(core) >= 8]


@settings(max_examples=100, deadline=None)
@given(
    patient=patient_keys, campaign=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=10, max_size=40)
)
def test_tokens_reveal_neither_the_patient_key_nor_the_campaign(tokens: LinkTokens, patient, campaign) -> None:
    token = tokens.issue(patient, campaign, "treatment", "click", "book", now=NOW)
    assert patient not in token.lower()
    assert campaign not in token and campaign.encode().hex() not in token.lower()
    for core in _base64_cores(bytes.fromhex(patient)) + _base64_cores(campaign.encode()):
        assert core not in token
    # version, SIV tag, patient key, kind and times, then the three length-prefixed strings
    assert len(token) == math.ceil(4 * (1 + 16 + 16 + 9 + 1 + len(campaign) + 10 + 5) / 3)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_changed_character_is_forged(tokens: LinkTokens, data: st.DataObject) -> None:
    token = _issue(tokens, kind="click", link=data.draw(names))
    index = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(st.sampled_from(ALPHABET).filter(lambda c: c != token[index]))
    altered = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(ForgedToken) as raised:
        tokens.verify(altered, now=NOW)
    assert altered not in str(raised.value) and token[:12] not in str(raised.value)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],
        lambda t: t[:20],
        lambda t: t + "A",
        lambda t: t + "=",
        lambda t: t.replace("-", "+").replace("_", "/") + "==",
        lambda t: t[:10] + " " + t[10:],
        lambda t: "",
    ],
)
def test_truncated_extended_or_non_canonical_tokens_are_forged(tokens: LinkTokens, mangle) -> None:
    token = _issue(tokens)
    with pytest.raises(ForgedToken):
        tokens.verify(mangle(token), now=NOW)


def test_expiry_is_enforced_and_expired_claims_stay_available(tokens: LinkTokens) -> None:
    token = _issue(tokens, kind="unsubscribe", ttl=timedelta(days=45))
    assert tokens.verify(token, now=NOW + timedelta(days=45) - timedelta(seconds=1)).kind == "unsubscribe"
    with pytest.raises(ExpiredToken) as raised:
        tokens.verify(token, now=NOW + timedelta(days=45))
    assert isinstance(raised.value, InvalidToken)
    assert raised.value.claims.patient_key == PATIENT  # an unsubscribe can still be honoured
    assert token not in str(raised.value) and PATIENT not in str(raised.value)


def test_unsubscribe_tokens_live_at_least_30_days(tokens: LinkTokens) -> None:
    with pytest.raises(ValueError, match="30 days"):
        _issue(tokens, kind="unsubscribe", ttl=timedelta(days=29))
    with pytest.raises(ValueError, match="30 days"):
        tokens.issue_many([PATIENT], "flu-2025", "treatment", "unsubscribe", ttl=timedelta(days=7), now=NOW)
    assert tokens.verify(_issue(tokens, kind="unsubscribe", ttl=timedelta(days=30)), now=NOW)
    assert tokens.verify(_issue(tokens, kind="open", ttl=timedelta(days=2)), now=NOW)


@pytest.mark.parametrize(
    "overrides",
    [
        {"patient_key": PATIENT.upper()},
        {"patient_key": PATIENT[:-1]},
        {"patient_key": "patient-123"},
        {"kind": "click"},
        {"kind": "open", "link": "book"},
        {"kind": "bounce"},
        {"campaign": ""},
        {"campaign": "x" * 256},
        {"ttl": timedelta(0)},
        {"ttl": MAX_TTL + timedelta(days=1)},
        {"now": datetime(2025, 3, 4)},
    ],
)
def test_bad_claims_are_refused(tokens: LinkTokens, overrides: dict) -> None:
    with pytest.raises(ValueError):
        _issue(tokens, **overrides)


def test_issue_many_matches_issue_and_validates_every_key(tokens: LinkTokens) -> None:
    keys = [f"{i:032x}" for i in range(50)]
    many = tokens.issue_many(keys, "flu-2025", "treatment", "click", "book", now=NOW)
    assert many == [tokens.issue(key, "flu-2025", "treatment", "click", "book", now=NOW) for key in keys]
    assert [tokens.verify(token, now=NOW).patient_key for token in many] == keys
    assert tokens.issue_many([], "flu-2025", "treatment", "open", now=NOW) == []
    for bad in ([PATIENT, PATIENT.upper()], [PATIENT, PATIENT[:30]], [PATIENT[:16], PATIENT[16:] * 2]):
        with pytest.raises(ValueError):
            tokens.issue_many(bad, "flu-2025", "treatment", "open", now=NOW)


def test_another_homes_key_cannot_verify(tokens: LinkTokens, tmp_path: Path) -> None:
    other = LinkTokens.load_or_create(LocalKms(tmp_path / "keys"), tmp_path / "keys")
    assert other.current_version == tokens.current_version == 1
    with pytest.raises(ForgedToken):
        other.verify(_issue(tokens), now=NOW)


def test_rotation_keeps_old_tokens_valid_and_the_newest_key_issues(kms: LocalKms) -> None:
    keys_dir = kms.keys_dir
    first = LinkTokens.load_or_create(kms, keys_dir)
    old = _issue(first)
    assert rotate_link_token_key(kms, keys_dir) == 2
    rotated = LinkTokens.load_or_create(kms, keys_dir)
    assert rotated.versions == [1, 2] and rotated.current_version == 2
    new = _issue(rotated)
    assert (rotated.verify(old, now=NOW).key_version, rotated.verify(new, now=NOW).key_version) == (1, 2)
    with pytest.raises(ForgedToken):
        first.verify(new, now=NOW)  # a process that loaded before the rotation knows only v1

    assert prune_link_token_keys(keys_dir, now=NOW + timedelta(days=1)) == []
    assert prune_link_token_keys(keys_dir, now=datetime.now(UTC) + MAX_TTL + timedelta(days=1)) == [1]
    pruned = LinkTokens.load_or_create(kms, keys_dir)
    assert pruned.versions == [2]
    with pytest.raises(ForgedToken):
        pruned.verify(old, now=NOW)
    assert pruned.verify(new, now=NOW).key_version == 2


def test_master_key_rotation_rewraps_so_tokens_survive_destroying_the_old_version(kms: LocalKms) -> None:
    keys_dir = kms.keys_dir
    token = _issue(LinkTokens.load_or_create(kms, keys_dir))
    kms.rotate("link")
    assert rewrap_link_token_keys(kms, keys_dir)
    kms.destroy("link", 1)
    assert LinkTokens.load_or_create(LocalKms(keys_dir), keys_dir).verify(token, now=NOW).patient_key == PATIENT


def test_key_file_is_private_wrapped_and_use_is_logged_as_class_link(kms: LocalKms) -> None:
    with access_context(run_id="run-7", asset="outbox", purpose="treatment"):
        tokens = LinkTokens.load_or_create(kms, kms.keys_dir)
        LinkTokens.load_or_create(kms, kms.keys_dir)
    path = kms.keys_dir / LINK_TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [entry] = json.loads(path.read_text())["keys"]
    assert entry["key_id"] == "local/link" and entry["version"] == 1
    log = [(e["op"], e["class"], e["key_id"], e["run_id"], e["purpose"]) for e in kms.access_log.entries()]
    assert log == [
        ("wrap", "link", "local/link/v1", "run-7", "treatment"),
        ("unwrap", "link", "local/link/v1", "run-7", "treatment"),
        ("unwrap", "link", "local/link/v1", "run-7", "treatment"),
    ]
    assert kms.access_log.verify() is None
    assert tokens.verify(_issue(tokens), now=NOW).campaign == "flu-2025"
