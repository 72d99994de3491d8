"""Code tables and lookup lists for the synthetic generator.

Clinical codes are real (SNOMED CT, LOINC, CVX, RxNorm) and descriptions follow the Synthea
export's wording, including its habit of replacing commas with two spaces.
"""

from __future__ import annotations

from typing import NamedTuple


class City(NamedTuple):
    name: str
    county: str
    zip_code: str
    lat: float
    lon: float
    weight: float


# Massachusetts only, like the Synthea sample; weights roughly follow population (thousands).
MA_CITIES: tuple[City, ...] = (
    City("Boston", "Suffolk County", "02108", 42.3588, -71.0638, 90),
    City("Boston", "Suffolk County", "02118", 42.3364, -71.0730, 150),
    City("Boston", "Suffolk County", "02124", 42.2861, -71.0653, 180),
    City("Boston", "Suffolk County", "02130", 42.3097, -71.1146, 120),
    City("Boston", "Suffolk County", "02135", 42.3496, -71.1535, 135),
    City("Worcester", "Worcester County", "01608", 42.2626, -71.8023, 206),
    City("Springfield", "Hampden County", "01103", 42.1015, -72.5898, 155),
    City("Cambridge", "Middlesex County", "02139", 42.3647, -71.1042, 118),
    City("Lowell", "Middlesex County", "01852", 42.6334, -71.3162, 115),
    City("Brockton", "Plymouth County", "02301", 42.0834, -71.0184, 105),
    City("Quincy", "Norfolk County", "02169", 42.2529, -71.0023, 101),
    City("Lynn", "Essex County", "01902", 42.4668, -70.9495, 101),
    City("New Bedford", "Bristol County", "02740", 41.6362, -70.9342, 101),
    City("Fall River", "Bristol County", "02720", 41.7015, -71.1550, 94),
    City("Lawrence", "Essex County", "01840", 42.7070, -71.1631, 89),
    City("Newton", "Middlesex County", "02458", 42.3370, -71.2092, 88),
    City("Somerville", "Middlesex County", "02143", 42.3876, -71.0995, 81),
    City("Framingham", "Middlesex County", "01702", 42.2793, -71.4162, 72),
    City("Haverhill", "Essex County", "01830", 42.7762, -71.0773, 67),
    City("Malden", "Middlesex County", "02148", 42.4251, -71.0662, 66),
    City("Waltham", "Middlesex County", "02451", 42.3765, -71.2356, 65),
    City("Brookline", "Norfolk County", "02445", 42.3318, -71.1212, 63),
    City("Plymouth", "Plymouth County", "02360", 41.9584, -70.6673, 61),
    City("Taunton", "Bristol County", "02780", 41.9001, -71.0898, 59),
    City("Weymouth", "Norfolk County", "02188", 42.2212, -70.9395, 57),
    City("Chicopee", "Hampden County", "01020", 42.1487, -72.6079, 55),
    City("Barnstable", "Barnstable County", "02630", 41.7003, -70.3002, 49),
    City("Salem", "Essex County", "01970", 42.5195, -70.8967, 44),
    City("Pittsfield", "Berkshire County", "01201", 42.4501, -73.2454, 43),
    City("Fitchburg", "Worcester County", "01420", 42.5834, -71.8023, 41),
    City("Northampton", "Hampshire County", "01060", 42.3251, -72.6412, 29),
    City("Greenfield", "Franklin County", "01301", 42.5876, -72.5995, 17),
    City("Nantucket", "Nantucket County", "02554", 41.2835, -70.0995, 14),
    City("Edgartown", "Dukes County", "02539", 41.3890, -70.5134, 4),
)

FOREIGN_BIRTHPLACES: tuple[str, ...] = (
    "San Juan  Puerto Rico  PR",
    "Santo Domingo  National District  DO",
    "Port-au-Prince  Ouest  HT",
    "Sao Paulo  Sao Paulo  BR",
    "Guangzhou  Guangdong Province  CN",
    "Ho Chi Minh City  Ho Chi Minh  VN",
    "Kingston  Surrey  JM",
    "Mumbai  Maharashtra  IN",
)

