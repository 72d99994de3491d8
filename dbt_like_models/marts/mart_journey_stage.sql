-- One row per patient, deceased ones included: where they stand in their care journey as of the run date.
-- Encounters after the run date are not yet known, so a past run date gives the stage it had then.
with

patients as (

    select * from {{ ref('stg_patients') }}

),

encounters as (

    select * from {{ ref('stg_encounters') }}

),

known_encounters as (

    select
        patient_id,
        encounter_class,
        started_at,

    from encounters
    where started_at < {{ var('as_of') }} + interval 1 day

),

visits as (

    select
        patient_id,
        min(started_at) as first_encounter_at,
        max(started_at) as last_encounter_at,
        count(*) filter (where started_at >= {{ var('as_of') }} - interval 12 months) as encounters_last_12_months,
        max(started_at) filter (where encounter_class = 'wellness') as last_wellness_at,

    from known_encounters
    group by patient_id

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
