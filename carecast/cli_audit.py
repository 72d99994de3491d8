"""``carecast audit``: a compliance officer's answers, logged.

``patient <id>`` lists every message the patient got (campaign, purpose, state, authorization,
data snapshot, segment and template hashes, engagement) and every run that left them out, and why;
``campaign <name>`` gives each run of a campaign in counts. The patient id is never printed back: the
answer names the patient by pseudonym. Every question is appended to the hash-chained audit log.
"""

from __future__ import annotations

import argparse
import json

from carecast.home import CarecastHome


def _runtime(args: argparse.Namespace):
    from carecast.project import load_project
    from carecast.runtime import Runtime

    return Runtime.open(CarecastHome.from_env(args.home), load_project())


def command_audit_patient(args: argparse.Namespace) -> int:
    from carecast.audit import audit_patient

    answer = audit_patient(_runtime(args), args.patient_id, args.requested_by, args.reason)
    if args.json:
        print(json.dumps(answer.as_dict(), sort_keys=True))
        return 0
    print(f"patient {answer.patient_key} (pseudonym): {len(answer.messages)} message(s)")
    for message in answer.messages:
        print(
            f"- {message.send_date} {message.campaign} ({message.purpose}), variant {message.variant}: {message.state}"
        )
        consent = message.authorization
        if consent is None:
            print("    authorization: none needed or none recorded")
        else:
            revoked = f", revoked {consent.revoked_at}" if consent.revoked_at else ""
            print(
                f"    authorization {consent.consent_id} (document {consent.document_id}): signed {consent.signed_at}, "
                f"expires {consent.expires_at or 'never'}{revoked}"
            )
        print(f"    data: audience {message.snapshot.audience}, outbox {message.snapshot.outbox}")
        print(f"    read: {', '.join(message.snapshot.read)}")
        for name, digest in sorted(message.snapshot.code.items()):
            print(f"    {name} sha256 {digest[:16]}")
        for event in message.events:
            print(f"    event {event['occurred_at']} {event['kind']}{' ' + event['detail'] if event['detail'] else ''}")
    for run in answer.left_out:
        print(f"- {run['send_date']} {run['campaign']}: not sent, left out of the audience ({run['reason']})")
    for event in answer.other_events:
        print(f"- event {event['occurred_at']} {event['kind']} ({event['campaign']}), tied to no message")
    for suppression in answer.suppressions:
        print(
            f"suppressed since {suppression['created_at']}: {suppression['reason']} "
            f"for {suppression['purpose']} (from {suppression['source']})"
        )
    return 0


def command_audit_campaign(args: argparse.Namespace) -> int:
    from carecast.audit import audit_campaign

    try:
        answer = audit_campaign(_runtime(args), args.campaign, args.requested_by, args.reason)
    except KeyError as unknown:
        raise SystemExit(f"carecast: {unknown.args[0]}") from None
    if args.json:
        print(json.dumps(answer, sort_keys=True))
        return 0
    print(f"campaign {answer['campaign']} ({answer['purpose']}): {len(answer['runs'])} run(s)")
    for send_date, run in answer["runs"].items():
        funnel = run["funnel"]
        print(
            f"- {send_date}: segment {funnel['segment']}, audience {funnel['audience']}, excluded {funnel['excluded']}"
        )
        print(f"    messages {run['states']}; engagement {run['engagement']}")
        print(f"    data: audience {run['snapshot']['audience']}, outbox {run['snapshot']['outbox']}")
        for name, digest in sorted(run["snapshot"]["code"].items()):
            print(f"    {name} sha256 {digest[:16]}")
    return 0


def add_audit_commands(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser("audit", help="who received what, under which authorization (logged)")
    questions = audit.add_subparsers(dest="question", required=True)
    patient = questions.add_parser("patient", help="every message of one patient, and every run that left them out")
    patient.add_argument("patient_id", help="the patient's id in the source data (never printed back)")
    patient.set_defaults(handler=command_audit_patient)
    campaign = questions.add_parser("campaign", help="every run of one campaign, in counts")
    campaign.add_argument("campaign")
    campaign.set_defaults(handler=command_audit_campaign)
    for question in (patient, campaign):
        question.add_argument("--home", help="data home (default: $CARECAST_HOME or ./.carecast)")
        question.add_argument("--requested-by", help="who asks (default: the login name); kept in the audit log")
        question.add_argument("--reason", default="", help="why, for the audit log (e.g. a request number)")
        question.add_argument("--json", action="store_true", help="one JSON object instead of text")
