"""The feedback parsers: SES events (every shape SES, SNS and Firehose write), DSNs, ARF reports, auto-replies.

Each parser turns any input into events, ignored items or rejected ones, and never raises: the
property tests feed them arbitrary bytes and arbitrary JSON. No event carries an address.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carecast.engagement.feedback import FeedbackEvent, Ignored, Rejected, complaint_detail, message_key_of
from carecast.engagement.mail_feedback import parse_mail
from carecast.engagement.ses_events import parse_ses

BATCH = Path(__file__).parent / "data" / "feedback" / "batch"
KEY = "294d4030625e3d9d1de4b701cc85629e"
SES_ID = "0100013fb89043dc-c7a54e1c-278f-4f5c-856b-afc200133f36-000000"


def _ses(event_type: str, body: dict | None = None, *, notification: bool = False) -> dict:
    record = {
        "notificationType" if notification else "eventType": event_type,
        "mail": {"timestamp": "2026-03-02T14:00:01.512Z", "messageId": SES_ID, "destination": ["ann@example.org"]},
    }
    return record | (body or {})


def _one(items: list) -> FeedbackEvent | Ignored | Rejected:
    [item] = items
    return item


def _ndjson(*records: dict) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


@pytest.mark.parametrize(
    ("record", "kind", "detail"),
    [
        (_ses("Send", {"send": {}}), "send", None),
        (_ses("Delivery", {"delivery": {"timestamp": "2026-03-02T14:00:03Z"}}), "delivery", None),
        (
            _ses("Bounce", {"bounce": {"bounceType": "Permanent", "timestamp": "2026-03-02T14:00:03Z"}}),
            "bounce",
            "hard",
        ),
        (
            _ses("Bounce", {"bounce": {"bounceType": "Transient", "timestamp": "2026-03-02T14:00:03Z"}}),
            "bounce",
            "soft",
        ),
        (
            _ses("Bounce", {"bounce": {"bounceType": "Undetermined", "timestamp": "2026-03-02T14:00:03Z"}}),
            "bounce",
            "undetermined",
        ),
        (_ses("Complaint", {"complaint": {"complaintFeedbackType": "abuse"}}), "complaint", "abuse"),
        (_ses("Complaint", {"complaint": {"timestamp": "2026-03-03T08:00:00Z"}}), "complaint", "unspecified"),
        (_ses("Reject", {"reject": {"reason": "Bad content"}}), "reject", None),
        (_ses("Rendering Failure", {"failure": {"templateName": "t"}}), "reject", "rendering_failure"),
        (_ses("DeliveryDelay", {"deliveryDelay": {"timestamp": "2026-03-02T14:20:00Z"}}), "delay", None),
        (_ses("Open", {"open": {"timestamp": "2026-03-02T18:00:00Z", "ipAddress": "192.0.2.1"}}), "open", None),
        (
            _ses(
                "Click",
                {"click": {"link": "https://example.org/a?email=ann@example.org", "linkTags": {"link": ["book"]}}},
            ),
            "click",
            "book",
        ),
        (_ses("Click", {"click": {"linkTags": {"link": ["https://example.org/?q=ann@example.org"]}}}), "click", None),
        (
            _ses("Subscription", {"subscription": {"newTopicPreferences": {"unsubscribeAll": True}}}),
            "unsubscribe",
            "all",
        ),
        (
            _ses(
                "Subscription",
                {
                    "subscription": {
                        "newTopicPreferences": {"topicSubscriptionStatus": [{"subscriptionStatus": "OptOut"}]}
                    }
                },
            ),
            "unsubscribe",
            "purpose",
        ),
        (_ses("Bounce", {"bounce": {"bounceType": "Permanent"}}, notification=True), "bounce", "hard"),
        (_ses("Delivery", {"delivery": {}}, notification=True), "delivery", None),
    ],
)
def test_every_ses_event_type_maps_to_its_kind_and_detail(record, kind, detail):
    event = _one(list(parse_ses(_ndjson(record))))
    assert isinstance(event, FeedbackEvent)
    assert (event.kind, event.detail, event.source) == (kind, detail, "ses")
    assert event.provider_message_id == SES_ID and event.message_key is None
    assert event.occurred_at.tzinfo == UTC


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_ses("Complaint", {"complaint": {"complaintFeedbackType": "not-spam"}}), "not_a_complaint"),
        (
            _ses(
                "Subscription",
                {
                    "subscription": {
                        "newTopicPreferences": {"topicSubscriptionStatus": [{"subscriptionStatus": "OptIn"}]}
                    }
                },
            ),
            "subscription_opt_in",
        ),
        ({"notificationType": "AmazonSnsSubscriptionSucceeded"}, "sns_control_message"),
    ],
)
def test_well_formed_records_that_are_not_engagement_are_ignored(record, reason):
    assert _one(list(parse_ses(_ndjson(record)))) == Ignored(reason)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_ses("Bounced"), "not_an_ses_record"),
        ({"eventType": "Open", "open": {"timestamp": "2026-03-02T18:00:00Z"}}, "no_message_id"),
        (_ses("Open") | {"mail": {"messageId": "ann@example.org"}}, "no_message_id"),
        (_ses("Open") | {"mail": {"messageId": SES_ID, "timestamp": "yesterday"}}, "bad_timestamp"),
        (_ses("Bounce", {"bounce": {"bounceType": "Permanentish"}}), "unknown_bounce_type"),
        (_ses("Open") | {"eventType": 7}, "unexpected_field_type"),
    ],
)
def test_records_that_are_not_ses_events_are_rejected_with_a_reason(record, reason):
    assert _one(list(parse_ses(_ndjson(record)))) == Rejected(reason)


def test_ndjson_array_pretty_printed_and_concatenated_files_give_the_same_events():
    records = [json.loads(line) for line in (BATCH / "ses_events.ndjson").read_text().splitlines()]
    shapes = [
        _ndjson(*records),
        json.dumps(records).encode(),
        "\n".join(json.dumps(record, indent=2) for record in records).encode(),
        "".join(json.dumps(record, separators=(",", ":")) for record in records).encode(),
    ]
    parsed = [list(parse_ses(shape)) for shape in shapes]
    assert all(items == parsed[0] for items in parsed)
    assert len(parsed[0]) == len(records)


def test_an_sns_wrapped_record_is_the_same_event_as_the_raw_one():
    record = _ses("Bounce", {"bounce": {"bounceType": "Permanent", "feedbackId": "f-1"}})
    envelope = {"Type": "Notification", "MessageId": "5fe9d7a1", "Message": json.dumps(record)}
    raw = _one(list(parse_ses(_ndjson(record))))
    assert _one(list(parse_ses(_ndjson(envelope)))) == raw
    assert _one(list(parse_ses(json.dumps([envelope]).encode()))) == raw
    assert list(parse_ses(_ndjson({"Type": "SubscriptionConfirmation", "Message": "confirm"}))) == [
        Ignored("sns_control_message")
    ]


def test_one_bad_record_does_not_spoil_the_file():
    good = _ses("Open", {"open": {"timestamp": "2026-03-02T18:00:00Z"}})
    data = _ndjson(good) + b'{"eventType": "Open", "mail": \n' + _ndjson(good | {"eventType": ["Open"]}, good)
    items = list(parse_ses(data))
    assert sorted(type(item).__name__ for item in items) == ["FeedbackEvent", "FeedbackEvent", "Rejected", "Rejected"]
    assert {item.reason for item in items if isinstance(item, Rejected)} == {"invalid_json", "unexpected_field_type"}


def test_a_postfix_bounce_is_a_hard_bounce_of_the_enclosed_message():
    event = _one(parse_mail((BATCH / "postfix_hard_bounce.eml").read_bytes()))
    assert (event.kind, event.detail, event.source, event.message_key) == ("bounce", "hard", "dsn", KEY)
    assert event.occurred_at == datetime(2026, 3, 2, 14, 0, 4, tzinfo=UTC)


def test_a_delay_notice_with_headers_only_is_a_delay():
    event = _one(parse_mail((BATCH / "postfix_delayed.eml").read_bytes()))
    assert (event.kind, event.detail, event.message_key) == ("delay", None, "ca19f2a3f1c71afaac11988da25c2112")


def _dsn(*recipient_blocks: str, original: str = f"Message-ID: <{KEY}@riverside-health.example.org>") -> bytes:
    blocks = "\n".join(recipient_blocks)
    return f"""From: MAILER-DAEMON@mx.example.org
