"""From a segment to the people a campaign may reach, counting every exclusion.

Each segment member is judged by the rules below, in order, and excluded for the first one that
applies; the funnel records how many fell at each step: consent and authorization for the purpose,
email opt-in and a valid address, suppressions (hard bounce, complaint, unsubscribe), deceased and
minors (unless the campaign's purpose allows minors), then what the send ledger knows: suppressions
recorded by earlier sends and the frequency caps. Consent is evaluated as of the send time: a record
signed later, expired or revoked by then does not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from carecast.campaigns import Campaign
from carecast.crypto.pseudonym import Pseudonymizer
from carecast.ledger import Ledger
from carecast.policy import FrequencyCap
from carecast.sql.engine import confined_duckdb

PROFILE_COLUMNS = ("patient_id", "is_deceased", "is_minor", "has_valid_email", "is_email_opted_in")
CONSENT_COLUMNS = (
    "patient_id",
    "purpose",
    "channel",
    "consent_id",
    "document_id",
    "signed_at",
    "expires_at",
    "revoked_at",
    "expiry_event_at",
)
SUPPRESSION_COLUMNS = ("patient_id", "reason", "purpose", "suppressed_at")
HOLDOUT = "holdout"

_CONSENT_RULES = {
    # Marketing needs a written authorization for email, signed, unexpired and unrevoked at send time.
    # It expires on its date or on its expiry event, once the event is known to have happened.
    "marketing": """
        when c.consent_id is null or c.signed_at > $as_of then 'no_authorization'
        when c.revoked_at <= $as_of then 'authorization_revoked'
        when c.expires_at <= $as_of or c.expiry_event_at <= $as_of then 'authorization_expired'
    """,
    # Fundraising is allowed unless the patient opted out of it.
    "fundraising": "when c.revoked_at <= $as_of then 'fundraising_opt_out'",
    # Treatment and operations need no authorization, but a patient's request to stop email for
    # that purpose is honored.
    "treatment": "when c.revoked_at <= $as_of then 'consent_revoked'",
    "operations": "when c.revoked_at <= $as_of then 'consent_revoked'",
}

_AUDIENCE_SQL = """
with
judged as (
    select
        s.patient_id,
        c.consent_id,
        c.document_id as consent_document_id,
        case
            when p.patient_id is null then 'unknown_patient'
            {consent_rule}
            when not p.is_email_opted_in then 'email_opt_out'
            when not p.has_valid_email then 'no_valid_email'
            when exists (select 1 from suppressions x where x.patient_id = s.patient_id
                         and x.reason = 'hard_bounce' and x.suppressed_at <= $as_of) then 'hard_bounce'
            when exists (select 1 from suppressions x where x.patient_id = s.patient_id
                         and x.reason = 'complaint' and x.suppressed_at <= $as_of) then 'complaint'
            when exists (select 1 from suppressions x where x.patient_id = s.patient_id
                         and x.reason = 'unsubscribed' and x.purpose in ($purpose, 'all')
                         and x.suppressed_at <= $as_of) then 'unsubscribed'
            when p.is_deceased then 'deceased'
            when p.is_minor and not $allow_minors then 'minor'
        end as exclusion
    from (select distinct patient_id from segment) s
    left join profile p on p.patient_id = s.patient_id
    left join consents c on c.patient_id = s.patient_id and c.purpose = $purpose and c.channel = 'email'
)
select * from judged
"""


_RECHECK_SQL = """
select
    m.patient_key,
    case
        when p.patient_id is null then 'unknown_patient'
        {consent_rule}
        when not p.is_email_opted_in then 'email_opt_out'
    end as exclusion
