-- name: breast_cancer_screening_due
-- owner: population-health
-- description: Women aged 50 to 74 with no screening or diagnostic mammogram in the last 2 years (USPSTF grade B, biennial).
-- purposes: treatment, operations
-- grain: one row per patient
with

women_50_to_74 as (

    select patient_id
    from {{ ref('mart_patient_profile') }}
    where sex = 'F'
        and age between 50 and 74

),

recent_mammograms as (

    -- SNOMED CT: screening mammography, mammography, diagnostic mammography, breast tomosynthesis
    select distinct patient_id
    from {{ ref('stg_procedures') }}
    where procedure_code in ('24623002', '71651007', '566571000119105', '450566007')
        and performed_at >= {{ var('as_of') }} - interval 2 year

),

due as (

    select women_50_to_74.patient_id
    from women_50_to_74
    anti join recent_mammograms on recent_mammograms.patient_id = women_50_to_74.patient_id

)

select * from due
