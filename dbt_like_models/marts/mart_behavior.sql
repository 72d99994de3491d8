-- One row per patient with any engagement event: how often they received, opened and clicked, and when last.
with

events as (

    select * from {{ ref('stg_events') }}

),

engagement as (

    select
        patient_id,
        count(*) filter (where event_type = 'open') as opens,
        count(*) filter (where event_type = 'click') as clicks,
        count(*) filter (where event_type = 'delivery') as deliveries,
        max(occurred_at) filter (where event_type = 'open') as last_open_at,
        max(occurred_at) filter (where event_type = 'click') as last_click_at,
        max(occurred_at) filter (where event_type in ('open', 'click')) as last_engagement_at,

    from events
    -- events after the run date are not yet known
    where occurred_at < {{ var('as_of') }} + interval 1 day
    group by patient_id

)

select * from engagement
