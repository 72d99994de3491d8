-- One row per patient, deceased ones included: where they stand in their care journey as of the run date.
with

patients as (

    select * from {{ ref('stg_patients') }}

),

visits as (

    select * from {{ ref('int_patient_visits') }}

),

staged as (

    select
        patients.patient_id,
        visits.first_encounter_at,
        visits.last_encounter_at,
        coalesce(visits.encounters_last_12_months, 0) as encounters_last_12_months,
        visits.last_wellness_at,
        -- first match wins: with no encounter in 12 months there is no wellness visit in 12 months either,
        -- so an 'overdue' patient is one last seen 12 to 24 months ago
        case
            when visits.first_encounter_at is null then 'none'
            when visits.first_encounter_at >= {{ var('as_of') }} - interval 90 days then 'new'
            when visits.last_encounter_at >= {{ var('as_of') }} - interval 12 months then 'active'
            when visits.last_encounter_at >= {{ var('as_of') }} - interval 24 months then 'overdue'
            else 'at_risk'
        end as journey_stage,

    from patients
    left join visits on visits.patient_id = patients.patient_id

)

select * from staged
