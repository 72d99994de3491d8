-- One row per consent or authorization record, as signed (history kept; see mart_consent_latest).
with

source as (

    select * from {{ source('consents', 'consents') }}

),

renamed as (

    select
        consent_id,
        patient_id,
        lower(purpose) as purpose,
        lower(channel) as channel,
        signed_at,
        expires_at,
        revoked_at,
        coalesce(remuneration_disclosed, false) as is_remuneration_disclosed,
        document_id,
        expiry_event,
        expiry_event_at,

    from source

)

select * from renamed
