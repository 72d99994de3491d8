"""Send windows: quiet hours in the recipient's own time zone, daylight-saving days included."""

from __future__ import annotations

import math
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import carecast.send_windows as send_windows
from carecast.send_windows import (
    STATE_ZONES,
    ZIP3_ZONES,
    SendWindow,
    is_open,
    next_opening,
    open_now,
    time_zone_for,
    time_zones_for,
)

DAY = SendWindow(start=time(8), end=time(20))
NIGHT = SendWindow(start=time(21), end=time(6))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- the window itself ---------------------------------------------------------------------------------


def test_window_parses_campaign_yaml_values() -> None:
    assert SendWindow.model_validate({"start": "08:00", "end": "20:00"}) == DAY
    assert SendWindow.model_validate({"start": "21:00", "end": "06:00"}).overnight


@pytest.mark.parametrize(
    "raw",
    [
        {"start": "08:00", "end": "08:00"},
        {"start": "08:00+02:00", "end": "20:00"},
        {"start": "08:00", "end": "20:00", "zone": "UTC"},
        {"start": "8 am", "end": "20:00"},
    ],
)
def test_window_rejects(raw: dict) -> None:
    with pytest.raises(ValidationError):
        SendWindow.model_validate(raw)


def test_window_is_half_open() -> None:
    assert DAY.contains(time(8)) and DAY.contains(time(19, 59, 59, 999999))
    assert not DAY.contains(time(20)) and not DAY.contains(time(7, 59))
    assert NIGHT.contains(time(21)) and NIGHT.contains(time(0)) and NIGHT.contains(time(5, 59))
    assert not NIGHT.contains(time(6)) and not NIGHT.contains(time(12))


# --- time zones from addresses -----------------------------------------------------------------------


US_STATES_AND_DC = """AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ
NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY""".split()


def test_every_zone_in_the_tables_exists() -> None:
    assert len(US_STATES_AND_DC) == 51 and set(US_STATES_AND_DC) <= set(STATE_ZONES)
    for zone in {*STATE_ZONES.values(), *ZIP3_ZONES.values()}:
        ZoneInfo(zone)
    assert all(state in STATE_ZONES for state, _zip3 in ZIP3_ZONES)
    assert all(len(zip3) == 3 and zip3.isdigit() for _state, zip3 in ZIP3_ZONES)


@pytest.mark.parametrize(
    ("state", "zip_code", "zone"),
    [
        ("MA", "02139", "America/New_York"),
        (" ma ", "02139-4307", "America/New_York"),
        ("FL", "33101", "America/New_York"),  # Miami
        ("FL", "32501", "America/Chicago"),  # Pensacola
        ("FL", "32401", "America/Chicago"),  # Panama City
        ("TX", "75201", "America/Chicago"),  # Dallas
        ("TX", "79901", "America/Denver"),  # El Paso
        ("IN", "46204", "America/Indiana/Indianapolis"),
        ("IN", "46320", "America/Chicago"),  # Hammond
        ("IN", "47708", "America/Chicago"),  # Evansville
        ("KY", "40202", "America/New_York"),  # Louisville
        ("KY", "42101", "America/Chicago"),  # Bowling Green
        ("TN", "37203", "America/Chicago"),  # Nashville
        ("TN", "37902", "America/New_York"),  # Knoxville
        ("MI", "48226", "America/Detroit"),
        ("NE", "68102", "America/Chicago"),  # Omaha
        ("NE", "69361", "America/Denver"),  # Scottsbluff
        ("ND", "58601", "America/Denver"),  # Dickinson
        ("SD", "57501", "America/Chicago"),  # Pierre
        ("SD", "57701", "America/Denver"),  # Rapid City
        ("ID", "83702", "America/Boise"),
        ("ID", "83814", "America/Los_Angeles"),  # Coeur d'Alene
        ("OR", "97201", "America/Los_Angeles"),
        ("OR", "97914", "America/Boise"),  # Ontario, Malheur County
        ("AZ", "85004", "America/Phoenix"),
        ("HI", "96813", "Pacific/Honolulu"),
        ("AK", "99501", "America/Anchorage"),
        ("PR", "00901", "America/Puerto_Rico"),
        ("VI", "00802", "America/St_Thomas"),
        ("GU", "96910", "Pacific/Guam"),
        ("MP", "96950", "Pacific/Saipan"),
        ("AS", "96799", "Pacific/Pago_Pago"),
    ],
)
def test_time_zone_for_addresses(state: str, zip_code: str, zone: str) -> None:
    assert time_zone_for(state, zip_code, fallback="UTC") == zone


