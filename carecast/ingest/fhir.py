"""FHIR R4 Bulk Data NDJSON as a landing format: each resource type becomes a Synthea-shaped raw table.

A Bulk Data export is one NDJSON file per resource type (``Patient.ndjson``, optionally gzipped).
``read_fhir_resource`` turns one such file into an all-string Polars frame with the column names
and string representations of the Synthea CSV table the resource maps to (``RESOURCE_TABLES``), so
the frame goes through the same validation and loading as the CSV would, and segments never see
where the data came from. The mapping rules, and what FHIR does not carry, are in
``docs/formats.md`` (section "FHIR Bulk Data"); the short version:

- Parsing is column-wise: Arrow's JSON reader with an explicit schema of only the FHIR elements the
  mapping reads (``SCHEMAS``; every other element is skipped), then Polars expressions (struct fields,
  ``list.eval`` filters on coding systems and extension URLs). Nothing loops over resources in
  Python, except to find the line of an error.
- Dates and timestamps are normalized to Synthea's forms: ``YYYY-MM-DDTHH:MM:SSZ`` in UTC (offsets
  converted, fractions of a second dropped); a FHIR ``dateTime`` mapped to a date column is the UTC
  date of that instant (a bare date stays as it is). Values that do not parse are passed through
  unchanged, so the validation quarantines them (``type_date``/``type_timestamp``) like a bad CSV value.
- Resources whose status says the event did not happen or is void (``entered-in-error``, a
  cancelled encounter, a vaccine ``not-done``, a refuted condition, a draft consent, ...) are left
  out; ``counts`` reports how many.
- Errors name the file, the line and the problem, never a value: a value is PHI.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.json as pajson

from carecast.ingest.readers import ExtractError

RESOURCE_TABLES: dict[str, tuple[str, str]] = {
    "Patient": ("synthea", "patients"),
    "Encounter": ("synthea", "encounters"),
    "Condition": ("synthea", "conditions"),
    "Observation": ("synthea", "observations"),
    "Immunization": ("synthea", "immunizations"),
    "Procedure": ("synthea", "procedures"),
    "MedicationRequest": ("synthea", "medications"),
    "Consent": ("consents", "consents"),
}
"""FHIR resource type -> (declared source, table) whose raw dataset its rows feed. A FHIR batch carries
no ``payers`` table (payers come from Synthea's ``payers.csv``); ``PAYER`` columns stay empty."""

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
US_SSN = "http://hl7.org/fhir/sid/us-ssn"
US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
US_CORE_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
GEOLOCATION = "http://hl7.org/fhir/StructureDefinition/geolocation"
CARECAST_FHIR = "https://carecast.example.org/fhir"
CONSENT_CHANNEL = f"{CARECAST_FHIR}/StructureDefinition/consent-channel"
"""Extension on Consent, ``valueCode`` email or sms; a Consent without it is read as channel email."""
CONSENT_REMUNERATION = f"{CARECAST_FHIR}/StructureDefinition/consent-remuneration-disclosed"
"""Extension on Consent, ``valueBoolean``: the authorization states the remuneration involved (HIPAA marketing)."""
CONSENT_PURPOSE = f"{CARECAST_FHIR}/CodeSystem/consent-purpose"
"""carecast's purposes as codes (treatment, operations, marketing, fundraising): FHIR has no fundraising code."""

SYSTEM_LABELS = {SNOMED: "SNOMED-CT", LOINC: "LOINC", RXNORM: "RxNorm", CVX: "CVX", ICD10CM: "ICD-10-CM"}
"""Coding system URI -> the label Synthea's CSV writes in ``SYSTEM`` (other URIs are written as given)."""

GENDERS = {"male": "M", "female": "F"}
"""FHIR administrative gender -> Synthea GENDER; other and unknown stay empty (the row is quarantined)."""

RACES = {
    "2106-3": "white",
    "2054-5": "black",
    "2028-9": "asian",
    "1002-5": "native",
    "2076-8": "hawaiian",
    "2131-1": "other",
}
"""OMB race category (US Core ``ombCategory``, CDC Race & Ethnicity codes) -> Synthea RACE."""
RACE_TEXTS = {
    "white": "white",
    "black or african american": "black",
    "black": "black",
    "asian": "asian",
    "american indian or alaska native": "native",
    "native hawaiian or other pacific islander": "hawaiian",
    "other": "other",
    "other race": "other",
}
ETHNICITIES = {"2135-2": "hispanic", "2186-5": "nonhispanic"}
ETHNICITY_TEXTS = {"hispanic or latino": "hispanic", "not hispanic or latino": "nonhispanic"}

ENCOUNTER_CLASSES = {
    "EMER": "emergency",
    "IMP": "inpatient",
    "ACUTE": "inpatient",
    "NONAC": "inpatient",
    "HH": "home",
    "VR": "virtual",
    "SS": "outpatient",
    "OBSENC": "outpatient",
    "PRENC": "outpatient",
    "FLD": "ambulatory",
    "AMB": "ambulatory",
}
"""HL7 v3 ActCode encounter class -> Synthea ENCOUNTERCLASS (``AMB`` refined by the encounter type below)."""
CARECAST_ENCOUNTER_CLASSES = (
    "wellness",
    "ambulatory",
    "outpatient",
    "inpatient",
    "emergency",
    "urgentcare",
    "home",
    "hospice",
    "snf",
    "virtual",
)
"""A ``class.code`` that already is one of Synthea's classes (a local code system) is taken as it is."""
WELLNESS_ENCOUNTER_TYPES = ("162673000", "410620009", "444971000124105")
"""SNOMED encounter types of a wellness visit: general examination of patient, well child visit, annual
wellness visit. Synthea's FHIR exporter writes its wellness, ambulatory, outpatient and urgent care
encounters all as class AMB; the type is what tells a wellness visit apart."""
URGENT_CARE_ENCOUNTER_TYPES = ("702927004",)
"""SNOMED encounter type of an urgent care visit (urgent care clinic)."""

CONSENT_PURPOSES = {
    "TREAT": "treatment",
    "ETREAT": "treatment",
    "HOPERAT": "operations",
    "HMARKT": "marketing",
    "treatment": "treatment",
    "operations": "operations",
    "marketing": "marketing",
    "fundraising": "fundraising",
}
"""Purpose codes accepted on ``Consent.provision.purpose`` (then ``Consent.category``): HL7 v3 PurposeOfUse
(TREAT, ETREAT, HOPERAT, HMARKT) and carecast's own (``CONSENT_PURPOSE``). Anything else leaves purpose
empty, so the record is quarantined rather than guessed."""
CONSENT_CHANNELS = ("email", "sms")

SKIPPED_STATUSES: dict[str, tuple[str, ...]] = {
    "Encounter": ("planned", "cancelled", "entered-in-error"),
    "Observation": ("cancelled", "entered-in-error"),
    "Immunization": ("not-done", "entered-in-error"),
    "Procedure": ("preparation", "not-done", "entered-in-error"),
    "MedicationRequest": ("cancelled", "draft", "entered-in-error"),
    "Consent": ("draft", "proposed"),
}
"""Resources left out because their status says the event did not happen (or not yet), or is void.
Conditions are left out when their ``verificationStatus`` is refuted or entered-in-error. A Consent
``entered-in-error`` is kept, revoked when signed: consents update by id, and a void record must
replace a copy loaded earlier rather than leave it in force."""
SKIPPED_CONDITION_VERIFICATIONS = ("refuted", "entered-in-error")

US_STATES = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California", "CO": "Colorado",
    "CT": "Connecticut", "DE": "Delaware", "DC": "District of Columbia", "FL": "Florida", "GA": "Georgia",
    "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois", "IN": "Indiana", "IA": "Iowa", "KS": "Kansas",
    "KY": "Kentucky", "LA": "Louisiana", "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts",
    "MI": "Michigan", "MN": "Minnesota", "MS": "Mississippi", "MO": "Missouri", "MT": "Montana",
    "NE": "Nebraska", "NV": "Nevada", "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico",
    "NY": "New York", "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma",
    "OR": "Oregon", "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota",
    "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont", "VA": "Virginia", "WA": "Washington",
    "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming", "AS": "American Samoa", "GU": "Guam",
    "MP": "Northern Mariana Islands", "PR": "Puerto Rico", "VI": "U.S. Virgin Islands",
}  # fmt: skip
"""US Core writes ``address.state`` as the USPS abbreviation; Synthea's CSV has the state's name."""

