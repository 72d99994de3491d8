"""Test-side converter: a Synthea CSV export (and a carecast consents extract) as FHIR R4 Bulk Data NDJSON.

The inverse of ``carecast/ingest/fhir.py``, written independently of it: one dict per CSV row, built
the way Synthea's own FHIR R4 exporter shapes a resource (US Core race/ethnicity extensions, v2-0203
identifier types, v3 ActCode encounter classes, SNOMED/LOINC/RxNorm/CVX codings, geolocation on the
address, birth place as an extension), then ``json.dumps`` per line. Speed does not matter here.

To exercise the reader, the export varies what FHIR allows to vary: instants are written in UTC
(``Z``), ``+00:00`` or a local offset, sometimes with milliseconds; subjects alternate between
``Patient/<id>`` and ``urn:uuid:<id>``; some organizations are conditional references, as Synthea's
bulk export writes them; the state is the USPS abbreviation, as US Core writes it.

Where the inverse is a choice, the choice is:
- Blood pressure: Synthea's CSV has a systolic (8480-6) and a diastolic (8462-4) row with the same DATE,
  PATIENT and ENCOUNTER; they become one Observation 85354-9 with two components, as Synthea's FHIR
  exporter writes it. Every other CSV row is one Observation (no other multi-component observation is
  recognisable from the CSV).
- Text observation values: a value that looks like a number (survey answers such as an income) is a
  ``valueString``; any other alternates between ``valueCodeableConcept.text`` and a coding display.
  ``valueString`` has no unit, so UNITS of a text row is not carried.
- Conditions: ``onsetDateTime`` is the encounter's instant when the condition starts on the encounter's
  (UTC) day, else the bare date; ``abatementDateTime`` is the bare date.
- Encounter class: v3 ActCode as Synthea writes it (wellness, ambulatory, outpatient and urgent care all AMB).
- Consents: revoked -> ``inactive`` with ``meta.lastUpdated`` = revoked_at; otherwise ``active`` (an expired
  authorization stays active, its provision period ended). Purposes as v3 PurposeOfUse codes, fundraising
  in carecast's code system; channel and remuneration as carecast's extensions.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
SYNTHEA = "https://github.com/synthetichealth/synthea"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
RACE_SYSTEM = "urn:oid:2.16.840.1.113883.6.238"
CARECAST = "https://carecast.example.org/fhir"

EXPORT_TIME = "2026-11-23T06:00:00Z"
DEFAULT_GZIPPED = ("Encounter", "Observation", "Consent")

RACES = {
    "white": ("2106-3", "White"),
    "black": ("2054-5", "Black or African American"),
    "asian": ("2028-9", "Asian"),
    "native": ("1002-5", "American Indian or Alaska Native"),
    "hawaiian": ("2076-8", "Native Hawaiian or Other Pacific Islander"),
    "other": ("2131-1", "Other Race"),
}
ETHNICITIES = {"hispanic": ("2135-2", "Hispanic or Latino"), "nonhispanic": ("2186-5", "Not Hispanic or Latino")}
STATE_CODES = {"Massachusetts": "MA", "New York": "NY", "Rhode Island": "RI", "Connecticut": "CT"}
CLASS_CODES = {
    "wellness": "AMB",
    "ambulatory": "AMB",
    "outpatient": "AMB",
    "urgentcare": "AMB",
    "inpatient": "IMP",
    "emergency": "EMER",
    "home": "HH",
    "hospice": "HH",
    "snf": "IMP",
    "virtual": "VR",
}
PURPOSE_CODES = {
    "treatment": (ACT_REASON, "TREAT", "treatment"),
    "operations": (ACT_REASON, "HOPERAT", "healthcare operations"),
    "marketing": (ACT_REASON, "HMARKT", "healthcare marketing"),
    "fundraising": (f"{CARECAST}/CodeSystem/consent-purpose", "fundraising", "fundraising"),
}
SYSTOLIC, DIASTOLIC, BLOOD_PRESSURE = "8480-6", "8462-4", "85354-9"
OFFSETS = (UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=-4)), timezone(timedelta(hours=1)))


def read_rows(path: Path) -> list[dict[str, str | None]]:
    """A CSV as dicts, empty cells as None (the reader compares against ``pl.read_csv``, where they are null)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [{key: (value if value != "" else None) for key, value in row.items()} for row in csv.DictReader(handle)]


