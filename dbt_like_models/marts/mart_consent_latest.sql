-- One row per patient, purpose and channel: the most recent consent record.
-- row_number, not arg_max: arg_max skips NULLs, and a NULL expiry on the newest record must win.
with

consents as (

    select * from {{ ref('stg_consents') }}

),

latest as (

    select
        patient_id,
        purpose,
        channel,
        consent_id,
        document_id,
        signed_at,
        expires_at,
        revoked_at,
        expiry_event,
        expiry_event_at,
        is_remuneration_disclosed,

    from consents
    qualify row_number() over (
        partition by patient_id, purpose, channel
        order by signed_at desc, consent_id desc
    ) = 1

)

select * from latest
