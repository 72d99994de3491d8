-- One row per patient and suppression reason: hard bounces and complaints stop every purpose,
-- an unsubscribe stops the purpose it was given for ('all' when the event names none).
with

events as (

    select * from {{ ref('stg_events') }}

),

suppressing as (

    select
        patient_id,
        case
            when event_type = 'bounce' and bounce_type = 'hard' then 'hard_bounce'
            when event_type = 'complaint' then 'complaint'
            when event_type = 'unsubscribe' then 'unsubscribed'
        end as reason,
        case when event_type = 'unsubscribe' then coalesce(purpose, 'all') else 'all' end as purpose,
        occurred_at,

    from events
    where event_type in ('complaint', 'unsubscribe')
        or (event_type = 'bounce' and bounce_type = 'hard')

),

first_per_reason as (

    select
        patient_id,
        reason,
        purpose,
        min(occurred_at) as suppressed_at,

    from suppressing
    group by patient_id, reason, purpose

)

select * from first_per_reason