from members m
left join profile p on p.patient_id = m.patient_id
left join consents c on c.patient_id = m.patient_id and c.purpose = $purpose and c.channel = 'email'
"""


def recheck_consent(
    campaign: Campaign, members: pa.Table, profile: pa.Table, consents: pa.Table, as_of: datetime
) -> dict[str, str]:
    """Patient key -> reason, for audience members (patient_id, patient_key) whose consent or email
    opt-in no longer holds at ``as_of``: the same rules as the audience, judged again at send time."""
    sql = _RECHECK_SQL.format(consent_rule=_CONSENT_RULES[campaign.purpose])
    tables = {"members": members, "profile": profile, "consents": consents}
    with confined_duckdb(tables) as connection:
        judged = connection.sql(
            f"select * from ({sql}) where exclusion is not null", params={"as_of": as_of, "purpose": campaign.purpose}
        ).to_arrow_table()
    return dict(zip(judged.column("patient_key").to_pylist(), judged.column("exclusion").to_pylist(), strict=True))


def ledger_exclusions(ledger: Ledger, campaign: Campaign, caps: list[FrequencyCap], send_date: date) -> dict[str, str]:
    """Patient key -> reason: suppressions recorded by earlier sends, then every frequency cap reached.

    A cap of N messages in D days lets a patient have at most N messages of the purpose in any D
    consecutive days, this one included: those with N already in the D - 1 days before (or on) the
    send date are left out.
    """
    excluded = dict(ledger.suppressions_for(campaign.purpose))
    for cap in caps:
        first = (send_date - timedelta(days=cap.days - 1)).isoformat()
        sent = ledger.messages_per_patient(
            campaign.purpose, first, send_date.isoformat(), excluding=(campaign.name, send_date.isoformat())
        )
        for patient_key, count in sent.items():
            if count >= cap.messages:
                excluded.setdefault(patient_key, "frequency_cap")
    return excluded


@dataclass(frozen=True)
class Audience:
    members: pa.Table
    """patient_id, patient_key, variant (``holdout`` for the control group), consent ids."""
    segment_size: int
    excluded: dict[str, int]
    exclusions: pa.Table
    """patient_key, reason: every segment member left out, so an audit can say why (no PHI)."""

    @property
    def holdout(self) -> int:
        return sum(1 for variant in self.members.column("variant").to_pylist() if variant == HOLDOUT)

    @property
    def size(self) -> int:
        """Members who will be sent a message (the holdout is kept, not sent)."""
        return self.members.num_rows - self.holdout

    def funnel(self) -> dict[str, object]:
        return {"segment": self.segment_size, "excluded": self.excluded, "holdout": self.holdout, "audience": self.size}


def build_audience(
    campaign: Campaign,
    segment: pa.Table,
    profile: pa.Table,
    consents: pa.Table,
    suppressions: pa.Table,
    as_of: datetime,
    pseudonymizer: Pseudonymizer,
    ledger_exclusions: dict[str, str] | None = None,
) -> Audience:
    """``ledger_exclusions`` maps patient keys to a reason the send ledger gives (earlier hard bounces,
    frequency caps); they apply after the rules above."""
    sql = _AUDIENCE_SQL.format(consent_rule=_CONSENT_RULES[campaign.purpose])
    tables = {"segment": segment, "profile": profile, "consents": consents, "suppressions": suppressions}
    parameters = {"as_of": as_of, "purpose": campaign.purpose, "allow_minors": campaign.allow_minors}
    with confined_duckdb(tables) as connection:
        judged = connection.sql(sql, params=parameters).to_arrow_table()
    reasons = pc.value_counts(judged.column("exclusion").drop_null()).to_pylist()
    excluded = {item["values"]: item["counts"] for item in reasons}
    left_out = judged.filter(judged.column("exclusion").is_valid())
    exclusion_keys = pseudonymizer.patient_keys(left_out.column("patient_id").to_pylist())
    exclusion_reasons = left_out.column("exclusion").to_pylist()
    kept = judged.filter(judged.column("exclusion").is_null()).drop_columns(["exclusion"])
    kept = kept.sort_by("patient_id")
    patient_keys = pseudonymizer.patient_keys(kept.column("patient_id").to_pylist())
    if ledger_exclusions:
        reasons = [ledger_exclusions.get(key) for key in patient_keys]
        for key, reason in zip(patient_keys, reasons, strict=True):
            if reason:
                excluded[reason] = excluded.get(reason, 0) + 1
                exclusion_keys.append(key)
                exclusion_reasons.append(reason)
        keep_mask = pa.array([reason is None for reason in reasons])
        kept = kept.filter(keep_mask)
        patient_keys = [key for key, reason in zip(patient_keys, reasons, strict=True) if reason is None]
    variants = assign_variants(campaign, patient_keys)
    members = kept.append_column("patient_key", pa.array(patient_keys, pa.string())).append_column(
        "variant", pa.array(variants, pa.string())
    )
    return Audience(
        members=members.select(["patient_id", "patient_key", "variant", "consent_id", "consent_document_id"]),
        segment_size=judged.num_rows,
        excluded=dict(sorted(excluded.items())),
        exclusions=pa.table(
            {"patient_key": pa.array(exclusion_keys, pa.string()), "reason": pa.array(exclusion_reasons, pa.string())}
        ),
    )


def to_be_sent(members: pa.Table) -> pa.Table:
    """The audience members who get a message: all but the holdout."""
    return members.filter(pc.not_equal(members.column("variant"), HOLDOUT))


def _draw(label: str) -> str:
    """A uniform draw in [0, 1) from SHA-256(campaign, label, patient key): the first 8 bytes of the
    digest as a big-endian integer over 2**64, computed in DuckDB for the whole audience at once."""
    return (
        f"(('0x' || left(sha256($campaign || chr(31) || '{label}' || chr(31) || patient_key), 16))::UBIGINT)::DOUBLE"
        " / 18446744073709551616.0"
    )


def assign_variants(campaign: Campaign, patient_keys: list[str]) -> list[str]:
    """Holdout first (its own draw), then a variant by cumulative weight (another draw).

    Stable across re-runs: a function of the campaign name and the patient's keyed hash only.
    """
    names = list(campaign.variants)
    parameters: dict[str, object] = {"campaign": campaign.name, "holdout": campaign.holdout}
    cumulative, branches = 0.0, []
    for index, name in enumerate(names[:-1]):
        cumulative += campaign.variants[name]
        parameters[f"below_{index}"], parameters[f"variant_{index}"] = cumulative, name
        branches.append(f"when {_draw('variant')} < $below_{index} then $variant_{index}")
    parameters["last"] = names[-1]
    variant = f"case {' '.join(branches)} else $last end" if branches else "$last"
    sql = (
        f"select case when $holdout > 0 and {_draw('holdout')} < $holdout then '{HOLDOUT}' else {variant} end"
        " as variant from audience"
    )
    members = pa.table({"patient_key": pa.array(patient_keys, pa.string())})
    with confined_duckdb({"audience": members}) as connection:
        return connection.sql(sql, params=parameters).to_arrow_table().column("variant").to_pylist()
