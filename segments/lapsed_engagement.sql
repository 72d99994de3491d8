-- name: lapsed_engagement
-- owner: digital-engagement
-- description: Patients we have emailed who have not opened a message in the last 180 days (or never), for a re-permission message or another channel. Behavior only: no clinical column.
-- purposes: treatment, operations, marketing, fundraising
-- grain: one row per patient
with

lapsed as (

    select patient_id
    from {{ ref('mart_behavior') }}
    where deliveries > 0
        and (last_open_at is null or last_open_at < {{ var('as_of') }} - interval 180 day)

)

select * from lapsed
