"""``carecast events ingest``: provider feedback (SES events, DSNs, abuse reports) into the engagement store.

Without a folder it ingests every complete batch under ``landing/feedback/`` not ingested yet; with
one, that batch (complete: ``_SUCCESS`` or a manifest), wherever it is. It prints counts only: per
batch the items parsed and where each ended, events recorded per kind and suppressions added.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from carecast.home import CarecastHome


def _counts(values: dict[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in values.items()) or "none"


def command_events_ingest(args: argparse.Namespace) -> int:
    from carecast.crypto.kms import LocalKms
    from carecast.engagement.ingest import ingest_event_batch, pending_event_batches

    home = CarecastHome.from_env(args.home).ensure()
    batches = [args.batch] if args.batch else pending_event_batches(home)
    if not batches:
        print("nothing to ingest: every complete feedback batch is ingested")
        return 0
    kms = LocalKms(home.keys)
    for batch_dir in batches:
        report = ingest_event_batch(home, kms, batch_dir)
        if report.already_ingested:
            print(f"{report.batch}: already ingested, nothing changed")
            continue
        counts = report.counts()
        print(
            f"{report.batch}: files {report.files:,}, items {report.items:,}: recorded {report.recorded:,}, "
            f"duplicates {report.duplicates:,}, unmatched {report.unmatched:,}, "
            f"ignored {sum(report.ignored.values()):,}, rejected {sum(report.rejected.values()):,}"
        )
        print(f"  recorded by kind: {_counts(counts['kinds'])}")
        print(f"  ignored: {_counts(counts['ignored'])}; rejected: {_counts(counts['rejected'])}")
        print(f"  suppressions added: {_counts(counts['suppressions_added'])}")
    return 0


def add_events_commands(commands: argparse._SubParsersAction) -> None:
    events = commands.add_parser("events", help="engagement feedback: ingest SES events, DSNs and abuse reports")
    event_commands = events.add_subparsers(dest="events_command", required=True)
    ingest = event_commands.add_parser(
        "ingest", help="record feedback batches and the suppressions they call for (counts only)"
    )
    ingest.add_argument(
        "batch", nargs="?", type=Path, help="one complete batch folder (default: every pending landing/feedback batch)"
    )
    ingest.add_argument("--home", help="data home (default: $CARECAST_HOME or ./.carecast)")
    ingest.set_defaults(handler=command_events_ingest)
