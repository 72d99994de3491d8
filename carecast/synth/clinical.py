"""Clinical history in the Synthea CSV shapes: encounters and the rows hanging off them.

Every clinical row is created together with (or attached to) an encounter of the same patient,
on a day within [birth, last active day]; prevalences rise with age.  Rows are collected as
small frames of integer indices, sorted once per table, and only then turned into text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl

from carecast.synth import reference as ref
from carecast.synth.columns import (
    DAYS_PER_YEAR,
    NO_TIMESTAMP,
    SECONDS_PER_DAY,
    choose,
    dates,
    datetimes,
    day_number,
    daytime_timestamps,
    labels,
    stream,
    uniform_days,
    uuids,
)
from carecast.synth.payers import PAYERS, Claims, payers_frame
from carecast.synth.people import Population

YEAR = 365
KIND = ref.KIND_INDEX
ORGANIZATION_COUNT = 120
PROVIDERS_PER_ORGANIZATION = 5
PAYER_COUNT = len(PAYERS)


def influenza_season_start(as_of: date) -> date:
    """Flu seasons start on Aug 1; the current one is the last Aug 1 on or before as_of."""
    year = as_of.year if as_of.month >= 8 else as_of.year - 1
    return date(year, 8, 1)


@dataclass
class _Table:
    """Rows of one clinical table as frames of integer indices, concatenated at the end."""

    parts: list[pl.DataFrame] = field(default_factory=list)

    def add(self, **columns: np.ndarray | pl.Series) -> None:
        self.parts.append(pl.DataFrame(columns))

    def frame(self) -> pl.DataFrame:
        return pl.concat(self.parts, how="diagonal").sort(["patient", "start"], maintain_order=True)


@dataclass
class _Ledger:
    """Encounters handed out in creation order; `add` returns their indices."""

    table: _Table = field(default_factory=_Table)
    count: int = 0

    def add(
        self, patient: np.ndarray, start: np.ndarray, kind: np.ndarray | int, reason: np.ndarray | int = -1
    ) -> np.ndarray:
        size = patient.shape[0]
        index = np.arange(self.count, self.count + size, dtype=np.int64)
        self.count += size
        self.table.add(
            encounter=index,
            patient=patient,
            start=start,
            kind=np.broadcast_to(np.asarray(kind, dtype=np.int64), (size,)),
            reason=np.broadcast_to(np.asarray(reason, dtype=np.int64), (size,)),
        )
        return index


class ClinicalGenerator:
    def __init__(self, seed: int, population: Population) -> None:
        self.rng = stream(seed, "clinical")
        self.cohort = population.cohort
        self.is_female = population.is_female
        self.birth = self.cohort.birth_day
        self.last_day = self.cohort.last_active_day
        self.last_second = self.cohort.last_active_second
        self.age_at_end = (self.last_day - self.birth) / DAYS_PER_YEAR
        self.ledger = _Ledger()
        self.conditions = _Table()
        self.observations = _Table()
        self.immunizations = _Table()
        self.procedures = _Table()
        self.medications = _Table()

    # -- helpers -------------------------------------------------------------------------
    def _pick(self, probability: np.ndarray | float) -> np.ndarray:
        return np.flatnonzero(self.rng.random(self.cohort.size) < probability)

    def _age_on(self, patient: np.ndarray, day: np.ndarray) -> np.ndarray:
        return (day - self.birth[patient]) / DAYS_PER_YEAR

    def _moment(self, patient: np.ndarray, low_day: np.ndarray, high_day: np.ndarray) -> np.ndarray:
        return daytime_timestamps(
            self.rng, uniform_days(self.rng, low_day, np.minimum(high_day, self.last_day[patient]))
        )

    def _visit(
        self, patient: np.ndarray, low_day: np.ndarray, kind: np.ndarray | int, reason: np.ndarray | int = -1
    ) -> tuple[np.ndarray, np.ndarray]:
        start = self._moment(patient, np.maximum(low_day, self.birth[patient]), self.last_day[patient])
        return start, self.ledger.add(patient, start, kind, reason)

    def _later(self, patient: np.ndarray, start: np.ndarray, low_minutes: int, high_minutes: int) -> np.ndarray:
        offset = self.rng.integers(low_minutes * 60, high_minutes * 60 + 1, size=start.shape[0])
        return np.minimum(start + offset, self.last_second[patient])

    def _add_condition(
        self,
        patient: np.ndarray,
        start: np.ndarray,
        encounter: np.ndarray,
        condition: np.ndarray | int,
        stop_day: np.ndarray | None = None,
    ) -> None:
        start_day = start // SECONDS_PER_DAY
        self.conditions.add(
            patient=patient,
            start=start_day,
            stop=np.full(patient.shape[0], -1, dtype=np.int64) if stop_day is None else stop_day,
            encounter=encounter,
            code=np.broadcast_to(np.asarray(condition, dtype=np.int64), patient.shape),
        )

    def _add_medication(
        self,
        patient: np.ndarray,
        start: np.ndarray,
        encounter: np.ndarray,
        medication: np.ndarray | int,
        reason: np.ndarray | int,
        days: np.ndarray | None,
    ) -> None:
        """Chronic prescriptions (days=None) run until death or stay open; acute ones stop."""
        if days is None:
            stop = np.where(self.cohort.is_deceased[patient], self.last_second[patient], NO_TIMESTAMP)
        else:
            stop = start + days * SECONDS_PER_DAY
            stop = np.where(stop > self.last_second[patient], NO_TIMESTAMP, stop)
        self.medications.add(
            patient=patient,
            start=start,
            stop=stop,
            encounter=encounter,
            code=np.broadcast_to(np.asarray(medication, dtype=np.int64), patient.shape),
            reason=np.broadcast_to(np.asarray(reason, dtype=np.int64), patient.shape),
        )

    def _add_procedure(self, patient: np.ndarray, start: np.ndarray, encounter: np.ndarray, procedure: int) -> None:
        begin = np.minimum(start + self.rng.integers(60, 600, size=start.shape[0]), self.last_second[patient])
        self.procedures.add(
            patient=patient,
            start=begin,
            stop=self._later(patient, begin, 10, 40),
            encounter=encounter,
            code=np.full(patient.shape[0], procedure, dtype=np.int64),
        )

    def _add_observation(
        self, patient: np.ndarray, start: np.ndarray, encounter: np.ndarray, observation: int, value: pl.Series
    ) -> None:
        self.observations.add(
            patient=patient,
            start=start,
            encounter=encounter,
            code=np.full(patient.shape[0], observation, dtype=np.int64),
            value=value,
        )

    def _add_immunization(
        self, patient: np.ndarray, start: np.ndarray, encounter: np.ndarray, vaccine: np.ndarray | int
    ) -> None:
        self.immunizations.add(
            patient=patient,
            start=start,
            encounter=encounter,
            code=np.broadcast_to(np.asarray(vaccine, dtype=np.int64), patient.shape),
        )

    # -- history -------------------------------------------------------------------------
    def chronic_conditions(self) -> dict[int, np.ndarray]:
        """Decide chronic diagnoses per patient, each recorded at its own problem encounter."""
        age = self.age_at_end
        adult = age >= 18.0
        diabetes_p = np.where(adult, np.interp(age, [18, 30, 45, 65, 80], [0.01, 0.03, 0.10, 0.22, 0.25]), 0.0)
        prediabetes_p = np.where(adult, np.interp(age, [18, 30, 45, 65], [0.05, 0.09, 0.17, 0.22]), 0.0)
        glucose_draw = self.rng.random(self.cohort.size)
        has = {
            ref.HYPERTENSION: self.rng.random(self.cohort.size)
            < np.where(
                adult, np.interp(age, [18, 30, 40, 50, 60, 70, 80], [0.04, 0.08, 0.18, 0.32, 0.47, 0.6, 0.68]), 0.0
            ),
            ref.DIABETES: glucose_draw < diabetes_p,
            ref.PREDIABETES: (glucose_draw >= diabetes_p) & (glucose_draw < diabetes_p + prediabetes_p),
            ref.HYPERLIPIDEMIA: self.rng.random(self.cohort.size)
            < np.where(adult, np.interp(age, [18, 30, 45, 65], [0.02, 0.05, 0.18, 0.32]), 0.0),
            ref.ASTHMA: self.rng.random(self.cohort.size) < np.where(age >= 2.0, 0.08, 0.0),
            ref.CHRONIC_SINUSITIS: self.rng.random(self.cohort.size) < np.where(adult, 0.03, 0.0),
        }
        onset_second: dict[int, np.ndarray] = {}
        for condition, flags in has.items():
            if condition == ref.PREDIABETES:
                continue
            patient = np.flatnonzero(flags)
            minimum_age = 2.0 if condition == ref.ASTHMA else 18.0
            low = np.maximum(self.birth[patient] + int(minimum_age * DAYS_PER_YEAR), self.last_day[patient] - 20 * YEAR)
            start, encounter = self._visit(patient, low, KIND["Encounter for problem (procedure)"], condition)
            self._add_condition(patient, start, encounter, condition)
            onset = np.full(self.cohort.size, NO_TIMESTAMP, dtype=np.int64)
            onset[patient] = start
            onset_second[condition] = onset
            self._chronic_medications(condition, patient, start, encounter)
        self.has = has
        return onset_second

    def _chronic_medications(
        self, condition: int, patient: np.ndarray, start: np.ndarray, encounter: np.ndarray
    ) -> None:
        count = patient.shape[0]
        if condition == ref.HYPERTENSION:
            drug = np.asarray(ref.HYPERTENSION_DRUGS)[choose(self.rng, count, ref.HYPERTENSION_DRUG_SHARES)]
            self._add_medication(patient, start, encounter, drug, condition, None)
        elif condition == ref.DIABETES:
            self._add_medication(patient, start, encounter, ref.METFORMIN, condition, None)
        elif condition == ref.HYPERLIPIDEMIA:
            treated = self.rng.random(count) < 0.7
            statin = np.where(self.rng.random(count) < 0.65, ref.SIMVASTATIN, ref.ATORVASTATIN)
            self._add_medication(patient[treated], start[treated], encounter[treated], statin[treated], condition, None)
        elif condition == ref.ASTHMA:
            self._add_medication(patient, start, encounter, ref.ALBUTEROL, condition, None)
            controller = self.rng.random(count) < 0.5
            self._add_medication(
                patient[controller], start[controller], encounter[controller], ref.FLUTICASONE, condition, None
            )

    def wellness(self) -> None:
        """Latest well visit (last two years) with vitals, labs, screenings; an older one too."""
        patient = self._pick(np.where(self.age_at_end < 18.0, 0.92, 0.85))
        start = self._moment(
            patient, np.maximum(self.birth[patient], self.last_day[patient] - 729), self.last_day[patient]
        )
        age = self._age_on(patient, start // SECONDS_PER_DAY)
        kind = np.where(
            age < 18.0, KIND["Well child visit (procedure)"], KIND["General examination of patient (procedure)"]
        )
        encounter = self.ledger.add(patient, start, kind)
        count = patient.shape[0]
        female = self.is_female[patient]
        adult = age >= 18.0

        median_height = np.where(
            female,
            np.interp(
                age,
                [0, 0.5, 1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 18],
                [49, 65, 74, 86, 94, 102, 115, 127, 138, 151, 160, 162, 163],
            ),
            np.interp(
                age,
                [0, 0.5, 1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 18],
                [50, 67, 76, 87, 95, 103, 116, 128, 138, 149, 163, 173, 176],
            ),
        )
        height = median_height * (1.0 + self.rng.normal(0.0, 0.04, size=count))
        obese = adult & (self.rng.random(count) < 0.32)
        adult_bmi = np.where(
            obese,
            30.0 + self.rng.gamma(1.5, 3.0, size=count),
            np.clip(self.rng.normal(25.0, 2.6, size=count), 18.0, 29.9),
        )
        child_bmi = np.interp(age, [0, 1, 2, 5, 10, 15, 18], [13.5, 17.0, 16.5, 15.5, 17.5, 20.5, 23.0]) * (
            1.0 + self.rng.normal(0.0, 0.08, size=count)
        )
        weight = np.where(adult, adult_bmi, child_bmi) * (height / 100.0) ** 2
        self._add_observation(patient, start, encounter, ref.HEIGHT, _numeric(height))
        self._add_observation(patient, start, encounter, ref.WEIGHT, _numeric(weight))

        hypertensive = self.has[ref.HYPERTENSION][patient]
        systolic = np.where(
            hypertensive, self.rng.normal(141.0, 12.0, size=count), self.rng.normal(117.0, 10.0, size=count)
        )
        systolic = np.where(adult, systolic, self.rng.normal(104.0, 8.0, size=count))
        diastolic = 0.55 * systolic + self.rng.normal(11.0, 6.0, size=count)
        with_bp = age >= 3.0
        self._add_observation(
            patient[with_bp], start[with_bp], encounter[with_bp], ref.SYSTOLIC, _numeric(systolic[with_bp], 0)
        )
        self._add_observation(
            patient[with_bp], start[with_bp], encounter[with_bp], ref.DIASTOLIC, _numeric(diastolic[with_bp], 0)
        )

        smoking = labels(ref.SMOKING_STATUSES, choose(self.rng, int(adult.sum()), ref.SMOKING_SHARES))
        self._add_observation(patient[adult], start[adult], encounter[adult], ref.SMOKING, smoking)

        diabetic = self.has[ref.DIABETES][patient]
        prediabetic = self.has[ref.PREDIABETES][patient]
        screened = adult & (age >= 45.0) & (self.rng.random(count) < 0.15)
        hba1c = np.select(
            [diabetic, prediabetic],
            [np.clip(5.9 + self.rng.gamma(2.0, 1.05, size=count), 6.5, 14.0), self.rng.uniform(5.7, 6.4, size=count)],
            default=self.rng.uniform(4.5, 5.6, size=count),
        )
        tested = diabetic | prediabetic | screened
        self._add_observation(patient[tested], start[tested], encounter[tested], ref.HBA1C, _numeric(hba1c[tested]))

        self._add_condition(patient[obese], start[obese], encounter[obese], ref.OBESITY)
        self._add_condition(patient[prediabetic], start[prediabetic], encounter[prediabetic], ref.PREDIABETES)

        on_chronic_drugs = (
            self.has[ref.HYPERTENSION] | self.has[ref.DIABETES] | self.has[ref.HYPERLIPIDEMIA] | self.has[ref.ASTHMA]
        )[patient]
        screenings = (
            (ref.MEDICATION_RECONCILIATION, on_chronic_drugs & (self.rng.random(count) < 0.8)),
            (ref.DEPRESSION_SCREENING, (age >= 12.0) & (self.rng.random(count) < 0.35)),
            (ref.CERVICAL_SMEAR, female & (age >= 21.0) & (age < 65.0) & (self.rng.random(count) < 0.3)),
        )
        for procedure, chosen in screenings:
            self._add_procedure(patient[chosen], start[chosen], encounter[chosen], procedure)

        for low_age, high_age, probability, vaccines in ref.ROUTINE_VACCINES_BY_AGE:
            chosen = (age >= low_age) & (age < high_age) & (self.rng.random(count) < probability)
            vaccine = np.asarray(vaccines)[self.rng.integers(0, len(vaccines), size=int(chosen.sum()))]
            self._add_immunization(patient[chosen], start[chosen], encounter[chosen], vaccine)

        earlier = self._pick(np.where(self.last_day - self.birth > 800, 0.35, 0.0))
        earlier_start = self._moment(
            earlier, np.maximum(self.birth[earlier], self.last_day[earlier] - 5 * YEAR), self.last_day[earlier] - 730
        )
        earlier_age = self._age_on(earlier, earlier_start // SECONDS_PER_DAY)
        self.ledger.add(
            earlier,
            earlier_start,
            np.where(
                earlier_age < 18.0,
                KIND["Well child visit (procedure)"],
                KIND["General examination of patient (procedure)"],
            ),
        )

    def acute_episodes(self) -> None:
        """Short illnesses in the last ten years, each at a symptom visit, some with a drug."""
        episodes = self.rng.poisson(np.where(self.age_at_end < 18.0, 0.5, 0.3))
        patient = np.repeat(np.arange(self.cohort.size), episodes)
        start, encounter = self._visit(patient, self.last_day[patient] - 10 * YEAR, KIND["Encounter for symptom"])
        count = patient.shape[0]
        pick = choose(self.rng, count, [share for _, share, _, _ in ref.ACUTE_CONDITIONS])
        condition = np.asarray([code for code, _, _, _ in ref.ACUTE_CONDITIONS])[pick]
        otitis = ref.CONDITION_INDEX["65363002"]
        condition = np.where(
            (condition == otitis) & (self._age_on(patient, start // SECONDS_PER_DAY) >= 12.0),
            ref.CONDITION_INDEX["444814009"],
            condition,
        )
        low_days = np.asarray([low for _, _, low, _ in ref.ACUTE_CONDITIONS])[pick]
        high_days = np.asarray([high for _, _, _, high in ref.ACUTE_CONDITIONS])[pick]
        stop_day = (
            start // SECONDS_PER_DAY
            + low_days
            + np.floor(self.rng.random(count) * (high_days - low_days + 1)).astype(np.int64)
        )
        stop_day = np.where(stop_day > self.last_day[patient], -1, stop_day)
        self._add_condition(patient, start, encounter, condition, stop_day)

        treatment = np.select(
            [
                (condition == ref.CONDITION_INDEX["444814009"]) & (self.rng.random(count) < 0.5),
                np.isin(condition, [ref.CONDITION_INDEX["195662009"], ref.CONDITION_INDEX["10509002"]])
                & (self.rng.random(count) < 0.35),
            ],
            [ref.AMOXICILLIN_CLAVULANATE, ref.ACETAMINOPHEN],
            default=-1,
        )
        treated = treatment >= 0
        self._add_medication(
            patient[treated],
            start[treated],
            encounter[treated],
            treatment[treated],
            condition[treated],
            self.rng.integers(7, 11, size=int(treated.sum())),
        )

    def other_encounters(self) -> None:
        visits = self.rng.poisson(0.12 + 0.004 * np.maximum(self.age_at_end, 0.0))
        patient = np.repeat(np.arange(self.cohort.size), visits)
        kinds = np.asarray(
            [
                KIND["Follow-up encounter"],
                KIND["Emergency room admission (procedure)"],
                KIND["Urgent care clinic (procedure)"],
                KIND["Encounter Inpatient"],
            ]
        )
        kind = kinds[choose(self.rng, patient.shape[0], [0.4, 0.3, 0.15, 0.15])]
        self._visit(patient, self.last_day[patient] - 10 * YEAR, kind)
        deceased = np.flatnonzero(self.cohort.is_deceased)
        self._visit(deceased, self.last_day[deceased], KIND["Death Certification"])

    def influenza(self, as_of: date) -> None:
        """~50% of adults (70% of 65+) vaccinated in the current season; many also last season."""
        season = day_number(influenza_season_start(as_of))
        age = self.age_at_end
        probability = np.select([age < 18.0, age < 50.0, age < 65.0], [0.5, 0.38, 0.5], default=0.7)
        earliest = np.maximum(season, self.birth + 183)
        current = np.zeros(self.cohort.size, dtype=bool)
        current[self._pick(np.where(earliest <= self.last_day, probability, 0.0))] = True
        patient = np.flatnonzero(current)
        start, encounter = self._visit(patient, earliest[patient], KIND["Encounter for check up (procedure)"])
        self._add_immunization(patient, start, encounter, ref.INFLUENZA)

        last_season_earliest = np.maximum(season - YEAR, self.birth + 183)
        last_season_latest = np.minimum(season - YEAR + 150, self.last_day)
        eligible = last_season_earliest <= last_season_latest
        patient = self._pick(np.where(eligible, np.where(current, 0.5, 0.1), 0.0))
        start = self._moment(patient, last_season_earliest[patient], last_season_latest[patient])
        encounter = self.ledger.add(patient, start, KIND["Encounter for check up (procedure)"])
        self._add_immunization(patient, start, encounter, ref.INFLUENZA)

    def cancer_screening(self) -> None:
        """Mammography for women 40+ (~72% of women 50-74 within two years) and colonoscopy 45+."""
        age = self.age_at_end
        female = self.is_female
        recent_p = np.where(
            female, np.select([age < 40.0, age < 50.0, age < 75.0], [0.0, 0.55, 0.72], default=0.45), 0.0
        )
        forty = self.birth + int(40 * DAYS_PER_YEAR) + 1
        patient = self._pick(recent_p)
        start, encounter = self._visit(
            patient, np.maximum(forty[patient], self.last_day[patient] - 729), KIND["Outpatient procedure"]
        )
        self._add_procedure(patient, start, encounter, ref.MAMMOGRAPHY)
        older = self._pick(np.where(female & (age >= 44.0), 0.45, 0.0))
        older_high = self.last_day[older] - 731
        keep = forty[older] <= older_high
        older = older[keep]
        start = self._moment(older, np.maximum(forty[older], self.last_day[older] - 4 * YEAR), older_high[keep])
        encounter = self.ledger.add(older, start, KIND["Outpatient procedure"])
        self._add_procedure(older, start, encounter, ref.MAMMOGRAPHY)

        forty_five = self.birth + int(45 * DAYS_PER_YEAR) + 1
        patient = self._pick(np.where((age >= 45.0) & (age < 86.0), 0.55, 0.0))
        start, encounter = self._visit(
            patient, np.maximum(forty_five[patient], self.last_day[patient] - 10 * YEAR), KIND["Outpatient procedure"]
        )
        self._add_procedure(patient, start, encounter, ref.COLONOSCOPY)


def _numeric(values: np.ndarray, decimals: int = 1) -> pl.Series:
    return pl.Series(values=np.round(values, decimals).astype(np.float64)).cast(pl.String)


def generate_clinical(seed: int, population: Population) -> dict[str, pl.DataFrame]:
    """The six clinical tables, in Synthea column order, sorted by patient then time, and the payers
    they are billed to."""
    generator = ClinicalGenerator(seed, population)
    as_of = population.cohort.as_of
    generator.chronic_conditions()
    generator.wellness()
    generator.acute_episodes()
    generator.other_encounters()
    generator.influenza(as_of)
    generator.cancer_screening()
    return _render(generator)


def _render(generator: ClinicalGenerator) -> dict[str, pl.DataFrame]:
    rng = generator.rng
    cohort = generator.cohort
    size = cohort.size
    patient_ids = cohort.patient_id
    organizations = uuids(rng, ORGANIZATION_COUNT)
    providers = uuids(rng, ORGANIZATION_COUNT * PROVIDERS_PER_ORGANIZATION)
    payers = uuids(rng, PAYER_COUNT)
    home_organization = rng.integers(0, ORGANIZATION_COUNT, size=size)
    home_provider = home_organization * PROVIDERS_PER_ORGANIZATION + rng.integers(
        0, PROVIDERS_PER_ORGANIZATION, size=size
    )
    payer = np.where(generator.age_at_end >= 65.0, 0, rng.integers(1, PAYER_COUNT, size=size))
    coverage_share = np.where(payer == PAYER_COUNT - 1, 0.0, rng.uniform(0.5, 0.95, size=size))

    encounters = generator.ledger.table.frame()
    patient = encounters["patient"].to_numpy()
    start = encounters["start"].to_numpy()
    kind = encounters["kind"].to_numpy()
    count = patient.shape[0]
    position = np.empty(generator.ledger.count, dtype=np.int64)
    position[encounters["encounter"].to_numpy()] = np.arange(count)
    encounter_ids = uuids(rng, count)
    kinds = ref.ENCOUNTER_KINDS
    low = np.asarray([k.min_minutes for k in kinds])[kind] * 60
    high = np.asarray([k.max_minutes for k in kinds])[kind] * 60
    stop = np.minimum(
        start + low + np.floor(rng.random(count) * (high - low + 1)).astype(np.int64), generator.last_second[patient]
    )
    away = np.isin(
        kind,
        [
            KIND["Emergency room admission (procedure)"],
            KIND["Encounter Inpatient"],
            KIND["Urgent care clinic (procedure)"],
        ],
    )
    organization = np.where(away, rng.integers(0, ORGANIZATION_COUNT, size=count), home_organization[patient])
    provider = np.where(
        away,
        organization * PROVIDERS_PER_ORGANIZATION + rng.integers(0, PROVIDERS_PER_ORGANIZATION, size=count),
        home_provider[patient],
    )
    base_cost = np.asarray([k.base_cost for k in kinds])[kind]
    total_cost = np.round(base_cost * rng.lognormal(1.2, 0.9, size=count), 2)
    reason = encounters["reason"].to_numpy()
    condition_codes = [c.code for c in ref.CONDITIONS] + [None]
    condition_names = [c.description for c in ref.CONDITIONS] + [None]
    reason_index = np.where(reason < 0, len(ref.CONDITIONS), reason)
    encounter_frame = pl.DataFrame(
        {
            "Id": encounter_ids,
            "START": datetimes(start),
            "STOP": datetimes(stop),
            "PATIENT": patient_ids.gather(patient),
            "ORGANIZATION": organizations.gather(organization),
            "PROVIDER": providers.gather(provider),
            "PAYER": payers.gather(payer[patient]),
            "ENCOUNTERCLASS": labels([k.encounter_class for k in kinds], kind),
            "CODE": labels([k.code for k in kinds], kind),
            "DESCRIPTION": labels([k.description for k in kinds], kind),
            "BASE_ENCOUNTER_COST": base_cost,
            "TOTAL_CLAIM_COST": total_cost,
            "PAYER_COVERAGE": np.round(total_cost * coverage_share[patient], 2),
            "REASONCODE": labels(condition_codes, reason_index),
            "REASONDESCRIPTION": labels(condition_names, reason_index),
        }
    )

    def encounter_of(frame: pl.DataFrame) -> pl.Series:
        return encounter_ids.gather(position[frame["encounter"].to_numpy()])

    conditions = generator.conditions.frame()
    condition_index = conditions["code"].to_numpy()
    stop_day = conditions["stop"].to_numpy()
    condition_frame = pl.DataFrame(
        {
            "START": dates(conditions["start"].to_numpy()),
            "STOP": dates(stop_day, missing=stop_day < 0),
            "PATIENT": patient_ids.gather(conditions["patient"].to_numpy()),
            "ENCOUNTER": encounter_of(conditions),
            "CODE": labels([c.code for c in ref.CONDITIONS], condition_index),
            "DESCRIPTION": labels([c.description for c in ref.CONDITIONS], condition_index),
        }
    )

    observations = generator.observations.frame()
    observation_index = observations["code"].to_numpy()
    table = ref.OBSERVATIONS
    observation_frame = pl.DataFrame(
        {
            "DATE": datetimes(observations["start"].to_numpy()),
            "PATIENT": patient_ids.gather(observations["patient"].to_numpy()),
            "ENCOUNTER": encounter_of(observations),
            "CATEGORY": labels([o.category for o in table], observation_index),
            "CODE": labels([o.code for o in table], observation_index),
            "DESCRIPTION": labels([o.description for o in table], observation_index),
            "VALUE": observations["value"],
            "UNITS": labels([o.units for o in table], observation_index),
            "TYPE": labels([o.value_type for o in table], observation_index),
        }
    )

    immunizations = generator.immunizations.frame()
    vaccine = immunizations["code"].to_numpy()
    immunization_frame = pl.DataFrame(
        {
            "DATE": datetimes(immunizations["start"].to_numpy()),
            "PATIENT": patient_ids.gather(immunizations["patient"].to_numpy()),
            "ENCOUNTER": encounter_of(immunizations),
            "CODE": labels([v.code for v in ref.VACCINES], vaccine),
            "DESCRIPTION": labels([v.description for v in ref.VACCINES], vaccine),
            "BASE_COST": np.asarray([v.base_cost for v in ref.VACCINES])[vaccine],
        }
    )

    procedures = generator.procedures.frame()
    procedure = procedures["code"].to_numpy()
    empty = pl.Series(values=[None], dtype=pl.String).gather(np.zeros(procedure.shape[0], dtype=np.int64))
    procedure_frame = pl.DataFrame(
        {
            "START": datetimes(procedures["start"].to_numpy()),
            "STOP": datetimes(procedures["stop"].to_numpy()),
            "PATIENT": patient_ids.gather(procedures["patient"].to_numpy()),
            "ENCOUNTER": encounter_of(procedures),
            "CODE": labels([p.code for p in ref.PROCEDURES], procedure),
            "DESCRIPTION": labels([p.description for p in ref.PROCEDURES], procedure),
            "BASE_COST": np.asarray([p.base_cost for p in ref.PROCEDURES])[procedure],
            "REASONCODE": empty,
            "REASONDESCRIPTION": empty,
        }
    )

    medications = generator.medications.frame()
    drug = medications["code"].to_numpy()
    medication_patient = medications["patient"].to_numpy()
    medication_start = medications["start"].to_numpy()
    medication_stop = medications["stop"].to_numpy()
    end = np.where(medication_stop == NO_TIMESTAMP, day_number(cohort.as_of) * SECONDS_PER_DAY, medication_stop)
    dispenses = np.maximum(1, (end - medication_start) // (30 * SECONDS_PER_DAY))
    unit_cost = np.asarray([m.base_cost for m in ref.MEDICATIONS])[drug]
    total = np.round(unit_cost * dispenses, 2)
    medication_reason = medications["reason"].to_numpy()
    medication_frame = pl.DataFrame(
        {
            "START": datetimes(medication_start),
            "STOP": datetimes(medication_stop),
            "PATIENT": patient_ids.gather(medication_patient),
            "PAYER": payers.gather(payer[medication_patient]),
            "ENCOUNTER": encounter_of(medications),
            "CODE": labels([m.code for m in ref.MEDICATIONS], drug),
            "DESCRIPTION": labels([m.description for m in ref.MEDICATIONS], drug),
            "BASE_COST": unit_cost,
            "PAYER_COVERAGE": np.round(total * coverage_share[medication_patient], 2),
            "DISPENSES": dispenses,
            "TOTALCOST": total,
            "REASONCODE": labels([c.code for c in ref.CONDITIONS], medication_reason),
            "REASONDESCRIPTION": labels([c.description for c in ref.CONDITIONS], medication_reason),
        }
    )
    payer_frame = payers_frame(
        payers,
        payer=payer,
        covers=coverage_share > 0,
        age=generator.age_at_end,
        months_alive=((generator.last_day - generator.birth) / (DAYS_PER_YEAR / 12)).astype(np.int64),
        encounters=Claims(payer[patient], total_cost, encounter_frame["PAYER_COVERAGE"].to_numpy()),
        medications=Claims(payer[medication_patient], total, medication_frame["PAYER_COVERAGE"].to_numpy()),
        procedure_patient=procedures["patient"].to_numpy(),
        immunization_patient=immunizations["patient"].to_numpy(),
    )
    return {
        "encounters": encounter_frame,
        "conditions": condition_frame,
        "observations": observation_frame,
        "immunizations": immunization_frame,
        "procedures": procedure_frame,
        "medications": medication_frame,
        "payers": payer_frame,
    }
