-- One row per payer (insurer) from the EHR export, with the insurance type its name stands for.
with

source as (

    select * from {{ source('synthea', 'payers') }}

),

renamed as (

    select
        Id as payer_id,
        NAME as payer_name,
        -- Synthea names the government programs and the uninsured; every other payer is commercial
        case replace(lower(trim(NAME)), '_', ' ')
            when 'medicare' then 'medicare'
            when 'medicaid' then 'medicaid'
            when 'dual eligible' then 'dual_eligible'
            when 'no insurance' then 'uninsured'
            else 'commercial'
        end as insurance_type,

    from source

)

select * from renamed
