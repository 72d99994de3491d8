-- One row per patient: what campaigns may know of them, as of the run date.
-- Dates of birth stay in staging; the mart carries age and age band (demographic) instead.
-- The insurance type is that of the payer of the newest encounter known on the run date.
with

patients as (

    select * from {{ ref('stg_patients') }}

),

contacts as (

    select * from {{ ref('stg_contacts') }}

),

visits as (

    select * from {{ ref('int_patient_visits') }}

),

payers as (

    select * from {{ ref('stg_payers') }}

),

aged as (

    select
        patient_id,
        first_name,
        sex,
        state,
        left(zip_code, 3) as zip3,
        left(zip_code, 5) as zip_code,
        date_part('year', age({{ var('as_of') }}, birth_date))::integer as age,
        coalesce(death_date <= {{ var('as_of') }}, false) as is_deceased,

    from patients

),

insured as (

    select
        visits.patient_id,
        payers.insurance_type,

    from visits
    left join payers on payers.payer_id = visits.latest_payer_id

),

profiled as (

    select
        aged.patient_id,
        aged.first_name,
        aged.sex,
        aged.state,
        aged.zip3,
        aged.zip_code,
        aged.age,
        case
            when aged.age < 18 then '0-17'
            when aged.age < 30 then '18-29'
            when aged.age < 40 then '30-39'
            when aged.age < 50 then '40-49'
            when aged.age < 65 then '50-64'
            when aged.age < 75 then '65-74'
            else '75+'
        end as age_band,
        aged.age < 18 as is_minor,
        aged.is_deceased,
        coalesce(insured.insurance_type, 'unknown') as insurance_type,
        contacts.email,
        coalesce(contacts.preferred_language, 'en') as preferred_language,
        coalesce(contacts.is_email_opted_in, false) as is_email_opted_in,
        -- RFC 5321 dot-atom local part; a domain of letter-digit-hyphen labels and an alphabetic TLD
        coalesce(regexp_full_match(
            contacts.email,
            '[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+)*@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}'
        ), false) as has_valid_email,

    from aged
    left join contacts on contacts.patient_id = aged.patient_id
    left join insured on insured.patient_id = aged.patient_id

)

select * from profiled
