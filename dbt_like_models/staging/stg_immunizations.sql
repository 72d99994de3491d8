-- One row per vaccine dose given to a patient, from the EHR export.
with

source as (

    select * from {{ source('synthea', 'immunizations') }}

),

renamed as (

    select
        PATIENT as patient_id,
        ENCOUNTER as encounter_id,
        CODE as vaccine_code,
        DESCRIPTION as vaccine_description,
        DATE as administered_at,

    from source

)

select * from renamed
