-- One row per procedure performed, from the EHR export.
with

source as (

    select * from {{ source('synthea', 'procedures') }}

),

renamed as (

    select
        PATIENT as patient_id,
        ENCOUNTER as encounter_id,
        CODE as procedure_code,
        DESCRIPTION as procedure_description,
        START as performed_at,

    from source

)

select * from renamed
