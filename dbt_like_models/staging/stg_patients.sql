-- One row per patient from the EHR's Synthea-shaped export, renamed and typed.
with

source as (

    select * from {{ source('synthea', 'patients') }}

),

renamed as (

    select
        Id as patient_id,
        FIRST as first_name,
        LAST as last_name,
        BIRTHDATE as birth_date,
        DEATHDATE as death_date,
        upper(GENDER) as sex,
        RACE as race,
        ETHNICITY as ethnicity,
        STATE as state,
        ZIP as zip_code,
        DEATHDATE is not null as is_deceased,

    from source

)

select * from renamed
