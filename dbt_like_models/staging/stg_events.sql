-- One row per engagement event (delivery, bounce, complaint, open, click, unsubscribe).
with

source as (

    select * from {{ source('events', 'events') }}

),

renamed as (

    select
        event_id,
        lower(event_type) as event_type,
        lower(bounce_type) as bounce_type,
        occurred_at,
        patient_id,
        campaign,
        lower(purpose) as purpose,

    from source

)

select * from renamed
