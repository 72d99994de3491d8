"""The ``carecast`` command: generate data, run the whole pipeline, print counts (never values)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from carecast.cli_audit import add_audit_commands
from carecast.cli_deliver import add_deliver_commands
from carecast.cli_events import add_events_commands
from carecast.cli_serve import add_serve_command
from carecast.home import CarecastHome


def _today() -> date:
    return datetime.now(UTC).date()


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="data home (default: $CARECAST_HOME or ./.carecast)")
    parser.add_argument(
        "--as-of", type=date.fromisoformat, default=None, help="run date, YYYY-MM-DD (default: today, UTC)"
    )
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")


def _generate(home: CarecastHome, patients: int, seed: int, as_of: date, synthea: Path | None) -> dict[str, int]:
    """Write a landing batch, sealed under the home's KMS so no extract sits on disk in the clear."""
    from carecast.crypto.kms import LocalKms
    from carecast.synth import augment_synthea, generate_landing

    home.ensure()
    kms = LocalKms(home.keys)
    if synthea:
        return augment_synthea(synthea, home.landing, seed=seed, as_of=as_of, kms=kms)
    return generate_landing(home.landing, patients, seed=seed, as_of=as_of, kms=kms)


def command_generate(args: argparse.Namespace) -> int:
    home = CarecastHome.from_env(args.home)
    counts = _generate(home, args.patients, args.seed, args.as_of or _today(), args.synthea)
    for name, rows in counts.items():
        print(f"{name:28s} {rows:>12,d} rows")
    print(f"landing batch written under {home.landing}")
    return 0


def command_demo(args: argparse.Namespace) -> int:
    from carecast.pipeline_run import materialize_everything

    home = CarecastHome.from_env(args.home)
    as_of = args.as_of or _today()
    generated = _generate(home, args.patients, args.seed, as_of, args.synthea)
    summary = materialize_everything(home, as_of, quiet=args.json)
    summary["generated_rows"] = sum(generated.values())
    print(f"carecast demo: {summary['patients']:,} patients, {summary['quarantined']:,} rows quarantined")
    for campaign, counts in summary["campaigns"].items():
        print(
            f"  {campaign}: segment {counts['segment']:,} -> audience {counts['audience']:,} "
            f"(excluded {sum(counts['excluded'].values()):,}: "
            + ", ".join(f"{reason} {n:,}" for reason, n in counts["excluded"].items())
            + f"), rendered {counts['rendered']:,}, delivered {counts['delivered']:,}, bounced {counts['bounced']:,}"
        )
        print(f"  report: {counts['report']}")
    print("  stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds"].items()))
    if args.json:
        print(json.dumps(summary, sort_keys=False))
    return 0


def command_ingest(args: argparse.Namespace) -> int:
    """Land a batch folder (when given) and apply every pending batch, through the Dagster assets."""
    from carecast.crypto.kms import LocalKms
    from carecast.ingest.journal import IngestJournal
    from carecast.ingest.landing import land_batch, pending_files
    from carecast.pipeline_run import materialize_assets
    from carecast.project import load_project

    home = CarecastHome.from_env(args.home).ensure()
    project = load_project()
    if args.batch:
        landed = land_batch(args.batch, home.landing, args.source, LocalKms(home.keys), project.registry)
        print(f"landed {landed.relative_to(home.root)}")
    with IngestJournal(home.state_db) as journal:
        pending = pending_files(
            home.landing, project.registry, journal.applied(), sources=args.source and [args.source]
        )
    if not pending:
        print("nothing to ingest: every complete batch is applied")
        return 0
    metadata = materialize_assets(home, args.as_of or _today(), sorted({f.dataset for f in pending}))
    for dataset, values in sorted(metadata.items()):
        print(
            f"{dataset:28s} files {len(values['files_applied']):>3d}  read {values['rows_read']:>10,d}  "
            f"loaded {values['rows_loaded']:>10,d}  quarantined {values['rows_quarantined']:>8,d}  "
            f"now {values['rows']:>10,d} rows ({values['dataset_version']})"
        )
    return 0


def _maintenance(args: argparse.Namespace):
    from carecast.crypto.kms import LocalKms
    from carecast.lake import Lake
    from carecast.project import load_project

    home = CarecastHome.from_env(args.home).ensure()
    project = load_project()
    kms = LocalKms(home.keys)
    return home, project, kms, Lake(home.lake, kms, project.registry)


def _actor(args: argparse.Namespace) -> str:
    return args.by or os.environ.get("USER") or getpass.getuser()


