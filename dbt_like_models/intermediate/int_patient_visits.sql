-- One row per patient with an encounter known on the run date: when they were first and last seen,
-- how often in the last 12 months, their last wellness visit and the payer of their newest encounter.
-- Encounters after the run date are not yet known, so a past run date gives the picture it had then.
with

encounters as (

    select * from {{ ref('stg_encounters') }}

),

known as (

    select
        patient_id,
        encounter_id,
        encounter_class,
        started_at,
        payer_id,
        -- row_number, not arg_max: arg_max skips NULLs, and a newest encounter without a payer
        -- must win over an older one with a payer
        row_number() over (
            partition by patient_id
            order by started_at desc, encounter_id desc
        ) as recency,

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
        any_value(payer_id) filter (where recency = 1) as latest_payer_id,

    from known
    group by patient_id

)

select * from visits
