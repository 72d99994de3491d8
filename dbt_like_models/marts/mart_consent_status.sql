-- One row per patient, purpose and channel: whether the latest consent record holds at the end of the run date.
-- Judged in the audience's order: not yet signed, then revoked, then expired.
with

consents as (

    select * from {{ ref('mart_consent_latest') }}

),

judged as (

    select
        patient_id,
        purpose,
        channel,
        consent_id,
        signed_at,
        expires_at,
        revoked_at,
        expiry_event,
        expiry_event_at,
        case
            when signed_at >= {{ var('as_of') }} + interval 1 day then 'not_yet_signed'
            when revoked_at < {{ var('as_of') }} + interval 1 day then 'revoked'
            when expires_at < {{ var('as_of') }} + interval 1 day then 'expired'
            when expiry_event_at < {{ var('as_of') }} + interval 1 day then 'expired'
            else 'active'
        end as status,

    from consents

),

flagged as (

    select
        *,
        status = 'active' as is_active_as_of,

    from judged

)

select * from flagged
