-- name: colorectal_screening_due
-- owner: population-health
-- description: Adults aged 45 to 75 with no colonoscopy in the last 10 years and no stool test (FOBT/FIT) in the last year (USPSTF grade A/B).
-- purposes: treatment, operations
-- grain: one row per patient
with

adults_45_to_75 as (

    select patient_id
    from {{ ref('mart_patient_profile') }}
    where age between 45 and 75

),

screened as (

    select distinct patient_id
    from {{ ref('mart_clinical_facts') }}
    where fact_type = 'procedure'
        and (
            -- SNOMED CT: colonoscopy, screening colonoscopy: valid 10 years
            (code in ('73761001', '444783004') and fact_at >= {{ var('as_of') }} - interval 10 year)
            -- SNOMED CT: screening for occult blood in feces: valid 1 year
            or (code = '104435004' and fact_at >= {{ var('as_of') }} - interval 1 year)
        )

),

due as (

    select adults_45_to_75.patient_id
    from adults_45_to_75
    anti join screened on screened.patient_id = adults_45_to_75.patient_id

)

select * from due
