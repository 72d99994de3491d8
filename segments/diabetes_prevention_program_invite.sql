-- name: diabetes_prevention_program_invite
-- owner: community-programs
-- description: Adults 18 to 79 with prediabetes and no diabetes, invited to the partner YMCA's Diabetes Prevention Program; marketing, so it runs only on a written authorization and never sees codes of a sensitive category.
-- purposes: marketing
-- grain: one row per patient
with

adults as (

    select patient_id
    from {{ ref('mart_patient_profile') }}
    where age between 18 and 79

),

conditions as (

    select
        patient_id,
        code,
    from {{ ref('mart_clinical_facts') }}
    where fact_type = 'condition'
        and is_active

),

prediabetic as (

    -- SNOMED CT 15777000: prediabetes
    select distinct patient_id from conditions where code = '15777000'

),

diabetic as (

    -- SNOMED CT: diabetes mellitus type 2, type 1, diabetes mellitus
    select distinct patient_id from conditions where code in ('44054006', '46635009', '73211009')

),

invited as (

    select adults.patient_id
    from adults
    semi join prediabetic on prediabetic.patient_id = adults.patient_id
    anti join diabetic on diabetic.patient_id = adults.patient_id

)

select * from invited
