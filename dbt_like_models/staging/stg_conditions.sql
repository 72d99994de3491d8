-- One row per condition recorded for a patient (onset and, once resolved, end date), from the EHR export.
with

source as (

    select * from {{ source('synthea', 'conditions') }}

),

renamed as (

    select
        PATIENT as patient_id,
        ENCOUNTER as encounter_id,
        CODE as condition_code,
        DESCRIPTION as condition_description,
        START as started_on,
        STOP as stopped_on,

    from source

)

select * from renamed