KNOWN_RESOURCE_TYPES = frozenset(
    (*RESOURCE_TABLES, "Bundle", "Organization", "Practitioner", "PractitionerRole", "Location", "Coverage",
     "Claim", "ExplanationOfBenefit", "DiagnosticReport", "DocumentReference", "AllergyIntolerance", "CarePlan",
     "CareTeam", "Device", "ImagingStudy", "Medication", "MedicationAdministration", "MedicationStatement",
     "Provenance", "SupplyDelivery", "Goal", "Group", "RelatedPerson")
)  # fmt: skip
"""Resource type names an error may repeat (a sender's resourceType is repeated only if it is one of these)."""

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"

# -- FHIR data types, as schemas of only the elements the mapping reads ----------------------------
# Leaves have FHIR's JSON types: strings (code, id, uri, date, dateTime, ...), decimals and integers as
# JSON numbers, booleans. Written as Polars types; the parser gets them as the Arrow schema they convert to.

_S = pl.String
_F = pl.Float64
_B = pl.Boolean
_CODING = pl.Struct({"system": _S, "code": _S, "display": _S})
_CONCEPT = pl.Struct({"coding": pl.List(_CODING), "text": _S})
_REFERENCE = pl.Struct({"reference": _S, "display": _S, "identifier": pl.Struct({"system": _S, "value": _S})})
_PERIOD = pl.Struct({"start": _S, "end": _S})
_QUANTITY = pl.Struct({"value": _F, "unit": _S, "code": _S})
_META = pl.Struct({"lastUpdated": _S})
_EXTENSION_VALUES = {"valueString": _S, "valueCode": _S, "valueDecimal": _F, "valueBoolean": _B, "valueCoding": _CODING}
_EXTENSIONS = pl.List(pl.Struct({"url": _S, **_EXTENSION_VALUES}))
_COMPLEX_EXTENSIONS = pl.List(pl.Struct({"url": _S, **_EXTENSION_VALUES, "extension": _EXTENSIONS}))
_ADDRESS = pl.Struct(
    {
        "use": _S,
        "text": _S,
        "line": pl.List(_S),
        "city": _S,
        "district": _S,
        "state": _S,
        "postalCode": _S,
        "country": _S,
        "extension": _COMPLEX_EXTENSIONS,
    }
)
_OBSERVATION_VALUES = {
    "valueQuantity": _QUANTITY,
    "valueCodeableConcept": _CONCEPT,
    "valueString": _S,
    "valueBoolean": _B,
    "valueInteger": _F,
    "valueDateTime": _S,
    "valueTime": _S,
}
_COMMON = {"resourceType": _S, "id": _S, "meta": _META, "status": _S}

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "Patient": {
        **_COMMON,
        "identifier": pl.List(pl.Struct({"system": _S, "value": _S, "type": _CONCEPT})),
        "name": pl.List(
            pl.Struct({"use": _S, "family": _S, "given": pl.List(_S), "prefix": pl.List(_S), "suffix": pl.List(_S)})
        ),
        "gender": _S,
        "birthDate": _S,
        "deceasedDateTime": _S,
        "deceasedBoolean": _B,
        "address": pl.List(_ADDRESS),
        "maritalStatus": _CONCEPT,
        "extension": pl.List(
            pl.Struct(
                {
                    "url": _S,
                    **_EXTENSION_VALUES,
                    "valueAddress": pl.Struct({"text": _S, "city": _S, "state": _S, "country": _S}),
                    "extension": _EXTENSIONS,
                }
            )
        ),
    },
    "Encounter": {
        **_COMMON,
        "class": _CODING,
        "type": pl.List(_CONCEPT),
        "subject": _REFERENCE,
        "participant": pl.List(pl.Struct({"type": pl.List(_CONCEPT), "individual": _REFERENCE})),
        "period": _PERIOD,
        "reasonCode": pl.List(_CONCEPT),
        "serviceProvider": _REFERENCE,
    },
    "Condition": {
        **_COMMON,
        "verificationStatus": _CONCEPT,
        "code": _CONCEPT,
        "subject": _REFERENCE,
        "encounter": _REFERENCE,
        "onsetDateTime": _S,
        "onsetPeriod": _PERIOD,
        "recordedDate": _S,
        "abatementDateTime": _S,
        "abatementPeriod": _PERIOD,
    },
    "Observation": {
        **_COMMON,
        "category": pl.List(_CONCEPT),
        "code": _CONCEPT,
        "subject": _REFERENCE,
        "encounter": _REFERENCE,
        "effectiveDateTime": _S,
        "effectiveInstant": _S,
        "effectivePeriod": _PERIOD,
        **_OBSERVATION_VALUES,
        "component": pl.List(pl.Struct({"code": _CONCEPT, **_OBSERVATION_VALUES})),
    },
    "Immunization": {
        **_COMMON,
        "vaccineCode": _CONCEPT,
        "patient": _REFERENCE,
        "encounter": _REFERENCE,
        "occurrenceDateTime": _S,
    },
    "Procedure": {
        **_COMMON,
        "code": _CONCEPT,
        "subject": _REFERENCE,
        "encounter": _REFERENCE,
        "performedDateTime": _S,
        "performedPeriod": _PERIOD,
        "reasonCode": pl.List(_CONCEPT),
        "reasonReference": pl.List(_REFERENCE),
    },
    "MedicationRequest": {
        **_COMMON,
        "medicationCodeableConcept": _CONCEPT,
        "medicationReference": _REFERENCE,
        "subject": _REFERENCE,
        "encounter": _REFERENCE,
        "authoredOn": _S,
        "dispenseRequest": pl.Struct({"validityPeriod": _PERIOD}),
        "reasonCode": pl.List(_CONCEPT),
        "reasonReference": pl.List(_REFERENCE),
    },
    "Consent": {
        **_COMMON,
        "category": pl.List(_CONCEPT),
        "patient": _REFERENCE,
        "dateTime": _S,
        "sourceAttachment": pl.Struct({"url": _S, "title": _S}),
        "sourceReference": _REFERENCE,
        "provision": pl.Struct({"type": _S, "period": _PERIOD, "purpose": pl.List(_CODING)}),
        "extension": _EXTENSIONS,
    },
}
"""Per resource type, the elements read (every other element of a resource is ignored)."""