@pytest.mark.parametrize(
    ("state", "zip_code", "zone"),
    [
        (None, "02139", "America/Chicago"),  # no state: the fallback, whatever the ZIP says
        ("AE", "09001", "America/Chicago"),  # military mail
        ("ZZ", None, "America/Chicago"),
        ("FL", None, "America/New_York"),  # no ZIP: the state's zone
        ("FL", "3250", "America/New_York"),  # not a ZIP: ignored
        ("FL", 32501, "America/New_York"),  # not a string: ignored
        ("MA", "32501", "America/New_York"),  # a Florida ZIP does not move Massachusetts
    ],
)
def test_time_zone_for_incomplete_addresses(state, zip_code, zone: str) -> None:
    assert time_zone_for(state, zip_code, fallback="America/Chicago") == zone


def test_time_zone_for_defaults_to_the_organisation_zone_and_checks_the_fallback() -> None:
    assert time_zone_for(None, None) == "America/New_York"
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        time_zone_for("MA", "02139", fallback="Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        time_zones_for([], [], fallback="not a zone")


state_values = st.sampled_from([*STATE_ZONES, "ma", " tx", "AE", "ZZ", "", None, math.nan])
zip_values = st.one_of(
    st.sampled_from([zip3 + "01" for _state, zip3 in ZIP3_ZONES]),
    st.from_regex(r"\A\d{5}(-\d{4})?\Z"),
    st.sampled_from(["", "123", "ABCDE", None, math.nan, 2139]),
)


@given(st.lists(st.tuples(state_values, zip_values), max_size=60))
def test_time_zones_for_agrees_with_time_zone_for(addresses) -> None:
    states = [state for state, _zip in addresses]
    zips = [zip_code for _state, zip_code in addresses]
    expected = [time_zone_for(state, zip_code, fallback="UTC") for state, zip_code in addresses]
    assert time_zones_for(states, zips, fallback="UTC") == expected


def test_open_now_judges_each_zone_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_is_open = send_windows.is_open

    def counting_is_open(window: SendWindow, zone: str, now_utc: datetime) -> bool:
        calls.append(zone)
        return real_is_open(window, zone, now_utc)

    monkeypatch.setattr(send_windows, "is_open", counting_is_open)
    zones = ["America/Phoenix", "America/Denver"] * 50_000 + ["Pacific/Honolulu"]
    verdicts = open_now(DAY, zones, utc(2026, 7, 1, 14, 30))
    assert sorted(calls) == ["America/Denver", "America/Phoenix", "Pacific/Honolulu"]
    assert verdicts[:3] == [False, True, False] and verdicts[-1] is False
    assert sum(verdicts) == 50_000


# --- known instants ------------------------------------------------------------------------------------


def test_phoenix_keeps_standard_time_while_denver_moves() -> None:
    summer = utc(2026, 7, 1, 14, 30)  # 07:30 in Phoenix (MST), 08:30 in Denver (MDT)
    assert not is_open(DAY, "America/Phoenix", summer)
    assert is_open(DAY, "America/Denver", summer)
    assert next_opening(DAY, "America/Phoenix", summer) == utc(2026, 7, 1, 15)
    assert next_opening(DAY, "America/Denver", summer) == summer
    winter = utc(2026, 1, 15, 14, 30)  # 07:30 in both
    for zone in ("America/Phoenix", "America/Denver"):
        assert next_opening(DAY, zone, winter) == utc(2026, 1, 15, 15)


def test_honolulu() -> None:
    assert next_opening(DAY, "Pacific/Honolulu", utc(2026, 7, 1, 17, 30)) == utc(2026, 7, 1, 18)
    assert is_open(DAY, "Pacific/Honolulu", utc(2026, 7, 2, 5, 59))  # 19:59 HST
    assert next_opening(DAY, "Pacific/Honolulu", utc(2026, 7, 2, 6)) == utc(2026, 7, 2, 18)


def test_overnight_window() -> None:
    assert is_open(NIGHT, "America/New_York", utc(2026, 6, 2, 2))  # 22:00 EDT
    assert is_open(NIGHT, "America/New_York", utc(2026, 6, 2, 9, 59))  # 05:59 EDT
    assert next_opening(NIGHT, "America/New_York", utc(2026, 6, 2, 10)) == utc(2026, 6, 3, 1)


def test_spring_forward_day() -> None:
    # 2026-03-08: New York goes from 01:59:59 EST straight to 03:00 EDT (07:00 UTC).
    assert next_opening(DAY, "America/New_York", utc(2026, 3, 8, 5)) == utc(2026, 3, 8, 12)  # 08:00 EDT
    assert next_opening(DAY, "America/Denver", utc(2026, 3, 8, 8)) == utc(2026, 3, 8, 14)  # 08:00 MDT
    # A start that does not exist that day opens the window when the clock jumps past it.
    early = SendWindow(start=time(2, 30), end=time(5))
    assert next_opening(early, "America/New_York", utc(2026, 3, 8, 6)) == utc(2026, 3, 8, 7)
    # An end that does not exist that day closes it at the jump.
    late = SendWindow(start=time(20), end=time(2, 30))
    assert is_open(late, "America/New_York", utc(2026, 3, 8, 6, 59, 59))
    assert not is_open(late, "America/New_York", utc(2026, 3, 8, 7))


def test_fall_back_day() -> None:
    # 2026-11-01: New York goes from 01:59:59 EDT back to 01:00 EST (06:00 UTC).
    assert next_opening(DAY, "America/New_York", utc(2026, 11, 1, 4, 30)) == utc(2026, 11, 1, 13)  # 08:00 EST
    # The repeated hour is in the window both times round.
    repeated = SendWindow(start=time(1), end=time(1, 30))
    assert is_open(repeated, "America/New_York", utc(2026, 11, 1, 5, 15))  # 01:15 EDT
    assert not is_open(repeated, "America/New_York", utc(2026, 11, 1, 5, 45))  # 01:45 EDT
    assert next_opening(repeated, "America/New_York", utc(2026, 11, 1, 5, 45)) == utc(2026, 11, 1, 6)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(DAY, "America/New_York", datetime(2026, 7, 1, 12))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_opening(DAY, "America/New_York", datetime(2026, 7, 1, 12))


def test_next_opening_accepts_any_aware_now() -> None:
    berlin = datetime(2026, 7, 1, 16, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # 14:30 UTC
    assert next_opening(DAY, "America/Phoenix", berlin) == utc(2026, 7, 1, 15)
    assert next_opening(DAY, "America/Phoenix", berlin).tzinfo is UTC


# --- next_opening, for any window, zone and instant ---------------------------------------------------

ZONES = sorted(
    {*STATE_ZONES.values(), *ZIP3_ZONES.values()}
    | {"Europe/London", "Australia/Sydney", "Australia/Lord_Howe", "America/St_Johns", "Asia/Kathmandu", "UTC"}
)
# Around daylight-saving switches: the US (2026-03-08, 2026-11-01), Europe, Lord Howe's half hour.
SWITCHES = [utc(2026, 3, 8, 8), utc(2026, 11, 1, 7), utc(2026, 3, 29, 1), utc(2026, 10, 25, 1), utc(2026, 4, 4, 15)]

# Half the windows start or end between 00:30 and 03:30, where the switches happen.
minutes_of_day = st.one_of(st.integers(0, 24 * 60 - 1), st.integers(30, 210)).map(lambda m: time(m // 60, m % 60))
windows = (
    st.tuples(minutes_of_day, minutes_of_day)
    .filter(lambda pair: pair[0] != pair[1])
    .map(lambda pair: SendWindow(start=pair[0], end=pair[1]))
)
instants = st.one_of(
    st.datetimes(datetime(2025, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC)),
    *(
        st.tuples(st.sampled_from(SWITCHES), st.integers(-hours * 3600, hours * 3600), st.integers(0, 999_999)).map(
            lambda t: t[0] + timedelta(seconds=t[1], microseconds=t[2])
        )
        for hours in (36, 6)
    ),
)


@settings(max_examples=300, deadline=None)
@given(window=windows, zone=st.sampled_from(ZONES), now=instants)
def test_next_opening_is_the_first_open_instant(window: SendWindow, zone: str, now: datetime) -> None:
    opening = next_opening(window, zone, now)
    assert opening >= now
    assert is_open(window, zone, opening)
    assert (opening == now) == is_open(window, zone, now)
    if opening > now:
        # Windows and zone offsets are whole minutes, so the window can only open on a minute
        # boundary: none before ``opening`` is open, nor the second just before it.
        assert opening == opening.replace(second=0, microsecond=0)
        assert not is_open(window, zone, opening - timedelta(seconds=1))
        minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        while minute < opening:
            assert not is_open(window, zone, minute), minute
            minute += timedelta(minutes=1)
