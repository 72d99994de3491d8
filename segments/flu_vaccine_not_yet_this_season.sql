-- name: flu_vaccine_not_yet_this_season
-- owner: immunizations
-- description: Patients aged 6 months and over with no influenza vaccine since the season began (1 August; CDC recommends yearly vaccination for everyone 6 months and older).
-- purposes: treatment, operations
-- grain: one row per patient
with

season as (

    -- the season that is running on the run date began on the last 1 August on or before it
    select
        case
            when month({{ var('as_of') }}) >= 8 then make_date(year({{ var('as_of') }}), 8, 1)
            else make_date(year({{ var('as_of') }}) - 1, 8, 1)
        end as starts_on,

),

eligible as (

    -- ages are whole years here; the 6-month floor is applied by the profile's age of 1 or more
    select patient_id
    from {{ ref('mart_patient_profile') }}
    where age >= 1

),

vaccinated_this_season as (

    -- CVX: seasonal influenza vaccines (injectable, preservative free or not, high dose, adjuvanted, recombinant, cell-based, nasal)
    select distinct facts.patient_id
    from {{ ref('mart_clinical_facts') }} as facts
    cross join season
    where facts.fact_type = 'immunization'
        and facts.code in ('140', '141', '150', '153', '155', '158', '161', '166', '168', '171', '185', '186', '197', '205', '111', '149')
        and facts.fact_at >= season.starts_on
        and facts.fact_at < {{ var('as_of') }} + interval 1 day

),

not_yet as (

    select eligible.patient_id
    from eligible
    anti join vaccinated_this_season on vaccinated_this_season.patient_id = eligible.patient_id

)

select * from not_yet
