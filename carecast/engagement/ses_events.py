"""Amazon SES sending events as ``FeedbackEvent``\\ s: event publishing records and feedback notifications.

Accepted shapes, in any mix within a file:

* event publishing records (``eventType``: Send, Delivery, Bounce, Complaint, Reject, Rendering
  Failure, DeliveryDelay, Open, Click, Subscription) and the older notifications (``notificationType``:
  Bounce, Complaint, Delivery);
* each raw, or wrapped in an SNS envelope (``"Type": "Notification"`` with the record as the JSON
  string ``Message``); SNS subscription confirmations are ignored;
* one per line (NDJSON, what SES writes through Firehose), a JSON array, pretty-printed objects, or
  objects concatenated with no separator at all.

Only these fields are read (``_SCHEMA``): the event type, ``mail.messageId`` (the id ``SendEmail``
returned, which the send ledger keeps), the event's own timestamp (else ``mail.timestamp``), the SES
``feedbackId`` of a bounce or complaint, the bounce type, the complaint's feedback type, a click's
``link`` tag (its declared name, from ``ses:tags="link:<name>"``) and a subscription's new
preferences. Addresses, headers, subjects, URLs, user agents and IPs are never read into Python.

Speed: a file of plain records one per line is read column-wise by PyArrow's JSON reader with that
schema (about four times faster than ``json.loads`` per line, and the fields not asked for are never
materialized); any other shape, and any file the columnar reader refuses, is read record by record
and conformed to the same schema, so both ways end in the same table and the same normalization.
A record that is not valid JSON, not an object, or has a field of the wrong JSON type is rejected on
its own; the rest of the file still counts.

Identity (for idempotency): SES's message id, the event type, the event's timestamp as SES wrote it
and the ``feedbackId`` when there is one. A record seen raw in one file and SNS-wrapped in another
is the same event. Messages carecast sends have one recipient, so a record is one event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from carecast.engagement.feedback import (
    FeedbackEvent,
    Ignored,
    Kind,
    Parsed,
    Rejected,
    as_utc,
    complaint_detail,
    event_id,
    safe_name,
)

_TEXT = pa.string()
_SCHEMA = pa.schema(
    [
        ("Type", _TEXT),
        ("Message", _TEXT),
        ("eventType", _TEXT),
        ("notificationType", _TEXT),
        ("mail", pa.struct([("messageId", _TEXT), ("timestamp", _TEXT)])),
        ("bounce", pa.struct([("bounceType", _TEXT), ("timestamp", _TEXT), ("feedbackId", _TEXT)])),
        ("complaint", pa.struct([("complaintFeedbackType", _TEXT), ("timestamp", _TEXT), ("feedbackId", _TEXT)])),
        ("delivery", pa.struct([("timestamp", _TEXT)])),
        ("deliveryDelay", pa.struct([("timestamp", _TEXT)])),
        ("open", pa.struct([("timestamp", _TEXT)])),
        ("click", pa.struct([("timestamp", _TEXT), ("linkTags", pa.struct([("link", pa.list_(_TEXT))]))])),
        (
            "subscription",
            pa.struct(
                [
                    ("timestamp", _TEXT),
                    (
                        "newTopicPreferences",
                        pa.struct(
                            [
                                ("unsubscribeAll", pa.bool_()),
                                ("topicSubscriptionStatus", pa.list_(pa.struct([("subscriptionStatus", _TEXT)]))),
                            ]
                        ),
                    ),
                ]
            ),
        ),
    ]
)
_RECORD = pa.struct(list(_SCHEMA))
_PARSE_OPTIONS = pa_json.ParseOptions(explicit_schema=_SCHEMA, unexpected_field_behavior="ignore")
_EVENT_TIMESTAMPS = (
    "bounce.timestamp",
    "complaint.timestamp",
    "delivery.timestamp",
    "deliveryDelay.timestamp",
    "open.timestamp",
    "click.timestamp",
    "subscription.timestamp",
    "mail.timestamp",
)
"""Each record carries the object of its own type: its timestamp is the event's, the send time otherwise."""
_ROWS_PER_SLICE = 65_536