def command_keys_list(args: argparse.Namespace) -> int:
    _home, _project, kms, _lake = _maintenance(args)
    for key in kms.versions():
        retired = f" retired {key.retired_at}" if key.retired_at else ""
        print(f"{key.key_id:28s} {key.state:10s} created {key.created_at}{retired}")
    return 0


def command_keys_dkim(args: argparse.Namespace) -> int:
    """Each stream's DKIM keys (made on first use, sealed under the KMS) as the DNS TXT records to publish."""
    from carecast.mail.dkim import dns_txt_records, ensure_dkim_keys

    home, project, kms, _lake = _maintenance(args)
    for name, stream in sorted(project.streams.items()):
        settings = stream.dkim
        keys = ensure_dkim_keys(kms, home.keys, settings.domain, settings.rsa_selector, settings.ed25519_selector)
        for record, value in dns_txt_records(keys).items():
            print(f'{record} TXT "{value}"  ; stream {name}')
    return 0


def command_keys_rotate(args: argparse.Namespace) -> int:
    from carecast.key_maintenance import ROTATING_CLASSES, rotate_keys

    home, _project, kms, lake = _maintenance(args)
    classes = tuple(args.key_class) if args.key_class else ROTATING_CLASSES
    report = rotate_keys(kms, lake, home, classes)
    print("new current versions: " + ", ".join(report.rotated))
    print(f"lake files re-wrapped: {report.lake_files_rewrapped:,}")
    print(f"lake files left as they were (shredded by retention): {report.lake_files_unreadable:,}")
    print(f"sealed landing files re-sealed: {report.sealed_files_resealed:,}")
    print(f"pseudonym key re-wrapped: {report.pseudonym_rewrapped}")
    return 0


def command_keys_retire(args: argparse.Namespace) -> int:
    from carecast.key_maintenance import retire_keys

    _home, project, kms, _lake = _maintenance(args)
    grace = timedelta(days=project.retention.retired_key_grace_days if args.grace_days is None else args.grace_days)
    destroyed = retire_keys(kms, grace, datetime.now(UTC), _actor(args))
    print("destroyed: " + (", ".join(destroyed) or "none"))
    return 0


def command_keys_verify(args: argparse.Namespace) -> int:
    from carecast.crypto.destruction import certificates

    home, _project, kms, _lake = _maintenance(args)
    status = 0
    for name, chain in (
        ("KMS access log", kms.access_log.chain),
        ("destruction certificates", certificates(home.keys)),
    ):
        broken = chain.verify()
        count = len(chain.entries())
        print(f"{name}: {count:,} entries, " + ("intact" if broken is None else f"BROKEN at entry {broken}"))
        status |= broken is not None
    return status


def command_retention_apply(args: argparse.Namespace) -> int:
    from carecast.retention import apply_retention

    _home, project, kms, lake = _maintenance(args)
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    report = apply_retention(kms, lake, project.retention, now.astimezone(UTC), _actor(args))
    print("new epochs: " + (", ".join(report.epochs_started) or "none"))
    print("shredded (keys destroyed): " + (", ".join(report.destroyed) or "none"))
    print(f"audit log entries past retention pruned: {report.audit_entries_pruned:,}")
    return 0


def _segment_name(project, given: str) -> str:
    name = Path(given).stem
    if name not in project.segments:
        raise SystemExit(f"carecast: no segment {name!r} in {project.root / 'segments'}")
    return name


def command_segment_preview(args: argparse.Namespace) -> int:
    from carecast.preview import preview_segment
    from carecast.project import load_project
    from carecast.runtime import Runtime

    project = load_project()
    name = _segment_name(project, args.segment)
    campaign = project.campaigns[args.campaign] if args.campaign else None
    if campaign is not None and campaign.purpose not in project.segments[name].header.purposes:
        raise SystemExit(f"carecast: campaign {campaign.name!r} has a purpose segment {name!r} does not declare")
    home = CarecastHome.from_env(args.home)
    runtime = Runtime.open(home, project, as_of=args.as_of or _today())
    for line in preview_segment(runtime, name, campaign):
        print(line)
    return 0


