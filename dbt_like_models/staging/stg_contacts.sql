-- One row per patient known to the CRM, with the email channel's opt-in.
with

source as (

    select * from {{ source('crm', 'contacts') }}

),

renamed as (

    select
        patient_id,
        lower(trim(email)) as email,
        coalesce(lower(preferred_language), 'en') as preferred_language,
        email_opt_in as is_email_opted_in,
        updated_at,

    from source

)

select * from renamed