# -- Expressions over FHIR data types --------------------------------------------------------------

_E = pl.element()


def _blank_to_null(expr: pl.Expr) -> pl.Expr:
    expr = expr.str.strip_chars()
    return pl.when(expr == "").then(None).otherwise(expr)


def _per_value(expr: pl.Expr, transform: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """``transform`` of a string column, computed once per distinct value and joined back.

    References and instants repeat across resources (a patient's id in every one of their observations,
    an encounter's time in each of its results), so this is several times faster than transforming
    every row. Still column-wise: one hash join per column, no Python per value.
    """

    def run(values: pl.Series) -> pl.Series:
        frame = values.to_frame("raw")
        distinct = frame.unique().with_columns(transform(pl.col("raw")).alias("out"))
        return frame.join(distinct, on="raw", how="left", nulls_equal=True, maintain_order="left")["out"]

    return expr.map_batches(run, return_dtype=pl.String)


def _utc(raw: pl.Expr) -> pl.Expr:
    """The UTC instant a FHIR dateTime/instant means; null unless it has a time.

    Column-wise string slicing rather than a format with ``%z`` (three times faster): the local part is
    ``YYYY-MM-DDTHH:MM:SS``, then optional fractions, then ``Z``, ``+hh:mm`` or ``-hh:mm`` (none: UTC).
    """
    local = raw.str.slice(0, 19).str.to_datetime("%Y-%m-%dT%H:%M:%S", strict=False, time_unit="us")
    zone = raw.str.slice(19).str.strip_chars_start(".0123456789")
    sign = pl.when(zone.str.starts_with("-")).then(-1).otherwise(1)
    hours = zone.str.slice(1, 2).cast(pl.Int32, strict=False)
    minutes = zone.str.slice(4, 2).cast(pl.Int32, strict=False)
    offset = (
        pl.when(zone.is_in(["Z", "z", ""]))
        .then(0)
        .when((zone.str.len_bytes() == 6) & (zone.str.slice(3, 1) == ":"))
        .then(sign * (hours * 60 + minutes))
    )
    return local - pl.duration(minutes=offset)


def _timestamp(expr: pl.Expr) -> pl.Expr:
    """FHIR dateTime/instant -> ``YYYY-MM-DDTHH:MM:SSZ`` in UTC (a time without offset is taken as UTC).

    A bare date stays ``YYYY-MM-DD`` (the validation reads it as midnight); anything else that does not
    parse is passed through unchanged, for the validation to quarantine.
    """

    def transform(raw: pl.Expr) -> pl.Expr:
        return pl.coalesce(_utc(raw).dt.strftime("%Y-%m-%dT%H:%M:%SZ"), raw)

    return _per_value(_blank_to_null(expr), transform)


def _date(expr: pl.Expr) -> pl.Expr:
    """FHIR date/dateTime -> ``YYYY-MM-DD``: the UTC date of an instant with a time, a bare date as it is."""

    def transform(raw: pl.Expr) -> pl.Expr:
        return pl.coalesce(_utc(raw).dt.strftime("%Y-%m-%d"), raw)

    return _per_value(_blank_to_null(expr), transform)


def _reference_id(reference: pl.Expr) -> pl.Expr:
    """The logical id a Reference points to.

    ``Patient/<id>``, an absolute ``.../Patient/<id>`` (``/_history/<n>`` ignored), ``urn:uuid:<id>``,
    a conditional ``Patient?identifier=<system>|<value>`` (the value: Synthea's own bulk export refers
    to organizations and practitioners this way), or else the reference's ``identifier.value``. A
    contained (``#...``) or other conditional reference resolves to nothing.
    """

    def transform(ref: pl.Expr) -> pl.Expr:
        plain = ref.str.replace("%7C", "|", literal=True).str.replace("%7c", "|", literal=True)
        last = plain.str.replace(r"/_history/[^/]*$", "").str.extract(r"([^/|:=]+)$")
        conditional = ref.str.contains("?", literal=True)
        unusable = ref.str.starts_with("#") | (conditional & ref.str.contains("?identifier=", literal=True).not_())
        return pl.when(unusable.not_()).then(last)

    resolved = _per_value(_blank_to_null(reference.struct.field("reference")), transform)
    return pl.coalesce(resolved, _blank_to_null(reference.struct.field("identifier").struct.field("value")))


def _coding(concept: pl.Expr, system: str | None = None) -> pl.Expr:
    """A CodeableConcept's coding in ``system`` if it has one, else its first coding."""
    codings = concept.struct.field("coding")
    first = codings.list.first()
    if system is None:
        return first
    return pl.coalesce(codings.list.eval(_E.filter(_E.struct.field("system") == system)).list.first(), first)


def _coded(concept: pl.Expr, system: str | None = None) -> pl.Expr:
    """The coding a CodeableConcept is read by (``system`` preferred, else the first), as a struct of
    ``code``, ``display`` (else the concept's text) and ``system``. Computed once into a column of its own,
    then read field by field with ``_code_fields`` (Polars does not share the list.eval between expressions)."""
    both = pl.struct(chosen=_coding(concept, system), text=concept.struct.field("text"))
    chosen = pl.field("chosen")
    return both.struct.with_fields(
        code=_blank_to_null(chosen.struct.field("code")),
        display=pl.coalesce(_blank_to_null(chosen.struct.field("display")), _blank_to_null(pl.field("text"))),
        system=chosen.struct.field("system"),
    )


def _code_fields(column: str, code: str, description: str, system_column: str | None = None) -> dict[str, pl.Expr]:
    coded = pl.col(column)
    fields = {code: coded.struct.field("code"), description: coded.struct.field("display")}
    if system_column:
        uri = coded.struct.field("system")
        fields[system_column] = uri.replace_strict(SYSTEM_LABELS, default=uri)
    return fields


def _extension(extensions: pl.Expr, url: str) -> pl.Expr:
    return extensions.list.eval(_E.filter(_E.struct.field("url") == url)).list.first()


def _lookup(expr: pl.Expr, mapping: dict[str, str]) -> pl.Expr:
    return expr.replace_strict(mapping, default=None, return_dtype=pl.String)


def _status_is(values: tuple[str, ...]) -> pl.Expr:
    return pl.col("status").str.strip_chars().str.to_lowercase().is_in(list(values)).fill_null(False)


# -- Mappings per resource type --------------------------------------------------------------------


def _patients(frame: pl.LazyFrame) -> pl.LazyFrame:
    names = pl.col("name")
    use = _E.struct.field("use")
    official = names.list.eval(_E.filter(use == "official")).list.first()
    usual = names.list.eval(_E.filter(use.is_null() | (use == "usual"))).list.first()
    current = names.list.eval(_E.filter(use.is_in(["maiden", "old", "nickname", "anonymous"]).not_())).list.first()
    addresses = pl.col("address")
    home = addresses.list.eval(_E.filter(_E.struct.field("use") == "home")).list.first()
    extensions = pl.col("extension")
    # Each element picked once into a column of its own, then read field by field.
    picked = frame.with_columns(
        __name=pl.coalesce(official, usual, current, names.list.first()),
        __maiden=names.list.eval(_E.filter(use == "maiden")).list.first(),
        __address=pl.coalesce(home, addresses.list.first()),
        __race=_extension(extensions, US_CORE_RACE).struct.field("extension"),
        __ethnicity=_extension(extensions, US_CORE_ETHNICITY).struct.field("extension"),
        __birthplace=_extension(extensions, BIRTH_PLACE).struct.field("valueAddress"),
    ).with_columns(
        __geolocation=_extension(pl.col("__address").struct.field("extension"), GEOLOCATION).struct.field("extension")
    )
    name, address = pl.col("__name"), pl.col("__address")
    birthplace, geolocation = pl.col("__birthplace"), pl.col("__geolocation")
    given = name.struct.field("given")

    identifiers = pl.col("identifier")

    def identifier(type_code: str, system: str | None = None) -> pl.Expr:
        codes = _E.struct.field("type").struct.field("coding").list.eval(_E.struct.field("code"))
        typed = codes.list.contains(type_code).fill_null(False)
        wanted = typed | (_E.struct.field("system") == system).fill_null(False) if system else typed
        return _blank_to_null(identifiers.list.eval(_E.filter(wanted).struct.field("value")).list.first())

    def category(column: str, codes: dict[str, str], texts: dict[str, str]) -> pl.Expr:
        omb = _extension(pl.col(column), "ombCategory").struct.field("valueCoding")
        text = _extension(pl.col(column), "text").struct.field("valueString")
        return pl.coalesce(
            _lookup(omb.struct.field("code"), codes),
            _lookup(text.str.to_lowercase(), texts),
            _lookup(omb.struct.field("display").str.to_lowercase(), texts),
            _blank_to_null(text).str.to_lowercase(),
        )

    birthplace_parts = pl.concat_str(
        [birthplace.struct.field(part) for part in ("city", "state", "country")], separator=" ", ignore_nulls=True
    )
    state = _blank_to_null(address.struct.field("state"))
    deceased = pl.col("deceasedBoolean").fill_null(False)
    known_dead_by = _date(pl.col("meta").struct.field("lastUpdated"))

    return picked.select(
        Id=_blank_to_null(pl.col("id")),
        BIRTHDATE=_date(pl.col("birthDate")),
        # deceasedBoolean without a date: dead by the record's last update at the latest; with no
        # lastUpdated either, a marker that fails the date check so the patient is quarantined, never loaded alive.
        DEATHDATE=pl.coalesce(
            _date(pl.col("deceasedDateTime")), pl.when(deceased).then(pl.coalesce(known_dead_by, pl.lit("unknown")))
        ),
        SSN=identifier("SS", US_SSN),
        DRIVERS=identifier("DL"),
        PASSPORT=identifier("PPN"),
        PREFIX=_blank_to_null(name.struct.field("prefix").list.join(" ")),
        FIRST=_blank_to_null(given.list.first()),
        MIDDLE=_blank_to_null(given.list.slice(1).list.join(" ")),
        LAST=_blank_to_null(name.struct.field("family")),
        SUFFIX=_blank_to_null(name.struct.field("suffix").list.join(" ")),
        MAIDEN=_blank_to_null(pl.col("__maiden").struct.field("family")),
        MARITAL=_blank_to_null(_coding(pl.col("maritalStatus")).struct.field("code")),
        RACE=category("__race", RACES, RACE_TEXTS),
        ETHNICITY=category("__ethnicity", ETHNICITIES, ETHNICITY_TEXTS),
        GENDER=_lookup(pl.col("gender").str.strip_chars().str.to_lowercase(), GENDERS),
        BIRTHPLACE=pl.coalesce(_blank_to_null(birthplace.struct.field("text")), _blank_to_null(birthplace_parts)),
        ADDRESS=_blank_to_null(address.struct.field("line").list.join(" ")),
        CITY=_blank_to_null(address.struct.field("city")),
        STATE=pl.coalesce(_lookup(state.str.to_uppercase(), US_STATES), state),
        COUNTY=_blank_to_null(address.struct.field("district")),
        ZIP=_blank_to_null(address.struct.field("postalCode")),
        LAT=_extension(geolocation, "latitude").struct.field("valueDecimal").cast(pl.String),
        LON=_extension(geolocation, "longitude").struct.field("valueDecimal").cast(pl.String),
    )


def _encounters(frame: pl.LazyFrame) -> pl.LazyFrame:
    type_code = pl.col("__type").struct.field("code")
    class_code = _blank_to_null(pl.col("class").struct.field("code"))
    mapped = _lookup(class_code.str.to_uppercase(), ENCOUNTER_CLASSES)
    encounter_class = (
        pl.when(class_code.str.to_lowercase().is_in(CARECAST_ENCOUNTER_CLASSES))
        .then(class_code.str.to_lowercase())
        .when((mapped == "ambulatory") & type_code.is_in(WELLNESS_ENCOUNTER_TYPES))
        .then(pl.lit("wellness"))
        .when((mapped == "ambulatory") & type_code.is_in(URGENT_CARE_ENCOUNTER_TYPES))
        .then(pl.lit("urgentcare"))
        .otherwise(mapped)
    )
    participants = pl.col("participant")
    is_primary = _E.struct.field("type").list.eval(_E.struct.field("coding").list.first().struct.field("code"))
    primary = participants.list.eval(_E.filter(is_primary.list.contains("PPRF").fill_null(False))).list.first()
    performer = pl.coalesce(primary, participants.list.first()).struct.field("individual")
    coded = frame.with_columns(
        __type=_coded(pl.col("type").list.first(), SNOMED), __reason=_coded(pl.col("reasonCode").list.first(), SNOMED)
    )
    return coded.select(
        Id=_blank_to_null(pl.col("id")),
        START=_timestamp(pl.col("period").struct.field("start")),
        STOP=_timestamp(pl.col("period").struct.field("end")),
        PATIENT=_reference_id(pl.col("subject")),
        ORGANIZATION=_reference_id(pl.col("serviceProvider")),
        PROVIDER=_reference_id(performer),
        ENCOUNTERCLASS=encounter_class,
        **_code_fields("__type", "CODE", "DESCRIPTION"),
        **_code_fields("__reason", "REASONCODE", "REASONDESCRIPTION"),
    )


def _conditions(frame: pl.LazyFrame) -> pl.LazyFrame:
    coded = frame.filter(_refuted().not_()).with_columns(__code=_coded(pl.col("code"), SNOMED))
    return coded.select(
        START=_date(
            pl.coalesce(pl.col("onsetDateTime"), pl.col("onsetPeriod").struct.field("start"), pl.col("recordedDate"))
        ),
        STOP=_date(pl.coalesce(pl.col("abatementDateTime"), pl.col("abatementPeriod").struct.field("end"))),
        PATIENT=_reference_id(pl.col("subject")),
        ENCOUNTER=_reference_id(pl.col("encounter")),
        **_code_fields("__code", "CODE", "DESCRIPTION", "SYSTEM"),
    )


def _observation_value(field: Callable[[str], pl.Expr]) -> pl.Expr:
    """VALUE/UNITS/TYPE of one observation or component as Synthea writes them, as one struct.

    A Quantity (or an integer) is ``numeric``, its value in Synthea's float form (``127.9``, ``1.0``) and its
    unit (or UCUM code) in UNITS; a CodeableConcept (its text, else the display or code of its first
    coding), string, boolean, dateTime or time is ``text`` without UNITS.
    """
    quantity = field("valueQuantity")
    concept = field("valueCodeableConcept")
    first = concept.struct.field("coding").list.first()
    parts = pl.struct(
        number=pl.coalesce(quantity.struct.field("value"), field("valueInteger")),
        unit=pl.coalesce(_blank_to_null(quantity.struct.field("unit")), _blank_to_null(quantity.struct.field("code"))),
        text=pl.coalesce(
            _blank_to_null(concept.struct.field("text")),
            _blank_to_null(first.struct.field("display")),
            _blank_to_null(first.struct.field("code")),
            _blank_to_null(field("valueString")),
            field("valueBoolean").cast(pl.String),
            _blank_to_null(field("valueDateTime")),
            _blank_to_null(field("valueTime")),
        ),
    )
    numeric = pl.field("number").is_not_null()
    return parts.struct.with_fields(
        VALUE=pl.coalesce(pl.field("number").cast(pl.String), pl.field("text")),
        UNITS=pl.when(numeric).then(pl.field("unit")),
        TYPE=pl.when(numeric).then(pl.lit("numeric")).when(pl.field("text").is_not_null()).then(pl.lit("text")),
    )


_VALUE_FIELDS = {name: pl.col("__value").struct.field(name) for name in ("VALUE", "UNITS", "TYPE")}


def _observations(frame: pl.LazyFrame) -> pl.LazyFrame:
    """One row per observation with a value, and one per component (a blood pressure panel gives two rows,
    systolic and diastolic, as Synthea's CSV does); a panel with neither value nor components gives one
    row without VALUE. Components take the observation's date, patient, encounter and category."""
    common = {
        "DATE": _timestamp(
            pl.coalesce(
                pl.col("effectiveDateTime"), pl.col("effectiveInstant"), pl.col("effectivePeriod").struct.field("start")
            )
        ),
        "PATIENT": _reference_id(pl.col("subject")),
        "ENCOUNTER": _reference_id(pl.col("encounter")),
        "CATEGORY": _blank_to_null(_coding(pl.col("category").list.first()).struct.field("code")),
    }
    own_value = pl.any_horizontal(pl.col(name).is_not_null() for name in _OBSERVATION_VALUES)
    has_components = pl.col("component").list.len().fill_null(0) > 0
    numbered = frame.with_row_index("__row")
    own = (
        numbered.filter(own_value | has_components.not_())
        .with_columns(__code=_coded(pl.col("code"), LOINC), __value=_observation_value(pl.col))
        .select(
            "__row",
            __part=pl.lit(0, dtype=pl.UInt32),
            **common,
            **_code_fields("__code", "CODE", "DESCRIPTION"),
            **_VALUE_FIELDS,
        )
    )
    component = pl.col("component")
    parts = (
        numbered.filter(has_components)
        .select("__row", *(expr.alias(name) for name, expr in common.items()), component)
        .explode("component")
        .filter(component.is_not_null())
        .with_columns(
            __code=_coded(component.struct.field("code"), LOINC), __value=_observation_value(component.struct.field)
        )
        .select(
            "__row",
            pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).over("__row").alias("__part"),
            *common,
            **_code_fields("__code", "CODE", "DESCRIPTION"),
            **_VALUE_FIELDS,
        )
    )
    return pl.concat([own, parts]).sort("__row", "__part").drop("__row", "__part")


