"""The engagement loop at scale: N SES events ingested and the campaign report rebuilt, against a naive script.

Setup, untimed: one campaign run of ``N // 3`` messages, delivered through SES (the send ledger holds
each message's SES id), its audience in the lake, and one feedback batch of N real-shaped SES event
records about those messages (deliveries, opens, clicks, bounces of every class, complaints, delays,
SNS-free NDJSON as a Firehose stream writes it).

carecast, timed: ``ingest_event_batch`` (columnar JSON, resolution in SQLite, suppressions in the
same transaction) then the report stage (``report_campaign``: member rows, disclosure control, HTML,
CSV, summary). The naive script, timed on the same batch and a copy of the same ledger: ``json.loads``
per line, one ledger lookup and one INSERT per event, then counts in Python dicts per message.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import time as clock
from collections import defaultdict
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.isolation import peak_mb
from bench.workload import AS_OF, CAMPAIGN, open_runtime
from carecast import stages
from carecast.engagement.ingest import ingest_event_batch
from carecast.ingest.landing import SUCCESS_MARKER
from carecast.ledger import Ledger, Outcome, Planned
from carecast.rendering import message_key

EVENT_WEIGHTS = {"Delivery": 33, "Open": 30, "Click": 12, "Bounce": 4, "Complaint": 1, "DeliveryDelay": 3, "Send": 17}
BOUNCE_TYPES = ("Permanent", "Transient", "Undetermined")
SEND_DATE = AS_OF.isoformat()
SENT_AT = datetime.combine(AS_OF, time(6))


def prepare(home: Path, events: int) -> dict[str, Any]:
    runtime = open_runtime(home)
    campaign = runtime.project.campaigns[CAMPAIGN]
    messages = max(events // 3, 1)
    ids = [f"bench-{i:07d}" for i in range(messages)]
    keys = runtime.pseudonymizer().patient_keys(ids)
    variants = ["A", "B"] * (messages // 2) + ["A"] * (messages % 2)
    audience = runtime.lake.write(
        stages.audience_dataset(campaign), pa.table({"patient_id": ids, "patient_key": keys, "variant": variants})
    )
    message_keys = [message_key(campaign, SEND_DATE, key) for key in keys]
    provider_ids = [f"0100018{i:09x}-5a1b2c3d-4e5f-6789-abcd-ef0123456789-000000" for i in range(messages)]
    with Ledger(runtime.home.state_db) as ledger:
        ledger.record_stage(
            campaign.name,
            SEND_DATE,
            "audience",
            {"segment": messages, "excluded": {}, "holdout": 0, "audience": messages},
        )
        ledger.record_stage(campaign.name, SEND_DATE, "audience_lineage", {"version": audience.version, "read": []})
        planned = [Planned(k, p, v) for k, p, v in zip(message_keys, keys, variants, strict=True)]
        ledger.reserve(campaign.name, campaign.purpose, SEND_DATE, planned)
        ledger.commit(
            Outcome(k, "delivered", 250, provider_message_id=p) for k, p in zip(message_keys, provider_ids, strict=True)
        )
    batch = runtime.home.landing / "feedback" / "bench-0001"
    batch.mkdir(parents=True)
    with open(batch / "events.ndjson", "w", encoding="utf-8") as out:
        random.seed(7)
        kinds = random.choices(list(EVENT_WEIGHTS), list(EVENT_WEIGHTS.values()), k=events)
        for index, kind in enumerate(kinds):
            out.write(
                json.dumps(_ses_record(index, kind, provider_ids[index % messages]), separators=(",", ":")) + "\n"
            )
    (batch / SUCCESS_MARKER).touch()
    return {"events": events, "messages": messages, "batch_bytes": (batch / "events.ndjson").stat().st_size}


def _ses_record(index: int, kind: str, provider_id: str) -> dict[str, Any]:
    address = f"patient{index}@example.org"
    stamp = (SENT_AT + timedelta(milliseconds=index)).isoformat(timespec="milliseconds") + "Z"
    mail = {
        "timestamp": SENT_AT.isoformat(timespec="milliseconds") + "Z",
        "source": "Riverside Health <reminders@riverside-health.example.org>",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/riverside-health.example.org",
        "sendingAccountId": "123456789012",
        "messageId": provider_id,
        "destination": [address],
        "headersTruncated": False,
        "commonHeaders": {
            "from": ["Riverside Health <reminders@riverside-health.example.org>"],
            "to": [address],
            "messageId": provider_id,
            "subject": "Your screening mammogram is due",
        },
        "tags": {"ses:configuration-set": ["carecast"], "ses:source-ip": ["192.0.2.10"]},
    }
    record: dict[str, Any] = {"eventType": kind, "mail": mail}
    if kind == "Send":
        record["send"] = {}
    elif kind == "Delivery":
        record["delivery"] = {
            "timestamp": stamp,
            "processingTimeMillis": 523,
            "recipients": [address],
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "a8-1.smtp-out.amazonses.com",
        }
    elif kind == "Open":
        record["open"] = {"ipAddress": "192.0.2.1", "timestamp": stamp, "userAgent": "Mozilla/5.0 (iPhone)"}
    elif kind == "Click":
        record["click"] = {
            "ipAddress": "192.0.2.1",
            "timestamp": stamp,
            "userAgent": "Mozilla/5.0",
            "link": "https://riverside-health.example.org/e/c/token",
            "linkTags": {"link": ["schedule"]},
        }
    elif kind == "Bounce":
        record["bounce"] = {
            "bounceType": BOUNCE_TYPES[index % 3],
            "bounceSubType": "General",
            "timestamp": stamp,
            "bouncedRecipients": [{"emailAddress": address, "action": "failed", "status": "5.1.1"}],
            "feedbackId": f"0100-b-{index}",
            "reportingMTA": "dsn; a8-1.smtp-out.amazonses.com",
        }
    elif kind == "Complaint":
        record["complaint"] = {
            "complainedRecipients": [{"emailAddress": address}],
            "timestamp": stamp,
            "feedbackId": f"0100-c-{index}",
            "complaintFeedbackType": "abuse",
            "arrivalDate": stamp,
        }
    else:
        record["deliveryDelay"] = {
            "timestamp": stamp,
            "delayType": "TransientCommunicationFailure",
            "delayedRecipients": [{"emailAddress": address, "status": "4.4.1"}],
        }
    return record


def carecast_engagement(home: Path) -> dict[str, Any]:
    runtime = open_runtime(home)
    campaign = runtime.project.campaigns[CAMPAIGN]
    started = clock.perf_counter()
    report = ingest_event_batch(runtime.home, runtime.kms, runtime.home.landing / "feedback" / "bench-0001")
    ingested = clock.perf_counter() - started
    result, _report = stages.report_campaign(runtime, campaign)
    seconds = clock.perf_counter() - started
    return {
        "seconds": seconds,
        "ingest_seconds": round(ingested, 2),
        "report_seconds": round(seconds - ingested, 2),
        "rows": report.items,
        "recorded": report.recorded,
        "suppressions_added": report.counts()["suppressions_added"],
        "reconciled": report.reconciled,
        "peak_mb": round(peak_mb(), 1),
    }


def naive_engagement(home: Path, copy: Path) -> dict[str, Any]:
    """The obvious script, on a copy of the ledger: one lookup and one INSERT per event, counts in dicts."""
    shutil.copy(home / "state.db", copy)
    started = clock.perf_counter()
    connection = sqlite3.connect(copy)
    connection.execute(
        "create table naive_events (event_key text primary key, message_key text, patient_key text, kind text,"
        " detail text, occurred_at text)"
    )
    stored = 0
    with open(home / "landing" / "feedback" / "bench-0001" / "events.ndjson", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            kind, mail = record["eventType"], record["mail"]
            found = connection.execute(
                "select message_key, patient_key from send_ledger where provider_message_id = ?", (mail["messageId"],)
            ).fetchone()
            if found is None:
                continue
            detail = record.get("bounce", {}).get("bounceType")
            body = record.get(kind[0].lower() + kind[1:], {})
            occurred = body.get("timestamp", mail["timestamp"])
            cursor = connection.execute(
                "insert or ignore into naive_events values (?, ?, ?, ?, ?, ?)",
                (f"{mail['messageId']}|{kind}|{occurred}", *found, kind, detail, occurred),
            )
            stored += cursor.rowcount
            if kind == "Complaint" or (kind == "Bounce" and detail == "Permanent"):
                connection.execute(
                    "insert or ignore into suppressions values (?, ?, 'all', 'naive', ?)",
                    (found[1], "complaint" if kind == "Complaint" else "hard_bounce", occurred),
                )
    connection.commit()
    flags: dict[str, set[str]] = defaultdict(set)
    for message, kind in connection.execute("select message_key, kind from naive_events"):
        flags[message].add(kind)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for message, variant, state in connection.execute("select message_key, variant, state from send_ledger"):
        for kind in ("Open", "Click", "Complaint", state):
            if kind == state or kind in flags[message]:
                counts[(variant, kind)] += 1
    connection.close()
    return {
        "seconds": clock.perf_counter() - started,
        "rows": stored,
        "peak_mb": round(peak_mb(), 1),
        "cells": len(counts),
    }
