-- One row per observation (lab result, vital sign, survey answer) recorded for a patient, from the EHR export.
with

source as (

    select * from {{ source('synthea', 'observations') }}

),

renamed as (

    select
        PATIENT as patient_id,
        ENCOUNTER as encounter_id,
        lower(CATEGORY) as observation_category,
        CODE as observation_code,
        DESCRIPTION as observation_description,
        VALUE as value_text,
        -- NULL for text answers ("Never smoker") and for anything else that is not a number
        try_cast(VALUE as double) as value_number,
        UNITS as units,
        DATE as observed_at,

    from source

)

select * from renamed