def instant(value: str | None, variant: int) -> str | None:
    """A CSV timestamp (``...Z``) as a FHIR instant in one of several equivalent spellings."""
    if value is None:
        return None
    moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    local = moment.astimezone(OFFSETS[variant % len(OFFSETS)])
    text = local.isoformat(timespec="milliseconds" if variant % 5 == 0 else "seconds")
    return text.replace("+00:00", "Z") if variant % 2 == 0 else text


def reference(kind: str, identifier: str | None, variant: int = 1) -> dict | None:
    if identifier is None:
        return None
    return {"reference": f"urn:uuid:{identifier}" if variant % 2 == 0 else f"{kind}/{identifier}"}


def concept(system: str, code: str | None, display: str | None) -> dict:
    coding = {"system": system, "code": code, "display": display}
    return {"coding": [{k: v for k, v in coding.items() if v is not None}], "text": display}


def meta(last_updated: str = EXPORT_TIME, profile: str | None = None) -> dict:
    found = {"versionId": "1", "lastUpdated": last_updated}
    if profile:
        found["profile"] = [f"http://hl7.org/fhir/us/core/StructureDefinition/{profile}"]
    return found


def pruned(resource: dict) -> dict:
    """Drop None members (FHIR JSON never carries null), recursively."""
    if isinstance(resource, dict):
        return {key: pruned(value) for key, value in resource.items() if value is not None and value != []}
    if isinstance(resource, list):
        return [pruned(item) for item in resource]
    return resource


# -- Resources per CSV row -------------------------------------------------------------------------


def patient(row: dict, n: int) -> dict:
    identifiers = [
        {"system": SYNTHEA, "value": row["Id"]},
        {
            "type": concept(V2_0203, "MR", "Medical Record Number"),
            "system": "http://hospital.example.org",
            "value": row["Id"],
        },
        {
            "type": concept(V2_0203, "SS", "Social Security Number"),
            "system": "http://hl7.org/fhir/sid/us-ssn",
            "value": row["SSN"],
        },
    ]
    if row.get("DRIVERS"):
        identifiers.append(
            {
                "type": concept(V2_0203, "DL", "Driver's license number"),
                "system": "urn:oid:2.16.840.1.113883.4.3.25",
                "value": row["DRIVERS"],
            }
        )
    if row.get("PASSPORT"):
        identifiers.append(
            {
                "type": concept(V2_0203, "PPN", "Passport Number"),
                "system": f"{SYNTHEA}/passport",
                "value": row["PASSPORT"],
            }
        )
    given = [row["FIRST"]] + ([row["MIDDLE"]] if row.get("MIDDLE") else [])
    names = [
        {
            "use": "official",
            "family": row["LAST"],
            "given": given,
            "prefix": [row["PREFIX"]] if row.get("PREFIX") else None,
            "suffix": [row["SUFFIX"]] if row.get("SUFFIX") else None,
        }
    ]
    if row.get("MAIDEN"):
        names.append({"use": "maiden", "family": row["MAIDEN"], "given": [row["FIRST"]]})
    race_code, race_display = RACES[row["RACE"]]
    ethnicity_code, ethnicity_display = ETHNICITIES[row["ETHNICITY"]]
    extensions = [
        {
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
            "extension": [
                {
                    "url": "ombCategory",
                    "valueCoding": {"system": RACE_SYSTEM, "code": race_code, "display": race_display},
                },
                {"url": "text", "valueString": race_display},
            ],
        },
        {
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
            "extension": [
                {
                    "url": "ombCategory",
                    "valueCoding": {"system": RACE_SYSTEM, "code": ethnicity_code, "display": ethnicity_display},
                },
                {"url": "text", "valueString": ethnicity_display},
            ],
        },
        {"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName", "valueString": "Synthetic101"},
        {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": row["GENDER"]},
        {"url": "http://synthetichealth.github.io/synthea/disability-adjusted-life-years", "valueDecimal": 0.25},
    ]
    if row.get("BIRTHPLACE"):
        parts = row["BIRTHPLACE"].split("  ")
        place = {"text": row["BIRTHPLACE"]}
        if len(parts) == 3:
            place.update(city=parts[0], state=parts[1], country=parts[2])
        extensions.append({"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueAddress": place})
    address = {
        "use": "home",
        "line": [row["ADDRESS"]] if row.get("ADDRESS") else None,
        "city": row.get("CITY"),
        "district": row.get("COUNTY"),
        "state": STATE_CODES.get(row["STATE"], row["STATE"]),
        "postalCode": row.get("ZIP"),
        "country": "US",
    }
    if row.get("LAT") and row.get("LON"):
        address["extension"] = [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                "extension": [
                    {"url": "latitude", "valueDecimal": float(row["LAT"])},
                    {"url": "longitude", "valueDecimal": float(row["LON"])},
                ],
            }
        ]
    resource = {
        "resourceType": "Patient",
        "id": row["Id"],
        "meta": meta(profile="us-core-patient"),
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Generated by Synthea.</div>'},
        "extension": extensions,
        "identifier": identifiers,
        "name": names,
        "telecom": [{"system": "phone", "value": "555-010-0000", "use": "home"}],
        "gender": {"M": "male", "F": "female"}[row["GENDER"]],
        "birthDate": row["BIRTHDATE"],
        # Synthea writes the instant of death; noon Eastern keeps the UTC date the CSV's date.
        "deceasedDateTime": f"{row['DEATHDATE']}T12:00:00-05:00" if row.get("DEATHDATE") else None,
        "address": [address],
        "maritalStatus": concept(
            "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", row["MARITAL"], row["MARITAL"]
        )
        if row.get("MARITAL")
        else None,
        "multipleBirthBoolean": False,
        "communication": [{"language": concept("urn:ietf:bcp:47", "en-US", "English (United States)")}],
    }
    return pruned(resource)