def command_segment_test(args: argparse.Namespace) -> int:
    from carecast.project import load_project
    from carecast.segment_tests import run_segment_fixtures

    project = load_project()
    names = [_segment_name(project, given) for given in args.segments] or sorted(project.segments)
    failed = 0
    for name in names:
        for result in run_segment_fixtures(project, name):
            print(f"{'PASS' if result.passed else 'FAIL'}  {name}: {result.case}")
            if not result.passed:
                failed += 1
                missing = sorted(set(result.expected) - set(result.got))
                unexpected = sorted(set(result.got) - set(result.expected))
                print(f"      fixture ids missing {missing}, unexpected {unexpected}")
    print(f"{'all passed' if not failed else f'{failed} failed'}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carecast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write a synthetic landing batch (or extend a Synthea export)")
    _add_common(generate)
    generate.add_argument("--patients", type=int, default=10_000)
    generate.add_argument(
        "--synthea", type=Path, help="an existing Synthea CSV export to add CRM/consent/event extracts to"
    )
    generate.set_defaults(handler=command_generate)

    demo = commands.add_parser("demo", help="generate data, then materialize every asset and print the counts")
    _add_common(demo)
    demo.add_argument("--patients", type=int, default=10_000)
    demo.add_argument("--synthea", type=Path, help="use this Synthea export instead of generated patients")
    demo.add_argument("--json", action="store_true", help="end with one line of JSON: the counts per stage")
    demo.set_defaults(handler=command_demo)

    ingest = commands.add_parser("ingest", help="apply pending landing batches (after landing DIR, when given)")
    ingest.add_argument("batch", nargs="?", type=Path, help="a batch folder to land first (sealed under the KMS)")
    ingest.add_argument("--source", help="synthea, fhir, crm, consents or events (required with a folder)")
    ingest.add_argument("--home", help="data home (default: $CARECAST_HOME or ./.carecast)")
    ingest.add_argument("--as-of", type=date.fromisoformat, default=None, help="run date (default: today, UTC)")
    ingest.set_defaults(handler=command_ingest)

    keys = commands.add_parser("keys", help="master keys: list, rotate, retire, verify the logs")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    for name, handler, description in (
        ("list", command_keys_list, "every master key version and its state"),
        ("rotate", command_keys_rotate, "new master key versions, and every artifact re-wrapped onto them"),
        ("retire", command_keys_retire, "destroy versions rotated out longer than the grace period"),
        ("verify", command_keys_verify, "check the hash chains of the access log and destruction certificates"),
        ("dkim", command_keys_dkim, "each stream's DKIM public keys as DNS TXT records (keys made on first use)"),
    ):
        sub = key_commands.add_parser(name, help=description)
        sub.add_argument("--home", help="data home (default: $CARECAST_HOME or ./.carecast)")
        sub.add_argument("--by", help="who is acting (default: $USER)")
        sub.set_defaults(handler=handler)
        if name == "rotate":
            sub.add_argument("--class", dest="key_class", action="append", help="only this class (repeatable)")
        if name == "retire":
            sub.add_argument("--grace-days", type=int, help="default: retention.yaml retired_key_grace_days")

    segment = commands.add_parser("segment", help="preview a segment's size and funnel, run its fixture tests")
    segment_commands = segment.add_subparsers(dest="segment_command", required=True)
    preview = segment_commands.add_parser("preview", help="size, funnel and columns read; counts only, <11 hidden")
    preview.add_argument("segment", help="segments/<name>.sql or the segment's name")
    preview.add_argument("--campaign", help="also show the funnel for this campaign")
    preview.add_argument("--home", help="data home (default: $CARECAST_HOME or ./.carecast)")
    preview.add_argument("--as-of", type=date.fromisoformat, default=None, help="run date (default: today, UTC)")
    preview.set_defaults(handler=command_segment_preview)
    test = segment_commands.add_parser("test", help="run the segments' YAML fixture tests (all, or those named)")
    test.add_argument("segments", nargs="*", help="segment files or names (default: every segment)")
    test.set_defaults(handler=command_segment_test)

    add_audit_commands(commands)
    add_deliver_commands(commands)
    add_serve_command(commands)
    add_events_commands(commands)

    retention = commands.add_parser("retention", help="crypto-shred what retention says has expired")
    retention_commands = retention.add_subparsers(dest="retention_command", required=True)
    apply = retention_commands.add_parser(
        "apply", help="start due key epochs, destroy expired ones, prune the audit log"
    )
    apply.add_argument("--home", help="data home (default: $CARECAST_HOME or ./.carecast)")
    apply.add_argument("--by", help="who is acting (default: $USER)")
    apply.add_argument("--now", help="judge expiry as of this ISO time (default: now)")
    apply.set_defaults(handler=command_retention_apply)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