FIRST_NAMES_MALE: tuple[str, ...] = (
    "Maynard",
    "Curt",
    "Lonnie",
    "Jerome",
    "Raul",
    "Dewitt",
    "Emmett",
    "Hershel",
    "Jamal",
    "Lyman",
    "Otis",
    "Rudolph",
    "Stanton",
    "Tyrone",
    "Wilbert",
    "Abdul",
    "Benito",
    "Carlos",
    "Darrin",
    "Efrain",
    "Gustavo",
    "Hung",
    "Ismael",
    "Jody",
    "Kendrick",
    "Luis",
    "Marcelo",
    "Nathanael",
    "Orlando",
    "Pedro",
    "Quincy",
    "Rocco",
    "Sammy",
    "Tommie",
    "Vance",
    "Wes",
    "Xavier",
    "Yong",
    "Zachary",
    "Alfonso",
)
FIRST_NAMES_FEMALE: tuple[str, ...] = (
    "Adelaide",
    "Beatriz",
    "Carmela",
    "Delphine",
    "Ernestina",
    "Florencia",
    "Gertrude",
    "Hortensia",
    "Imelda",
    "Joanie",
    "Kathlyn",
    "Lavonne",
    "Marisela",
    "Nichole",
    "Ofelia",
    "Pamela",
    "Rosalva",
    "Shaquana",
    "Tamika",
    "Ursula",
    "Verla",
    "Wilhelmina",
    "Yesenia",
    "Zulma",
    "Agustina",
    "Bernadette",
    "Cherise",
    "Dorthy",
    "Evangelina",
    "Francesca",
    "Graciela",
    "Hye",
    "Ivonne",
    "Jacquelyn",
    "Kyung",
    "Lorene",
    "Mirta",
    "Nelle",
    "Otilia",
    "Precious",
)
LAST_NAMES: tuple[str, ...] = (
    "Mosciski",
    "Schmidt",
    "Stamm",
    "Kemmer",
    "Labadie",
    "Hickle",
    "Bergstrom",
    "Kuhlman",
    "Runolfsdottir",
    "Wintheiser",
    "Gutkowski",
    "Considine",
    "Dach",
    "Effertz",
    "Feest",
    "Goldner",
    "Haag",
    "Jast",
    "Kozey",
    "Lemke",
    "Mraz",
    "Nader",
    "Okuneva",
    "Pfannerstill",
    "Quigley",
    "Rempel",
    "Sauer",
    "Turcotte",
    "Ullrich",
    "Volkman",
    "Walsh",
    "Yundt",
    "Zieme",
    "Abshire",
    "Bahringer",
    "Cassin",
    "Dicki",
    "Ernser",
    "Funk",
    "Gerhold",
    "Hermann",
    "Jacobi",
    "Krajcik",
    "Lind",
    "Macejkovic",
    "Nikolaus",
    "O'Conner",
    "Prohaska",
    "Reichert",
    "Schuster",
    "Torphy",
    "Upton",
    "Veum",
    "Wunsch",
    "Garcia",
    "Rodriguez",
    "Nguyen",
    "Pereira",
    "Santos",
    "Chen",
)
STREET_SUFFIXES: tuple[str, ...] = (
    "Street",
    "Avenue",
    "Road",
    "Lane",
    "Way",
    "Court",
    "Drive",
    "Lock",
    "Neck",
    "Trail",
    "Parade",
    "Underpass",
    "Mall",
    "Ramp",
    "Rapid",
    "Light",
    "Crossing",
    "Green",
    "Gateway",
    "Knoll",
)
ADDRESS_UNIT_KINDS: tuple[str, ...] = ("Unit", "Apt", "Suite")

RACES: tuple[str, ...] = ("white", "black", "asian", "hawaiian", "native", "other")
RACE_WEIGHTS: tuple[float, ...] = (0.79, 0.075, 0.07, 0.003, 0.004, 0.058)
HISPANIC_SHARE = 0.125

# US age pyramid, 5-year bands from 0 to 99 (share of population, roughly Census 2020).
AGE_BAND_SHARES: tuple[float, ...] = (
    5.7,
    6.0,
    6.3,
    6.5,
    6.5,
    6.9,
    7.0,
    6.6,
    6.3,
    6.1,
    6.3,
    6.5,
    6.3,
    5.5,
    4.3,
    2.9,
    1.9,
    1.2,
    0.6,
    0.2,
)

# MARITAL by adult age band (18-29, 30-64, 65+): shares of M, S, D, W, empty.
MARITAL_CODES: tuple[str | None, ...] = ("M", "S", "D", "W", None)
MARITAL_SHARES_BY_BAND: tuple[tuple[float, ...], ...] = (
    (0.25, 0.70, 0.03, 0.00, 0.02),
    (0.55, 0.25, 0.15, 0.02, 0.03),
    (0.50, 0.10, 0.12, 0.25, 0.03),
)


