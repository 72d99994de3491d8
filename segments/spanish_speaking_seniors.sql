-- name: spanish_speaking_seniors
-- owner: patient-experience
-- description: Patients 65 and over who prefer Spanish, for invitations to Spanish-language Medicare enrollment sessions. Demographic only: it needs no identifier and no clinical column.
-- purposes: operations
-- grain: one row per patient
with

seniors as (

    select patient_id
    from {{ ref('mart_patient_profile') }}
    where age >= 65
        and preferred_language = 'es'

)

select * from seniors