def _immunizations(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.with_columns(__code=_coded(pl.col("vaccineCode"), CVX)).select(
        DATE=_timestamp(pl.col("occurrenceDateTime")),
        PATIENT=_reference_id(pl.col("patient")),
        ENCOUNTER=_reference_id(pl.col("encounter")),
        **_code_fields("__code", "CODE", "DESCRIPTION"),
    )


def _procedures(frame: pl.LazyFrame) -> pl.LazyFrame:
    period = pl.col("performedPeriod")
    return _with_reasons(frame.with_columns(__code=_coded(pl.col("code"), SNOMED))).select(
        START=_timestamp(pl.coalesce(period.struct.field("start"), pl.col("performedDateTime"))),
        STOP=_timestamp(period.struct.field("end")),
        PATIENT=_reference_id(pl.col("subject")),
        ENCOUNTER=_reference_id(pl.col("encounter")),
        **_code_fields("__code", "CODE", "DESCRIPTION", "SYSTEM"),
        **_REASON_FIELDS,
    )


def _medications(frame: pl.LazyFrame) -> pl.LazyFrame:
    """STOP is ``dispenseRequest.validityPeriod.end`` of a stopped or completed request (an active one has
    no STOP). A ``medicationReference`` gives only its display: the code is in the Medication resource."""
    status = pl.col("status").str.to_lowercase()
    codes = _code_fields("__code", "CODE", "DESCRIPTION")
    codes["DESCRIPTION"] = pl.coalesce(
        codes["DESCRIPTION"], _blank_to_null(pl.col("medicationReference").struct.field("display"))
    )
    return _with_reasons(frame.with_columns(__code=_coded(pl.col("medicationCodeableConcept"), RXNORM))).select(
        START=_timestamp(pl.col("authoredOn")),
        STOP=pl.when(status.is_in(["stopped", "completed"])).then(
            _timestamp(pl.col("dispenseRequest").struct.field("validityPeriod").struct.field("end"))
        ),
        PATIENT=_reference_id(pl.col("subject")),
        ENCOUNTER=_reference_id(pl.col("encounter")),
        **codes,
        **_REASON_FIELDS,
    )


def _with_reasons(frame: pl.LazyFrame) -> pl.LazyFrame:
    """REASONCODE/REASONDESCRIPTION from ``reasonCode[0]`` (SNOMED preferred). A ``reasonReference`` to a
    Condition gives only its display: the code lives in the Condition resource (another file)."""
    return frame.with_columns(__reason=_coded(pl.col("reasonCode").list.first(), SNOMED))


_REASON_FIELDS = {
    "REASONCODE": pl.col("__reason").struct.field("code"),
    "REASONDESCRIPTION": pl.coalesce(
        pl.col("__reason").struct.field("display"),
        _blank_to_null(pl.col("reasonReference").list.first().struct.field("display")),
    ),
}


def _consents(frame: pl.LazyFrame) -> pl.LazyFrame:
    """carecast's consents table from FHIR Consent (rules in docs/formats.md, "FHIR Bulk Data").

    signed_at is ``dateTime`` (else the provision's start), expires_at the provision's end. revoked_at:
    a ``deny`` provision (an opt-out or refusal), a ``rejected`` and an ``entered-in-error`` consent are
    revoked when signed, so they never authorize anything; an ``inactive`` consent was revoked at
    ``meta.lastUpdated`` (FHIR has no revocation time; without lastUpdated, when signed).
    """
    provision = pl.col("provision")
    status = pl.col("status").str.strip_chars().str.to_lowercase()
    signed = _timestamp(pl.coalesce(pl.col("dateTime"), provision.struct.field("period").struct.field("start")))
    denies = provision.struct.field("type").str.strip_chars().str.to_lowercase() == "deny"
    last_updated = _timestamp(pl.col("meta").struct.field("lastUpdated"))
    revoked = (
        pl.when(denies.fill_null(False) | status.is_in(["rejected", "entered-in-error"]))
        .then(signed)
        .when(status == "inactive")
        .then(pl.coalesce(last_updated, signed))
    )
    purposes = provision.struct.field("purpose").list.eval(_lookup(_E.struct.field("code"), CONSENT_PURPOSES))
    categories = pl.col("category").list.eval(
        _lookup(_E.struct.field("coding").list.first().struct.field("code"), CONSENT_PURPOSES)
    )
    extensions = pl.col("extension")
    channel = _extension(extensions, CONSENT_CHANNEL).struct.field("valueCode").str.strip_chars().str.to_lowercase()
    remuneration = _extension(extensions, CONSENT_REMUNERATION).struct.field("valueBoolean")
    return frame.select(
        consent_id=_blank_to_null(pl.col("id")),
        patient_id=_reference_id(pl.col("patient")),
        purpose=pl.coalesce(purposes.list.drop_nulls().list.first(), categories.list.drop_nulls().list.first()),
        channel=pl.when(channel.is_null()).then(pl.lit("email")).when(channel.is_in(CONSENT_CHANNELS)).then(channel),
        signed_at=signed,
        expires_at=_timestamp(provision.struct.field("period").struct.field("end")),
        revoked_at=revoked,
        remuneration_disclosed=remuneration.cast(pl.String),
        document_id=pl.coalesce(
            _reference_id(pl.col("sourceReference")), _blank_to_null(pl.col("sourceAttachment").struct.field("url"))
        ),
    )


@dataclass(frozen=True)
class _Mapping:
    build: Callable[[pl.LazyFrame], pl.LazyFrame]
    schema: dict[str, pl.DataType]
    skipped: tuple[str, ...]


MAPPINGS: dict[str, _Mapping] = {
    resource_type: _Mapping(build, SCHEMAS[resource_type], SKIPPED_STATUSES.get(resource_type, ()))
    for resource_type, build in (
        ("Patient", _patients),
        ("Encounter", _encounters),
        ("Condition", _conditions),
        ("Observation", _observations),
        ("Immunization", _immunizations),
        ("Procedure", _procedures),
        ("MedicationRequest", _medications),
        ("Consent", _consents),
    )
}


# -- Reading a file --------------------------------------------------------------------------------


def read_fhir_resource(
    data: bytes, name: str, resource_type: str, *, counts: dict[str, int] | None = None
) -> pl.DataFrame:
    """Map one FHIR Bulk Data NDJSON file (``<resource_type>.ndjson``, gzipped or not) to its raw table.

    ``data`` is the file's bytes, already decrypted if it was sealed; ``name`` is what errors call the
    file. Returns an all-string frame with the Synthea (or consents) column names of
    ``RESOURCE_TABLES[resource_type]``, one row per resource (per component for a multi-component
    Observation), in file order. When ``counts`` is given it receives ``resources`` (in the file),
    ``resources_skipped`` (left out for their status) and ``rows``. Raises ``ExtractError`` naming the file,
    the line and the problem, never a value.
    """
    mapping = MAPPINGS.get(resource_type)
    if mapping is None:
        raise ExtractError(f"{name}: {resource_type!r} is not a FHIR resource type carecast maps")
    text = _plain_bytes(data, name)
    resources = _parse(text, name, mapping.schema)
    _check_resource_types(resources, text, name, resource_type)
    skipped = _status_is(mapping.skipped) if mapping.skipped else pl.lit(False)
    frame = mapping.build(resources.lazy().filter(skipped.not_())).collect()
    if counts is not None:
        counts["resources"] = resources.height
        counts["resources_skipped"] = resources.select(skipped.sum()).item() + _skipped_conditions(resources)
        counts["rows"] = frame.height
    return frame.select(pl.all().cast(pl.String))


def _skipped_conditions(resources: pl.DataFrame) -> int:
    if "verificationStatus" not in resources.columns:
        return 0
    return resources.select(_refuted().sum()).item()


def _refuted() -> pl.Expr:
    verification = _coding(pl.col("verificationStatus")).struct.field("code").str.to_lowercase()
    return verification.is_in(SKIPPED_CONDITION_VERIFICATIONS).fill_null(False)


def _plain_bytes(data: bytes, name: str) -> bytes:
    if not data:
        raise ExtractError(f"{name}: file is empty")
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            raise ExtractError(f"{name}: not a valid gzip file (truncated or corrupt)") from None
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    if not data or data.isspace():  # isspace stops at the first other byte: no copy of the file
        raise ExtractError(f"{name}: file holds no resources")
    if not data.isascii():  # the parser does not check UTF-8 itself
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            raise ExtractError(f"{name}: line {line}: not valid UTF-8 (FHIR NDJSON is UTF-8)") from None
    return data


BLOCK_SIZE = 16 << 20
"""Bytes the parser hands each thread at a time; a longer line (a resource with a large attachment) is
read in one block on a second attempt."""


def _arrow_type(dtype: pl.DataType) -> pa.DataType:
    if isinstance(dtype, pl.Struct):
        return pa.struct([(field.name, _arrow_type(field.dtype)) for field in dtype.fields])
    if isinstance(dtype, pl.List):
        return pa.list_(_arrow_type(dtype.inner))
    return {pl.String: pa.string(), pl.Float64: pa.float64(), pl.Boolean: pa.bool_()}[dtype]


def _parse(text: bytes, name: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Every resource's elements in ``schema`` (all others ignored), parsed column-wise by Arrow's
    multi-threaded JSON reader (nested lists of structs are ten times faster there than in Polars')."""
    options = pajson.ParseOptions(
        explicit_schema=pa.schema([(key, _arrow_type(dtype)) for key, dtype in schema.items()]),
        unexpected_field_behavior="ignore",
    )
    table = None
    for block_size in (BLOCK_SIZE, len(text) + 1) if len(text) >= BLOCK_SIZE else (BLOCK_SIZE,):
        try:
            table = pajson.read_json(io.BytesIO(text), pajson.ReadOptions(block_size=block_size), options)
            break
        except (pa.ArrowException, UnicodeError, OSError, ValueError):
            continue  # the message can quote the offending value: find the line ourselves below
    lines = text.count(b"\n") + (not text.endswith(b"\n"))
    if table is None or table.num_rows > lines:  # more rows than lines: two resources on one line
        problem = _locate_problem(text, schema) or "cannot be parsed as FHIR NDJSON"
        raise ExtractError(f"{name}: {problem}")
    return pl.from_arrow(table)


def _lines(text: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) for every non-blank line, as read_ndjson counts records."""
    for number, line in enumerate(text.split(b"\n"), start=1):
        if line.strip():
            yield number, line


def _locate_problem(text: bytes, schema: dict[str, pl.DataType]) -> str | None:
    """The first line that is not one JSON object, or does not have the FHIR structure read (UTF-8 is checked
    before parsing)."""
    decoder = json.JSONDecoder()
    for number, line in _lines(text):
        try:
            resource, end = decoder.raw_decode(line.decode("utf-8").strip())
        except json.JSONDecodeError as error:
            # The decoder's message names the kind of error and a column, never the text.
            return f"line {number}: invalid JSON ({error.msg} at column {error.colno})"
        if end != len(line.decode("utf-8").strip()):
            return f"line {number}: more than one JSON value on the line (one resource per line)"
        if not isinstance(resource, dict):
            return f"line {number}: not a JSON object (one resource per line)"
        path = _misfit(resource, pl.Struct(schema))
        if path is not None:
            return f"line {number}: element {path!r} does not have the type FHIR R4 defines"
    return None


_JSON_TYPES: dict[pl.DataType, tuple[type, ...]] = {pl.String: (str,), pl.Float64: (int, float), pl.Boolean: (bool,)}


def _misfit(value: object, dtype: pl.DataType, path: str = "") -> str | None:
    """The path of the first element whose JSON type does not fit the schema (element names only)."""
    if value is None:
        return None
    if isinstance(dtype, pl.Struct):
        if not isinstance(value, dict):
            return path or "(resource)"
        for field in dtype.fields:
            found = _misfit(value.get(field.name), field.dtype, f"{path}.{field.name}" if path else field.name)
            if found is not None:
                return found
        return None
    if isinstance(dtype, pl.List):
        if not isinstance(value, list):
            return path
        for item in value:
            found = _misfit(item, dtype.inner, f"{path}[]")
            if found is not None:
                return found
        return None
    fits = isinstance(value, _JSON_TYPES[dtype]) and not (dtype != pl.Boolean and isinstance(value, bool))
    return None if fits else path


def _check_resource_types(resources: pl.DataFrame, text: bytes, name: str, resource_type: str) -> None:
    wrong = resources.select(pl.col("resourceType").ne_missing(resource_type).arg_true().first()).item()
    if wrong is None:
        return
    found = resources["resourceType"][wrong]
    line = next(number for index, (number, _) in enumerate(_lines(text)) if index == wrong)
    if found is None:
        problem = "has no resourceType"
    elif found in KNOWN_RESOURCE_TYPES:
        problem = f"holds a {found} resource"
    else:  # whatever else a sender wrote there is not repeated
        problem = "holds a resource of another type"
    raise ExtractError(f"{name}: line {line}: {problem}, but the file is for {resource_type}")
