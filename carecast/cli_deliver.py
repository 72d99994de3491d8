"""``carecast deliver``: send a rendered campaign run, and let an operator settle what is in doubt.

``run`` delivers the outbox outside Dagster (operators re-running a send; the crash tests kill it);
``held`` lists the messages in doubt (message keys only, no patient data); ``resolve`` records the
operator's verdict on them after checking the relay's logs: delivered, failed, or resend (deferred,
so the next run sends them).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime

from carecast.home import CarecastHome


def _as_of(args: argparse.Namespace) -> date:
    return args.as_of or datetime.now(UTC).date()


def _campaign(args: argparse.Namespace):
    from carecast.project import load_project

    project = load_project()
    if args.campaign not in project.campaigns:
        raise SystemExit(f"carecast: no campaign {args.campaign!r} (known: {sorted(project.campaigns)})")
    return project, project.campaigns[args.campaign]


def command_deliver_run(args: argparse.Namespace) -> int:
    from carecast import stages
    from carecast.delivery import open_target
    from carecast.runtime import Runtime

    project, campaign = _campaign(args)
    runtime = Runtime.open(CarecastHome.from_env(args.home), project, as_of=_as_of(args))
    with open_target(
        runtime,
        args.transport,
        host=args.host,
        port=args.port,
        server_hostname=args.server_hostname,
        pinned_cert_path=args.cert or "",
        ses_region=args.ses_region or "",
    ) as target:
        result = stages.deliver_campaign(runtime, campaign, target, args.workers, args.chunk_rows)
    metadata = result.metadata
    print(
        f"{campaign.name} {runtime.send_date}: this run {metadata['this_run']['outcomes']}, "
        f"held in doubt now {metadata['held_in_doubt_now']}; ledger {metadata['ledger_states']}"
    )
    if args.json:
        print(json.dumps({k: metadata[k] for k in ("this_run", "held_in_doubt_now", "ledger_states")}))
    return 0


def command_deliver_held(args: argparse.Namespace) -> int:
    from carecast.ledger import Ledger

    _project, campaign = _campaign(args)
    with Ledger(CarecastHome.from_env(args.home).state_db) as ledger:
        held = ledger.held(campaign.name, _as_of(args).isoformat())
    print(f"{len(held)} message(s) of {campaign.name} on {_as_of(args)} held in doubt")
    for key in held:
        print(key)
    return 0


def command_deliver_resolve(args: argparse.Namespace) -> int:
    from carecast.ledger import Ledger

    _project, campaign = _campaign(args)
    if not args.all and not args.message_keys:
        raise SystemExit("carecast: name the message keys to resolve, or --all")
    with Ledger(CarecastHome.from_env(args.home).state_db) as ledger:
        changed = ledger.resolve(
            campaign.name, _as_of(args).isoformat(), None if args.all else args.message_keys, args.resolution
        )
    print(f"resolved {changed} held message(s) of {campaign.name} as {args.resolution}")
    return 0


def add_deliver_commands(commands: argparse._SubParsersAction) -> None:
    deliver = commands.add_parser("deliver", help="send a rendered campaign run; settle messages held in doubt")
    deliver_commands = deliver.add_subparsers(dest="deliver_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--campaign", required=True)
        parser.add_argument("--home", help="data home (default: $CARECAST_HOME or ./.carecast)")
        parser.add_argument("--as-of", type=date.fromisoformat, default=None, help="send date (default: today)")

    run = deliver_commands.add_parser("run", help="deliver what the ledger has not decided yet")
    common(run)
    run.add_argument("--transport", choices=("embedded_sink", "smtp", "ses"), default="embedded_sink")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=587)
    run.add_argument("--server-hostname", default="localhost", help="name the relay's certificate must carry")
    run.add_argument("--cert", help="the relay's certificate (PEM), pinned (smtp)")
    run.add_argument("--ses-region", help="AWS region (ses)")
    run.add_argument("--workers", type=int, default=None, help="worker processes (default: the stream's)")
    run.add_argument(
        "--chunk-rows", type=int, default=None, help="messages per reserve/commit (the most a crash holds per worker)"
    )
    run.add_argument("--json", action="store_true", help="end with one line of JSON counts")
    run.set_defaults(handler=command_deliver_run)

    held = deliver_commands.add_parser("held", help="list the message keys held in doubt")
    common(held)
    held.set_defaults(handler=command_deliver_held)

    resolve = deliver_commands.add_parser("resolve", help="record what became of held messages")
    common(resolve)
    resolve.add_argument("--as", dest="resolution", choices=("delivered", "failed", "resend"), required=True)
    resolve.add_argument("--all", action="store_true", help="every held message of the run")
    resolve.add_argument("message_keys", nargs="*")
    resolve.set_defaults(handler=command_deliver_resolve)
