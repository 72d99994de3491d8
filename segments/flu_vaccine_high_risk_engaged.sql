-- name: flu_vaccine_high_risk_engaged
-- owner: immunizations
-- description: Of the patients not yet vaccinated against flu this season, those at high risk (65 and over, or with active diabetes, asthma or heart failure) who still read our email; lapsed readers get a phone call instead.
-- purposes: treatment
-- grain: one row per patient
with

chronic_conditions as (

    -- SNOMED CT: diabetes mellitus type 2, type 1, unspecified; asthma, childhood asthma; heart failure, chronic congestive heart failure
    select distinct patient_id
    from {{ ref('mart_clinical_facts') }}
    where fact_type = 'condition'
        and code in ('44054006', '46635009', '73211009', '195967001', '233678006', '84114007', '88805009')
        and is_active

),

high_risk as (

    select patient_id
    from {{ ref('mart_patient_profile') }}
    where age >= 65
    union
    select patient_id
    from chronic_conditions

),

reminded as (

    select not_yet.patient_id
    from {{ segment('flu_vaccine_not_yet_this_season') }} as not_yet
    semi join high_risk on high_risk.patient_id = not_yet.patient_id
    anti join {{ segment('lapsed_engagement') }} as lapsed on lapsed.patient_id = not_yet.patient_id

)

select * from reminded
