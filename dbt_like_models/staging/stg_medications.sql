-- One row per medication order for a patient (start and, once ended, stop), from the EHR export.
with

source as (

    select * from {{ source('synthea', 'medications') }}

),

renamed as (

    select
        PATIENT as patient_id,
        ENCOUNTER as encounter_id,
        CODE as medication_code,
        DESCRIPTION as medication_description,
        START as started_at,
        STOP as stopped_at,
        REASONCODE as reason_code,

    from source

)

select * from renamed
