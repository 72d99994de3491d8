-- name: hypertension_in_service_area
-- owner: care-management
-- description: Patients with active hypertension who live in the ZIP codes the new Dorchester and Roxbury blood-pressure clinic serves, to offer them its care program.
-- purposes: operations
-- grain: one row per patient
with

in_service_area as (

    select patient_id
    from {{ ref('mart_patient_profile') }}
    where zip_code in ('02118', '02119', '02121', '02124', '02125')

),

hypertensive as (

    -- SNOMED CT: essential hypertension, hypertensive disorder
    select distinct patient_id
    from {{ ref('mart_clinical_facts') }}
    where fact_type = 'condition'
        and code in ('59621000', '38341003')
        and is_active

),

program_candidates as (

    select in_service_area.patient_id
    from in_service_area
    semi join hypertensive on hypertensive.patient_id = in_service_area.patient_id

)

select * from program_candidates