class EncounterKind(NamedTuple):
    encounter_class: str
    code: str
    description: str
    base_cost: float
    min_minutes: int
    max_minutes: int


ENCOUNTER_KINDS: tuple[EncounterKind, ...] = (
    EncounterKind("wellness", "162673000", "General examination of patient (procedure)", 136.80, 15, 30),
    EncounterKind("wellness", "410620009", "Well child visit (procedure)", 136.80, 15, 30),
    EncounterKind("ambulatory", "185347001", "Encounter for problem (procedure)", 85.55, 15, 30),
    EncounterKind("ambulatory", "185345009", "Encounter for symptom", 85.55, 15, 30),
    EncounterKind("ambulatory", "185349003", "Encounter for check up (procedure)", 85.55, 10, 20),
    EncounterKind("outpatient", "371883000", "Outpatient procedure", 97.45, 60, 180),
    EncounterKind("outpatient", "390906007", "Follow-up encounter", 97.45, 15, 30),
    EncounterKind("emergency", "50849002", "Emergency room admission (procedure)", 146.18, 60, 360),
    EncounterKind("urgentcare", "702927004", "Urgent care clinic (procedure)", 146.18, 30, 90),
    EncounterKind("inpatient", "183452005", "Encounter Inpatient", 106.02, 1440, 7200),
    EncounterKind("ambulatory", "308646001", "Death Certification", 136.80, 15, 30),
)
KIND_INDEX = {kind.description: index for index, kind in enumerate(ENCOUNTER_KINDS)}


class Condition(NamedTuple):
    code: str
    description: str


CONDITIONS: tuple[Condition, ...] = (
    Condition("59621000", "Essential hypertension (disorder)"),
    Condition("15777000", "Prediabetes (finding)"),
    Condition("44054006", "Diabetes mellitus type 2 (disorder)"),
    Condition("55822004", "Hyperlipidemia (disorder)"),
    Condition("195967001", "Asthma (disorder)"),
    Condition("162864005", "Body mass index 30+ - obesity (finding)"),
    Condition("40055000", "Chronic sinusitis (disorder)"),
    Condition("444814009", "Viral sinusitis (disorder)"),
    Condition("195662009", "Acute viral pharyngitis (disorder)"),
    Condition("10509002", "Acute bronchitis (disorder)"),
    Condition("65363002", "Otitis media (disorder)"),
    Condition("44465007", "Sprain of ankle (disorder)"),
)
CONDITION_INDEX = {condition.code: index for index, condition in enumerate(CONDITIONS)}
HYPERTENSION = CONDITION_INDEX["59621000"]
PREDIABETES = CONDITION_INDEX["15777000"]
DIABETES = CONDITION_INDEX["44054006"]
HYPERLIPIDEMIA = CONDITION_INDEX["55822004"]
ASTHMA = CONDITION_INDEX["195967001"]
OBESITY = CONDITION_INDEX["162864005"]
CHRONIC_SINUSITIS = CONDITION_INDEX["40055000"]
# Acute conditions with their share among acute episodes and their duration range in days.
ACUTE_CONDITIONS: tuple[tuple[int, float, int, int], ...] = (
    (CONDITION_INDEX["444814009"], 0.32, 7, 21),
    (CONDITION_INDEX["195662009"], 0.28, 7, 14),
    (CONDITION_INDEX["10509002"], 0.20, 7, 21),
    (CONDITION_INDEX["65363002"], 0.10, 7, 14),
    (CONDITION_INDEX["44465007"], 0.10, 21, 42),
)


class Observation(NamedTuple):
    category: str
    code: str
    description: str
    units: str | None
    value_type: str


OBSERVATIONS: tuple[Observation, ...] = (
    Observation("vital-signs", "8302-2", "Body Height", "cm", "numeric"),
    Observation("vital-signs", "29463-7", "Body Weight", "kg", "numeric"),
    Observation("vital-signs", "8480-6", "Systolic Blood Pressure", "mm[Hg]", "numeric"),
    Observation("vital-signs", "8462-4", "Diastolic Blood Pressure", "mm[Hg]", "numeric"),
    Observation("laboratory", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "numeric"),
    Observation("survey", "72166-2", "Tobacco smoking status", None, "text"),
)
HEIGHT, WEIGHT, SYSTOLIC, DIASTOLIC, HBA1C, SMOKING = range(6)
SMOKING_STATUSES: tuple[str, ...] = (
    "Never smoked tobacco (finding)",
    "Former smoker (finding)",
    "Smokes tobacco daily (finding)",
)
SMOKING_SHARES: tuple[float, ...] = (0.66, 0.22, 0.12)


