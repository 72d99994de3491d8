-- One row per patient, fact type, code and date: conditions, procedures, labs, vitals, medications and vaccines in one long table.
with

conditions as (

    select * from {{ ref('stg_conditions') }}

),

procedures as (

    select * from {{ ref('stg_procedures') }}

),

observations as (

    select * from {{ ref('stg_observations') }}

),

medications as (

    select * from {{ ref('stg_medications') }}

),

immunizations as (

    select * from {{ ref('stg_immunizations') }}

),

sensitive_codes as (

    select * from {{ ref('sensitive_codes') }}

),

condition_facts as (

    select
        patient_id,
        'condition' as fact_type,
        'SNOMED' as code_system,
        condition_code as code,
        started_on::timestamp as fact_at,
        null::double as value_number,
        -- active on the run date: not stopped by then (a stop recorded later is not yet known)
        coalesce(stopped_on > {{ var('as_of') }}, true) as is_active,

    from conditions

),

procedure_facts as (

    select
        patient_id,
        'procedure' as fact_type,
        'SNOMED' as code_system,
        procedure_code as code,
        performed_at as fact_at,
        null::double as value_number,
        null::boolean as is_active,

    from procedures

),

observation_facts as (

    select
        patient_id,
        case observation_category when 'laboratory' then 'lab' else 'vital' end as fact_type,
        'LOINC' as code_system,
        observation_code as code,
        observed_at as fact_at,
        value_number,
        null::boolean as is_active,

    from observations
    where observation_category in ('laboratory', 'vital-signs')

),

medication_facts as (

    select
        patient_id,
        'medication' as fact_type,
        'RxNorm' as code_system,
        medication_code as code,
        started_at as fact_at,
        null::double as value_number,
        coalesce(stopped_at >= {{ var('as_of') }} + interval 1 day, true) as is_active,

    from medications

),

immunization_facts as (

    select
        patient_id,
        'immunization' as fact_type,
        'CVX' as code_system,
        vaccine_code as code,
        administered_at as fact_at,
        null::double as value_number,
        null::boolean as is_active,

    from immunizations

),

unioned as (

    select * from condition_facts
    union all
    select * from procedure_facts
    union all
    select * from observation_facts
    union all
    select * from medication_facts
    union all
    select * from immunization_facts

),

-- Synthea records some prescriptions twice on the same start (once by the encounter that ends them):
-- one fact per patient, type, code and time, active when any of its records is.
deduplicated as (

    select
        patient_id,
        fact_type,
        code_system,
        code,
        fact_at,
        -- simultaneous results for one code (none in Synthea): keep the highest
        max(value_number) as value_number,
        bool_or(is_active) as is_active,

    from unioned
    -- facts recorded after the run date are not yet known, so a past run date re-explains a past campaign
    where fact_at < {{ var('as_of') }} + interval 1 day
    group by patient_id, fact_type, code_system, code, fact_at

),

-- Marketing and fundraising segments never see a fact whose code is in a sensitive category.
tagged as (

    select
        deduplicated.*,
        sensitive_codes.category as sensitive_category,

    from deduplicated
    left join sensitive_codes
        on sensitive_codes.code_system = deduplicated.code_system
        and sensitive_codes.code = deduplicated.code

)

select * from tagged
