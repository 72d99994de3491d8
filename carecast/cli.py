"""The ``carecast`` command: generate data, run the whole pipeline, print counts (never values)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