class Vaccine(NamedTuple):
    code: str
    description: str
    base_cost: float


VACCINES: tuple[Vaccine, ...] = (
    Vaccine("140", "Influenza  seasonal  injectable  preservative free", 140.52),
    Vaccine("08", "Hep B  adolescent or pediatric", 140.52),
    Vaccine("20", "DTaP", 140.52),
    Vaccine("10", "IPV", 140.52),
    Vaccine("49", "Hib (PRP-OMP)", 140.52),
    Vaccine("133", "Pneumococcal conjugate PCV 13", 140.52),
    Vaccine("03", "MMR", 140.52),
    Vaccine("21", "varicella", 140.52),
    Vaccine("62", "HPV  quadrivalent", 140.52),
    Vaccine("114", "meningococcal MCV4P", 140.52),
    Vaccine("115", "Tdap", 140.52),
    Vaccine("113", "Td (adult) preservative free", 140.52),
    Vaccine("121", "zoster", 140.52),
    Vaccine("33", "pneumococcal polysaccharide vaccine  23 valent", 140.52),
)
INFLUENZA = 0
# Routine vaccines given at a well visit, by age band [min_age, max_age): (probability, vaccine indexes).
ROUTINE_VACCINES_BY_AGE: tuple[tuple[float, float, float, tuple[int, ...]], ...] = (
    (0.0, 2.0, 0.9, (1, 2, 3, 4, 5)),
    (2.0, 7.0, 0.6, (6, 7, 2, 3)),
    (11.0, 18.0, 0.5, (8, 9, 10)),
    (18.0, 50.0, 0.08, (11,)),
    (50.0, 65.0, 0.12, (12, 11)),
    (65.0, 200.0, 0.15, (13, 12)),
)


class Procedure(NamedTuple):
    code: str
    description: str
    base_cost: float


PROCEDURES: tuple[Procedure, ...] = (
    Procedure("24623002", "Screening mammography (procedure)", 358.49),
    Procedure("73761001", "Colonoscopy (procedure)", 6431.29),
    Procedure("171207006", "Depression screening (procedure)", 431.40),
    Procedure("430193006", "Medication Reconciliation (procedure)", 735.40),
    Procedure("90226004", "Cytopathology procedure  preparation of smear  genital source", 527.98),
)
MAMMOGRAPHY, COLONOSCOPY, DEPRESSION_SCREENING, MEDICATION_RECONCILIATION, CERVICAL_SMEAR = range(5)


class Medication(NamedTuple):
    code: str
    description: str
    base_cost: float


MEDICATIONS: tuple[Medication, ...] = (
    Medication("314076", "lisinopril 10 MG Oral Tablet", 9.87),
    Medication("310798", "Hydrochlorothiazide 25 MG Oral Tablet", 7.31),
    Medication("308136", "amLODIPine 2.5 MG Oral Tablet", 8.47),
    Medication("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet", 12.44),
    Medication("314231", "Simvastatin 10 MG Oral Tablet", 8.06),
    Medication("259255", "Atorvastatin 80 MG Oral Tablet", 21.36),
    Medication("2123111", "NDA020503 200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", 36.48),
    Medication("895994", "120 ACTUAT Fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler", 194.33),
    Medication("562251", "Amoxicillin 250 MG / Clavulanate 125 MG Oral Tablet", 11.73),
    Medication("313782", "Acetaminophen 325 MG Oral Tablet", 5.21),
)
HYPERTENSION_DRUGS: tuple[int, ...] = (0, 1, 2)
HYPERTENSION_DRUG_SHARES: tuple[float, ...] = (0.5, 0.3, 0.2)
METFORMIN, SIMVASTATIN, ATORVASTATIN, ALBUTEROL, FLUTICASONE, AMOXICILLIN_CLAVULANATE, ACETAMINOPHEN = (
    3,
    4,
    5,
    6,
    7,
    8,
    9,
)

# CRM
EMAIL_DOMAINS: tuple[str, ...] = ("example.org", "mail.test", "inbox.test", "patients.test")
EMAIL_DOMAIN_SHARES: tuple[float, ...] = (0.55, 0.2, 0.15, 0.1)
LANGUAGES: tuple[str, ...] = ("en", "es", "pt", "zh", "vi", "ht")
LANGUAGE_SHARES: tuple[float, ...] = (0.845, 0.12, 0.015, 0.008, 0.006, 0.006)
PHONE_AREA_CODES: tuple[str, ...] = ("617", "508", "781", "978", "413", "774", "857", "339")