_KINDS_BY_TYPE: dict[str, Kind] = {
    "Send": "send",
    "Delivery": "delivery",
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Reject": "reject",
    "Rendering Failure": "reject",
    "RenderingFailure": "reject",
    "DeliveryDelay": "delay",
    "Open": "open",
    "Click": "click",
    "Subscription": "unsubscribe",
}
_BOUNCE_CLASSES = {"Permanent": "hard", "Transient": "soft", "Undetermined": "undetermined"}
_SNS_CONTROL = {"SubscriptionConfirmation", "UnsubscribeConfirmation", "AmazonSnsSubscriptionSucceeded"}
_STARTS_WITH_OBJECT = re.compile(rb"\s*\{")
_PROVIDER_ID = r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$"


class _Mismatch(ValueError):
    """A JSON value whose type is not the one the schema declares."""


def parse_ses(data: bytes) -> Iterator[Parsed]:
    """Every record of one SES event file, as an event, an ignored item or a rejected one."""
    table = _read_columnar(data)
    if table is None:
        table, outcomes = _read_record_by_record(data)
        yield from outcomes
    wrapped = pc.fill_null(pc.is_valid(table["Type"]), False)
    if pc.any(wrapped).as_py():
        unwrapped, outcomes = _conformed_table(
            _unwrap(envelope) for envelope in table.filter(wrapped).select(["Type", "Message"]).to_pylist()
        )
        yield from outcomes
        table = pa.concat_tables([table.filter(pc.invert(wrapped)), unwrapped])
    yield from _normalize(table)


def _read_columnar(data: bytes) -> pa.Table | None:
    """The file as one table when it is records one per line (or concatenated), else None.

    Only a file that starts with an object is given to PyArrow: its reader (26.0) crashes the process
    on one whose first value is ``null``."""
    if not _STARTS_WITH_OBJECT.match(data):
        return None
    try:
        table = pa_json.read_json(pa.BufferReader(data), parse_options=_PARSE_OPTIONS)
        table.validate(full=True)  # the reader passes invalid UTF-8 through; Python could not decode it later
    except pa.ArrowException:
        return None
    return table


def _read_record_by_record(data: bytes) -> tuple[pa.Table, list[Parsed]]:
    # Undecodable bytes become U+FFFD: every field read is then checked (ids and timestamps by their
    # shape, types by name), so a damaged record is rejected on its own and the others still count.
    text = data.decode("utf-8-sig", errors="replace")
    return _conformed_table(_unwrap(value) for value in _json_values(text))


def _json_values(text: str) -> Iterator[object]:
    """Top-level JSON values one after another (lines, concatenated, pretty-printed); an array gives its
    items. A value that does not decode gives a ``Rejected`` and reading resumes at the next line."""
    decoder = json.JSONDecoder()
    position, end = 0, len(text)
    while True:
        while position < end and text[position].isspace():
            position += 1
        if position >= end:
            return
        try:
            value, position = decoder.raw_decode(text, position)
        except (ValueError, RecursionError):
            yield Rejected("invalid_json")
            newline = text.find("\n", position)
            position = end if newline < 0 else newline + 1
            continue
        if isinstance(value, list):
            yield from value
        else:
            yield value


def _unwrap(value: object) -> object:
    """The SES record inside an SNS envelope, an ``Ignored`` for SNS's own messages, else the value."""
    if not isinstance(value, dict) or value.get("Type") is None:
        return value
    envelope_type, message = value.get("Type"), value.get("Message")
    if isinstance(envelope_type, str) and envelope_type in _SNS_CONTROL:
        return Ignored("sns_control_message")
    if envelope_type != "Notification" or not isinstance(message, str):
        return Rejected("not_an_ses_record")
    try:
        return json.loads(message)
    except (ValueError, RecursionError):
        return Rejected("invalid_json")


def _conformed_table(values) -> tuple[pa.Table, list[Parsed]]:
    """Records conformed to ``_SCHEMA`` (as one table), and the outcomes of the values that were not."""
    records, outcomes = [], []
    for value in values:
        if isinstance(value, Ignored | Rejected):
            outcomes.append(value)
        elif not isinstance(value, dict):
            outcomes.append(Rejected("not_an_object"))
        else:
            try:
                records.append(_conform(value, _RECORD))
            except _Mismatch:
                outcomes.append(Rejected("unexpected_field_type"))
    return pa.Table.from_pylist(records, schema=_SCHEMA), outcomes