def encounter(row: dict, n: int) -> dict:
    organization = row.get("ORGANIZATION")
    provider = (
        {"reference": f"Organization?identifier={SYNTHEA}|{organization}"}
        if n % 3 == 0
        else {"reference": f"Organization/{organization}"}
    )
    resource = {
        "resourceType": "Encounter",
        "id": row["Id"],
        "meta": meta(profile="us-core-encounter"),
        "identifier": [{"use": "official", "system": SYNTHEA, "value": row["Id"]}],
        "status": "finished",
        "class": {"system": ACT_CODE, "code": CLASS_CODES[row["ENCOUNTERCLASS"]]},
        "type": [concept(SNOMED, row["CODE"], row["DESCRIPTION"])],
        "subject": reference("Patient", row["PATIENT"], n),
        "participant": [
            {
                "type": [
                    concept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "PPRF", "primary performer")
                ],
                "period": {"start": instant(row["START"], n), "end": instant(row["STOP"], n)},
                "individual": reference("Practitioner", row.get("PROVIDER")),
            }
        ]
        if row.get("PROVIDER")
        else None,
        "period": {"start": instant(row["START"], n), "end": instant(row["STOP"], n)},
        "reasonCode": [concept(SNOMED, row["REASONCODE"], row["REASONDESCRIPTION"])] if row.get("REASONCODE") else None,
        "serviceProvider": provider if organization else None,
    }
    return pruned(resource)


def condition(row: dict, n: int, encounter_starts: dict[str, str]) -> dict:
    started = encounter_starts.get(row.get("ENCOUNTER") or "")
    onset = instant(started, n) if started and started[:10] == row["START"] else row["START"]
    resource = {
        "resourceType": "Condition",
        "id": f"condition-{n}",
        "meta": meta(profile="us-core-condition-encounter-diagnosis"),
        "clinicalStatus": concept(
            "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "resolved" if row.get("STOP") else "active",
            None,
        ),
        "verificationStatus": concept("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", None),
        "category": [
            concept(
                "http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis", "Encounter Diagnosis"
            )
        ],
        "code": concept(SNOMED, row["CODE"], row["DESCRIPTION"]),
        "subject": reference("Patient", row["PATIENT"], n),
        "encounter": reference("Encounter", row.get("ENCOUNTER"), n + 1),
        "onsetDateTime": onset,
        "abatementDateTime": row.get("STOP"),
        "recordedDate": onset,
    }
    return pruned(resource)


def observation_value(row: dict, n: int) -> dict:
    if row["TYPE"] == "numeric":
        quantity = {"value": float(row["VALUE"]), "unit": row.get("UNITS"), "system": UCUM, "code": row.get("UNITS")}
        return {"valueQuantity": quantity}
    value = row["VALUE"]
    if value.replace(".", "", 1).isdigit():
        return {"valueString": value}
    if n % 2 == 0:
        return {"valueCodeableConcept": {"text": value}}
    return {"valueCodeableConcept": {"coding": [{"system": SNOMED, "display": value}]}}


