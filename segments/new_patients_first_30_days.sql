-- name: new_patients_first_30_days
-- owner: patient-experience
-- description: Patients whose first encounter with us was in the last 30 days, for the welcome series (portal, care team, how to book).
-- purposes: treatment, operations
-- grain: one row per patient
with

new_patients as (

    select patient_id
    from {{ ref('mart_journey_stage') }}
    where first_encounter_at >= {{ var('as_of') }} - interval 29 day

)

select * from new_patients