def _conform(value: object, declared: pa.DataType) -> object:
    """``value`` reduced to the declared fields, as PyArrow's reader would give them; raises ``_Mismatch``
    where a field has another JSON type than declared."""
    if value is None:
        return None
    if pa.types.is_struct(declared):
        if not isinstance(value, dict):
            raise _Mismatch
        return {field.name: _conform(value.get(field.name), field.type) for field in declared}
    if pa.types.is_list(declared):
        if not isinstance(value, list):
            raise _Mismatch
        return [_conform(item, declared.value_type) for item in value]
    expected = bool if pa.types.is_boolean(declared) else str
    if not isinstance(value, expected):
        raise _Mismatch
    return value


def _normalize(table: pa.Table) -> Iterator[Parsed]:
    """The table's records as events, a slice at a time (only the columns needed become Python values)."""
    flat = table
    while any(pa.types.is_struct(column.type) for column in flat.columns):
        flat = flat.flatten()
    columns = pa.table(
        {
            "type": pc.coalesce(flat["eventType"], flat["notificationType"]),
            "message_id": _provider_ids(flat["mail.messageId"]),
            "timestamp": pc.coalesce(*(flat[name] for name in _EVENT_TIMESTAMPS)),
            "feedback_id": pc.coalesce(flat["bounce.feedbackId"], flat["complaint.feedbackId"]),
            "bounce_type": flat["bounce.bounceType"],
            "feedback_type": flat["complaint.complaintFeedbackType"],
            "links": flat["click.linkTags.link"],
            "unsubscribe_all": flat["subscription.newTopicPreferences.unsubscribeAll"],
            "topics": flat["subscription.newTopicPreferences.topicSubscriptionStatus"],
        }
    )
    for start in range(0, columns.num_rows, _ROWS_PER_SLICE):
        piece = columns.slice(start, _ROWS_PER_SLICE)
        for row in zip(*(column.to_pylist() for column in piece.columns), strict=True):
            yield _event(*row)


def _provider_ids(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """The values shaped like a provider's opaque message id (letters, digits, ``.``, ``_``, ``-``); null
    for anything else, an address included."""
    return pc.if_else(pc.match_substring_regex(values, _PROVIDER_ID), values, None)


def _event(
    event_type: str | None,
    message_id: str | None,
    timestamp: str | None,
    feedback_id: str | None,
    bounce_type: str | None,
    feedback_type: str | None,
    links: list[str | None] | None,
    unsubscribe_all: bool | None,
    topics: list[dict] | None,
) -> Parsed:
    if event_type in _SNS_CONTROL:
        return Ignored("sns_control_message")
    kind = _KINDS_BY_TYPE.get(event_type or "")
    if kind is None:
        return Rejected("not_an_ses_record")
    if message_id is None:
        return Rejected("no_message_id")
    try:
        occurred = as_utc(datetime.fromisoformat(timestamp or ""))
    except (ValueError, OverflowError):
        return Rejected("bad_timestamp")
    detail: str | None = None
    if kind == "bounce":
        detail = _BOUNCE_CLASSES.get(bounce_type or "")
        if detail is None:
            return Rejected("unknown_bounce_type")
    elif kind == "complaint":
        detail = complaint_detail(feedback_type)
        if detail is None:
            return Ignored("not_a_complaint")
    elif kind == "unsubscribe":
        detail = _unsubscribe_scope(unsubscribe_all, topics)
        if detail is None:
            return Ignored("subscription_opt_in")
    elif kind == "click":
        detail = safe_name(links[0]) if links else None
    elif kind == "reject" and event_type != "Reject":
        detail = "rendering_failure"
    identity = event_id("ses", message_id, event_type, timestamp, feedback_id or "")
    return FeedbackEvent(identity, kind, occurred, "ses", detail, provider_message_id=message_id)


def _unsubscribe_scope(unsubscribe_all: bool | None, topics: list[dict] | None) -> str | None:
    """``all`` when the contact left every topic, ``purpose`` when they left one (the message's purpose
    is the topic carecast sends under), None when the change opts in."""
    if unsubscribe_all:
        return "all"
    statuses = (str((topic or {}).get("subscriptionStatus") or "").lower() for topic in topics or ())
    if any(status in ("optout", "opt_out") for status in statuses):
        return "purpose"
    return None