Date: Tue, 3 Mar 2026 09:00:00 +0000
Message-ID: <dsn-1@mx.example.org>
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

human text for ann@example.org
--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

{blocks}
--B
Content-Type: text/rfc822-headers

{original}
Subject: private subject

--B--
""".encode()


def test_each_recipient_block_is_one_event_classified_by_action_and_status():
    data = _dsn(
        "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 4.2.2\n",
        "Final-Recipient: rfc822; b@example.org\nAction: failed\n",
        "Final-Recipient: rfc822; c@example.org\nAction: delivered\nStatus: 2.0.0\n",
        "Final-Recipient: rfc822; d@example.org\nAction: exploded\nStatus: 5.0.0\n",
    )
    items = parse_mail(data)
    assert [(item.kind, item.detail) for item in items[:3]] == [
        ("bounce", "soft"),
        ("bounce", "undetermined"),
        ("delivery", None),
    ]
    assert items[3] == Rejected("unknown_dsn_action")
    assert len({item.event_id for item in items[:3]}) == 3
    assert parse_mail(data) == items, "the same report gives the same identities"


def test_a_report_about_a_message_carecast_did_not_send_has_no_message_key():
    block = "Action: failed\nStatus: 5.1.1\n"
    assert _one(parse_mail(_dsn(block, original="Message-ID: <ann.lee@example.org>"))).message_key is None
    assert _one(parse_mail(_dsn(block, original="Subject: no id"))).message_key is None
    assert message_key_of(f"<{KEY}@riverside-health.example.org>") == KEY
    assert message_key_of(f"<{KEY.upper()}@riverside-health.example.org>") is None


def test_a_dsn_without_recipient_blocks_is_rejected():
    assert parse_mail(_dsn("")) == [Rejected("dsn_without_recipient_status")]


@pytest.mark.parametrize("name", ["arf_yahoo_complaint.eml", "arf_microsoft_complaint.eml"])
def test_feedback_loop_reports_are_complaints_about_the_enclosed_message(name):
    event = _one(parse_mail((BATCH / name).read_bytes()))
    assert (event.kind, event.detail, event.source) == ("complaint", "abuse", "arf")
    assert event.message_key is not None and event.occurred_at.date().isoformat() == "2026-03-03"


def _arf(feedback_type: str | None) -> bytes:
    field = f"Feedback-Type: {feedback_type}\n" if feedback_type else ""
    return f"""From: fbl@isp.example.org
