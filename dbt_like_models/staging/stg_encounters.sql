-- One row per encounter (visit) from the EHR export, renamed and typed.
with

source as (

    select * from {{ source('synthea', 'encounters') }}

),

renamed as (

    select
        Id as encounter_id,
        PATIENT as patient_id,
        PAYER as payer_id,
        lower(ENCOUNTERCLASS) as encounter_class,
        CODE as encounter_code,
        DESCRIPTION as encounter_description,
        START as started_at,
        STOP as stopped_at,
        REASONCODE as reason_code,

    from source

)

select * from renamed