def observation(rows: list[dict], n: int) -> dict:
    """One Observation from one CSV row, or a blood pressure panel from its systolic and diastolic rows."""
    first = rows[0]
    category = first.get("CATEGORY")
    system = LOINC if first["CODE"][:1].isdigit() else "http://synthetichealth.github.io/synthea/"
    resource = {
        "resourceType": "Observation",
        "id": f"observation-{n}",
        "meta": meta(),
        "status": "final",
        "category": [concept("http://terminology.hl7.org/CodeSystem/observation-category", category, category)]
        if category
        else None,
        "subject": reference("Patient", first["PATIENT"], n),
        "encounter": reference("Encounter", first.get("ENCOUNTER"), n),
        "effectiveDateTime": instant(first["DATE"], n),
        "issued": instant(first["DATE"], 0),
    }
    if len(rows) == 1:
        resource["code"] = concept(system, first["CODE"], first["DESCRIPTION"])
        resource.update(observation_value(first, n))
    else:
        resource["code"] = concept(LOINC, BLOOD_PRESSURE, "Blood pressure panel with all children optional")
        resource["component"] = [
            {"code": concept(LOINC, row["CODE"], row["DESCRIPTION"]), **observation_value(row, n)} for row in rows
        ]
    return pruned(resource)


def observation_groups(rows: list[dict]) -> Iterator[list[dict]]:
    """Rows grouped into resources: a systolic and a diastolic row of one measurement make one panel."""
    pressures: dict[tuple, dict[str, int]] = {}
    for index, row in enumerate(rows):
        if row["CODE"] in (SYSTOLIC, DIASTOLIC):
            pressures.setdefault((row["DATE"], row["PATIENT"], row.get("ENCOUNTER")), {})[row["CODE"]] = index
    paired = {key: found for key, found in pressures.items() if len(found) == 2}
    grouped = {index for found in paired.values() for index in found.values()}
    for index, row in enumerate(rows):
        if index not in grouped:
            yield [row]
        elif row["CODE"] == SYSTOLIC:
            found = paired[(row["DATE"], row["PATIENT"], row.get("ENCOUNTER"))]
            yield [rows[found[SYSTOLIC]], rows[found[DIASTOLIC]]]


def immunization(row: dict, n: int) -> dict:
    resource = {
        "resourceType": "Immunization",
        "id": f"immunization-{n}",
        "meta": meta(profile="us-core-immunization"),
        "status": "completed",
        "vaccineCode": concept(CVX, row["CODE"], row["DESCRIPTION"]),
        "patient": reference("Patient", row["PATIENT"], n),
        "encounter": reference("Encounter", row.get("ENCOUNTER"), n),
        "occurrenceDateTime": instant(row["DATE"], n),
        "primarySource": True,
    }
    return pruned(resource)


def procedure(row: dict, n: int) -> dict:
    stop = row.get("STOP")
    resource = {
        "resourceType": "Procedure",
        "id": f"procedure-{n}",
        "meta": meta(profile="us-core-procedure"),
        "status": "completed",
        "code": concept(SNOMED, row["CODE"], row["DESCRIPTION"]),
        "subject": reference("Patient", row["PATIENT"], n),
        "encounter": reference("Encounter", row.get("ENCOUNTER"), n),
        "performedPeriod": {"start": instant(row["START"], n), "end": instant(stop, n + 1)} if stop else None,
        "performedDateTime": None if stop else instant(row["START"], n),
        "reasonCode": [concept(SNOMED, row["REASONCODE"], row["REASONDESCRIPTION"])] if row.get("REASONCODE") else None,
    }
    return pruned(resource)


def medication_request(row: dict, n: int) -> dict:
    stop = row.get("STOP")
    resource = {
        "resourceType": "MedicationRequest",
        "id": f"medication-{n}",
        "meta": meta(profile="us-core-medicationrequest"),
        "status": "stopped" if stop else "active",
        "intent": "order",
        "medicationCodeableConcept": concept(RXNORM, row["CODE"], row["DESCRIPTION"]),
        "subject": reference("Patient", row["PATIENT"], n),
        "encounter": reference("Encounter", row.get("ENCOUNTER"), n),
        "authoredOn": instant(row["START"], n),
        "dispenseRequest": {"validityPeriod": {"start": instant(row["START"], n), "end": instant(stop, n)}}
        if stop
        else None,
        "reasonCode": [concept(SNOMED, row["REASONCODE"], row["REASONDESCRIPTION"])] if row.get("REASONCODE") else None,
    }
    return pruned(resource)