Date: Tue, 3 Mar 2026 09:00:00 +0000
Content-Type: multipart/report; report-type=feedback-report; boundary="B"

--B
Content-Type: text/plain

report
--B
Content-Type: message/feedback-report

{field}User-Agent: SomeGenerator/1.0
Version: 1

--B
Content-Type: text/rfc822-headers

Message-ID: <{KEY}@news.riverside-health.example.org>

--B--
""".encode()


def test_arf_feedback_types_decide_whether_it_is_a_complaint():
    assert _one(parse_mail(_arf("fraud"))).detail == "fraud"
    assert _one(parse_mail(_arf("opt-out-of-everything"))).detail == "other"
    assert parse_mail(_arf("not-spam")) == [Ignored("not_a_complaint")]
    assert parse_mail(_arf(None)) == [Rejected("arf_without_feedback_type")]
    assert complaint_detail("Abuse ") == "abuse"


def _reply(header: str, body: str) -> bytes:
    headers = f"From: ann@example.org\nDate: Mon, 2 Mar 2026 14:00:08 +0000\n{header}\nIn-Reply-To: <{KEY}@x>\n"
    return f"{headers}\n{body}\n".encode()


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated",
        "X-Autoreply: yes",
        "X-Autorespond: Out of office",
        "Precedence: auto_reply",
    ],
)
def test_auto_replies_are_ignored(header):
    assert parse_mail(_reply(header, "Away until Monday")) == [Ignored("auto_reply")]


def test_a_persons_reply_and_garbage_are_not_feedback():
    assert parse_mail(_reply("Auto-Submitted: no", "Thanks!")) == [Ignored("not_feedback")]
    assert parse_mail((BATCH / "garbage.json").read_bytes()) == [Rejected("not_an_email")]
    assert parse_mail(b"") == [Rejected("not_an_email")]


def _assert_phi_free(items: list) -> None:
    for item in items:
        assert isinstance(item, FeedbackEvent | Ignored | Rejected)
        if isinstance(item, FeedbackEvent):
            texts = (item.event_id, item.detail, item.message_key, item.provider_message_id)
            assert not any("@" in text or "/" in text for text in texts if text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data):
    _assert_phi_free(list(parse_ses(data)))
    _assert_phi_free(parse_mail(data))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
_SES_KEYS = st.sampled_from(
    "eventType notificationType mail messageId timestamp bounce bounceType complaint complaintFeedbackType click"
    " linkTags link subscription newTopicPreferences unsubscribeAll topicSubscriptionStatus subscriptionStatus"
    " Type Message feedbackId".split()
)
_SES_VALUES = st.sampled_from(["Bounce", "Open", "Subscription", "Permanent", "Notification", "OptOut", SES_ID])
_SES_LIKE = st.recursive(
    st.none() | st.booleans() | _SES_VALUES | st.text(string.printable, max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_SES_KEYS, children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_JSON | _SES_LIKE, max_size=5), st.sampled_from(["\n", "", " "]))
def test_arbitrary_json_never_raises(values, separator):
    data = separator.join(json.dumps(value) for value in values).encode()
    _assert_phi_free(list(parse_ses(data)))
    _assert_phi_free(list(parse_ses(json.dumps(values).encode())))
    envelopes = [{"Type": "Notification", "Message": json.dumps(value)} for value in values]
    _assert_phi_free(list(parse_ses(_ndjson(*envelopes))))
