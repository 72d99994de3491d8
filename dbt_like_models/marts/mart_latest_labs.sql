-- One row per patient and lab code: the most recent result.
-- row_number, not arg_max: arg_max skips NULLs, and a newest result without a number must still win.
with

observations as (

    select * from {{ ref('stg_observations') }}

),

sensitive_codes as (

    select * from {{ ref('sensitive_codes') }}

),

latest as (

    select
        patient_id,
        observation_code as lab_code,
        value_number,
        value_text,
        units,
        observed_at,

    from observations
    where observation_category = 'laboratory'
        -- results after the run date are not yet known
        and observed_at < {{ var('as_of') }} + interval 1 day
    qualify row_number() over (
        partition by patient_id, observation_code
        order by observed_at desc, value_number desc nulls last, value_text desc nulls last
    ) = 1

),

tagged as (

    select
        latest.*,
        sensitive_codes.category as sensitive_category,

    from latest
    left join sensitive_codes
        on sensitive_codes.code_system = 'LOINC'
        and sensitive_codes.code = latest.lab_code

)

select * from tagged