def consent(row: dict, n: int) -> dict:
    """carecast's consents row as a FHIR Consent (privacy consent, one purpose, provision permit)."""
    system, code, display = PURPOSE_CODES[row["purpose"]]
    revoked = row.get("revoked_at")
    extensions = []
    if row["channel"] != "email" or n % 2 == 0:
        extensions.append({"url": f"{CARECAST}/StructureDefinition/consent-channel", "valueCode": row["channel"]})
    if row.get("remuneration_disclosed") is not None:
        extensions.append(
            {
                "url": f"{CARECAST}/StructureDefinition/consent-remuneration-disclosed",
                "valueBoolean": row["remuneration_disclosed"] == "true",
            }
        )
    document = row.get("document_id")
    source = None
    if document:
        source = (
            {"reference": f"DocumentReference/{document}", "display": "signed form"}
            if n % 2 == 0
            else {"identifier": {"system": f"{CARECAST}/documents", "value": document}}
        )
    resource = {
        "resourceType": "Consent",
        "id": row["consent_id"],
        "meta": meta(last_updated=instant(revoked or row["signed_at"], n)),
        "extension": extensions,
        "status": "inactive" if revoked else "active",
        "scope": concept("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", "Privacy Consent"),
        "category": [concept(LOINC, "59284-0", "Patient Consent")],
        "patient": reference("Patient", row["patient_id"], n),
        "dateTime": instant(row["signed_at"], n + 1),
        "sourceReference": source,
        "policyRule": concept(ACT_CODE, "OPTIN", "opt-in"),
        "provision": {
            "type": "permit",
            "period": {"start": instant(row["signed_at"], n + 1), "end": instant(row.get("expires_at"), n)},
            "purpose": [{"system": system, "code": code, "display": display}],
        },
    }
    return pruned(resource)


# -- Files -----------------------------------------------------------------------------------------


def write_ndjson(path: Path, resources: list[dict]) -> Path:
    text = "".join(json.dumps(resource, ensure_ascii=False) + "\n" for resource in resources).encode("utf-8")
    path.write_bytes(gzip.compress(text) if path.name.endswith(".gz") else text)
    return path


def export_bulk(
    synthea_dir: Path,
    out_dir: Path,
    consents_csv: Path | None = None,
    gzipped: tuple[str, ...] = DEFAULT_GZIPPED,
) -> dict[str, Path]:
    """Write ``<ResourceType>.ndjson`` (``.ndjson.gz`` for the types in ``gzipped``) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    encounters = read_rows(synthea_dir / "encounters.csv")
    starts = {row["Id"]: row["START"] for row in encounters}
    resources = {
        "Patient": [patient(row, n) for n, row in enumerate(read_rows(synthea_dir / "patients.csv"))],
        "Encounter": [encounter(row, n) for n, row in enumerate(encounters)],
        "Condition": [condition(row, n, starts) for n, row in enumerate(read_rows(synthea_dir / "conditions.csv"))],
        "Observation": [
            observation(rows, n)
            for n, rows in enumerate(observation_groups(read_rows(synthea_dir / "observations.csv")))
        ],
        "Immunization": [immunization(row, n) for n, row in enumerate(read_rows(synthea_dir / "immunizations.csv"))],
        "Procedure": [procedure(row, n) for n, row in enumerate(read_rows(synthea_dir / "procedures.csv"))],
        "MedicationRequest": [
            medication_request(row, n) for n, row in enumerate(read_rows(synthea_dir / "medications.csv"))
        ],
    }
    if consents_csv is not None:
        resources["Consent"] = [consent(row, n) for n, row in enumerate(read_rows(consents_csv))]
    written = {}
    for resource_type, items in resources.items():
        suffix = ".ndjson.gz" if resource_type in gzipped else ".ndjson"
        written[resource_type] = write_ndjson(out_dir / f"{resource_type}{suffix}", items)
    return written
