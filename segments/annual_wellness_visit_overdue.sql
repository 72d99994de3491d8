-- name: annual_wellness_visit_overdue
-- owner: population-health
-- description: Adults 18 and over seen in the last 3 years whose last wellness visit is more than 12 months ago (or who never had one). New patients in their first 30 days get the welcome series instead.
-- purposes: treatment, operations
-- grain: one row per patient
with

adults as (

    select patient_id
    from {{ ref('mart_patient_profile') }}
    where age >= 18

),

overdue as (

    select patient_id
    from {{ ref('mart_journey_stage') }}
    where last_encounter_at >= {{ var('as_of') }} - interval 3 year
        and (last_wellness_at is null or last_wellness_at < {{ var('as_of') }} - interval 12 month)

),

due as (

    select adults.patient_id
    from adults
    semi join overdue on overdue.patient_id = adults.patient_id
    anti join {{ segment('new_patients_first_30_days') }} as welcomed on welcomed.patient_id = adults.patient_id

)

select * from due
