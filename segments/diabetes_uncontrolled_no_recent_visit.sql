-- name: diabetes_uncontrolled_no_recent_visit
-- owner: care-management
-- description: Patients with active diabetes whose latest HbA1c is over 9 % and who have had no encounter in the last 6 months, for outreach by a care manager.
-- purposes: treatment, operations
-- grain: one row per patient
-- columns: latest_hba1c (clinical)
with

diabetics as (

    -- SNOMED CT: diabetes mellitus type 2, type 1, diabetes mellitus
    select distinct patient_id
    from {{ ref('mart_clinical_facts') }}
    where fact_type = 'condition'
        and code in ('44054006', '46635009', '73211009')
        and is_active

),

poorly_controlled as (

    -- LOINC 4548-4: hemoglobin A1c/hemoglobin.total in blood
    select
        patient_id,
        value_number as latest_hba1c,
    from {{ ref('mart_latest_labs') }}
    where lab_code = '4548-4'
        and value_number > 9

),

not_seen_lately as (

    select patient_id
    from {{ ref('mart_journey_stage') }}
    where last_encounter_at is null
        or last_encounter_at < {{ var('as_of') }} - interval 6 month

),

outreach as (

    select
        poorly_controlled.patient_id,
        poorly_controlled.latest_hba1c,
    from poorly_controlled
    semi join diabetics on diabetics.patient_id = poorly_controlled.patient_id
    semi join not_seen_lately on not_seen_lately.patient_id = poorly_controlled.patient_id

)

select * from outreach
