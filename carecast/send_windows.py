"""Send windows: quiet hours judged by the wall clock of the recipient's own time zone.

A campaign's ``send_window: {start: "08:00", end: "20:00"}`` means a message may go out only
while the recipient's local time is in [start, end). ``start > end`` is an overnight window
(21:00-06:00 is open from 21:00 until 06:00 the next morning); ``start == end`` is refused because
it is ambiguous (always open or never?): leave the window out to send at any hour.

"Open" is defined on the local wall clock at each instant, so daylight-saving days follow from
``zoneinfo`` without special cases: on the spring-forward day a window starting at 02:30 (a time
that does not exist) opens at 03:00, and on the fall-back day a window containing 01:00-02:00 is
open through both passes of that hour.

The recipient's zone comes from the postal address: the state's zone, refined for split states
by the first three ZIP digits where a ZIP3 lies (almost) wholly in the minority zone. See
``STATE_ZONES`` and ``ZIP3_ZONES`` for the choices. The tz database is the system's
(``/usr/share/zoneinfo``) or, where there is none, the ``tzdata`` package.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, model_validator

DEFAULT_FALLBACK_ZONE = "America/New_York"
"""The organisation's own zone: used when an address gives no usable state."""

EASTERN, CENTRAL, MOUNTAIN, PACIFIC = "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"

_EASTERN_STATES = "CT DC DE FL GA KY MA MD ME NC NH NJ NY OH PA RI SC VA VT WV"
_CENTRAL_STATES = "AL AR IA IL KS LA MN MO MS ND NE OK SD TN TX WI"

STATE_ZONES: dict[str, str] = {
    **dict.fromkeys(_EASTERN_STATES.split(), EASTERN),
    "IN": "America/Indiana/Indianapolis",
    "MI": "America/Detroit",
    **dict.fromkeys(_CENTRAL_STATES.split(), CENTRAL),
    **dict.fromkeys(["CO", "MT", "NM", "UT", "WY"], MOUNTAIN),
    "ID": "America/Boise",
    "AZ": "America/Phoenix",  # no DST (the Navajo Nation keeps DST; its ZIPs are not separable by ZIP3)
    **dict.fromkeys(["CA", "NV", "OR", "WA"], PACIFIC),
    "AK": "America/Anchorage",  # the Aleutians west of 169.5° W (America/Adak) share ZIP3 995
    "HI": "Pacific/Honolulu",
    "PR": "America/Puerto_Rico",
    "VI": "America/St_Thomas",
    "GU": "Pacific/Guam",
    "MP": "Pacific/Saipan",
    "AS": "Pacific/Pago_Pago",
    "MH": "Pacific/Majuro",
    "PW": "Pacific/Palau",
    "FM": "Pacific/Pohnpei",  # Chuuk and Yap are an hour behind; they share ZIP3 969 with Pohnpei
}
"""Each state's majority zone (by population). Military codes (AA, AE, AP) use the fallback."""

ZIP3_ZONES: dict[tuple[str, str], str] = {
    # Florida: the panhandle west of the Apalachicola River (Pensacola, Panama City).
    ("FL", "324"): CENTRAL,
    ("FL", "325"): CENTRAL,
    # Indiana: the Chicago (Gary) and Evansville corners.
    ("IN", "463"): CENTRAL,
    ("IN", "464"): CENTRAL,
    ("IN", "476"): CENTRAL,
    ("IN", "477"): CENTRAL,
    # Kentucky: the western half (Paducah, Bowling Green, Owensboro, Henderson).
    **dict.fromkeys([("KY", zip3) for zip3 in ("420", "421", "422", "423", "424")], CENTRAL),
    # Tennessee: East Tennessee (Chattanooga, Knoxville, the Tri-Cities). ZIP3 373 also covers a
    # few Central counties (Coffee, Franklin, Grundy, Marion): Eastern is its majority.
    **dict.fromkeys([("TN", zip3) for zip3 in ("373", "374", "376", "377", "378", "379")], EASTERN),
    # Texas: El Paso and Hudspeth/Culberson. 798 also covers Alpine and Marfa (Central), fewer people.
    **dict.fromkeys([("TX", zip3) for zip3 in ("798", "799", "885")], MOUNTAIN),
    # Kansas's four Mountain counties share their ZIP3s with Central ones: left Central.
    # Nebraska: the panhandle (Scottsbluff, Alliance). 691 (North Platte, Ogallala, Sidney) is mixed: Central.
    ("NE", "693"): MOUNTAIN,
    # The Dakotas: south-west North Dakota (Dickinson), West River South Dakota (Rapid City).
    ("ND", "586"): MOUNTAIN,
    ("SD", "577"): MOUNTAIN,
    # Idaho: the northern panhandle (Coeur d'Alene, Lewiston) keeps Pacific time.
    ("ID", "835"): PACIFIC,
    ("ID", "838"): PACIFIC,
    # Oregon: Malheur County (Ontario) keeps Mountain time, with Boise.
    ("OR", "979"): "America/Boise",
    # Michigan: the four Upper Peninsula counties on Central time share ZIP3s 498/499 with Eastern
    # ones: left Eastern.
}
"""(state, ZIP3) → zone, for the parts of split states that a ZIP3 separates cleanly."""

_ZIP = re.compile(r"^\s*(\d{3})\d{2}(?:-?\d{4})?\s*$")


class SendWindow(BaseModel):
    """Local wall-clock hours [start, end) in which messages may be sent; start > end spans midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: time
    end: time

    @model_validator(mode="after")
    def _meaningful(self) -> SendWindow:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("send window times are local wall-clock times: give them without a UTC offset")
        if self.start == self.end:
            raise ValueError("start and end are equal: omit the send window to send at any hour")
        return self

    @property
    def overnight(self) -> bool:
        return self.start > self.end

    def contains(self, local: time) -> bool:
        """Whether a local wall-clock time is inside the window."""
        if self.overnight:
            return local >= self.start or local < self.end
        return self.start <= local < self.end


def _zone(key: str) -> ZoneInfo:
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown IANA time zone {key!r}") from error


def _utc(now_utc: datetime) -> datetime:
    if now_utc.tzinfo is None or now_utc.utcoffset() is None:
        raise ValueError("now_utc must be timezone-aware")
    return now_utc.astimezone(UTC)


def _zip3(zip_code: object) -> str | None:
    match = _ZIP.match(zip_code) if isinstance(zip_code, str) else None
    return match.group(1) if match else None


def time_zone_for(state: str | None, zip_code: str | None, fallback: str = DEFAULT_FALLBACK_ZONE) -> str:
    """The IANA zone for a US postal address; ``fallback`` when the state is missing or unknown.

    Only strings count: a ZIP that is not 5 digits (or ZIP+4), or not a string (a number has lost
    its leading zeros, a missing value may be None or NaN), is ignored and the state's zone applies.
    """
    _zone(fallback)
    return _zone_for_zip3(state, _zip3(zip_code), fallback)


def _zone_for_zip3(state: object, zip3: str | None, fallback: str) -> str:
    code = state.strip().upper() if isinstance(state, str) else ""
    zone = STATE_ZONES.get(code)
    if zone is None:
        return fallback
    return ZIP3_ZONES.get((code, zip3 or ""), zone)


def time_zones_for(
    states: Iterable[object], zip_codes: Iterable[object], fallback: str = DEFAULT_FALLBACK_ZONE
) -> list[str]:
    """``time_zone_for`` over whole columns (lists, numpy arrays, polars Series...).

    Each distinct ZIP is parsed once and each distinct (state, ZIP3) resolved once: a million
    recipients cost two dictionary hits each.
    """
    _zone(fallback)
    zip3s: dict[object, str | None] = {}
    zones: dict[tuple[object, str | None], str] = {}
    result = []
    for state, zip_code in zip(states, zip_codes, strict=True):
        try:
            zip3 = zip3s[zip_code]
        except KeyError:
            zip3 = zip3s[zip_code] = _zip3(zip_code)
        try:
            zone = zones[state, zip3]
        except KeyError:
            zone = zones[state, zip3] = _zone_for_zip3(state, zip3, fallback)
        result.append(zone)
    return result


def is_open(window: SendWindow, zone: str, now_utc: datetime) -> bool:
    """Whether the window is open at ``now_utc`` on the wall clock of ``zone``."""
    return window.contains(_utc(now_utc).astimezone(_zone(zone)).time())


def open_now(window: SendWindow, zones: Iterable[str], now_utc: datetime) -> list[bool]:
    """``is_open`` per recipient, computed once per distinct zone."""
    now = _utc(now_utc)
    verdicts: dict[str, bool] = {}
    result = []
    for zone in zones:
        verdict = verdicts.get(zone)
        if verdict is None:
            verdict = verdicts[zone] = is_open(window, zone, now)
        result.append(verdict)
    return result


_SCAN_STEP = timedelta(hours=1)  # no zone changes its UTC offset twice within an hour
_HORIZON = timedelta(days=4)  # a window opens at least once in any 3 local days


def _offset_at(zone: ZoneInfo, posix_seconds: float) -> timedelta:
    offset = datetime.fromtimestamp(posix_seconds, zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset
    return offset


def _next_change(zone: ZoneInfo, after: datetime, until: datetime) -> datetime:
    """The first instant after ``after`` with a different UTC offset, or ``until`` if none comes first."""
    offset = _offset_at(zone, after.timestamp())
    low = after
    while low < until:
        high = min(low + _SCAN_STEP, until)
        if _offset_at(zone, high.timestamp()) != offset:
            # Offsets change on whole seconds: bisect down to the second.
            lo, hi = math.floor(low.timestamp()), math.ceil(high.timestamp())
            while hi - lo > 1:
                middle = (lo + hi) // 2
                if _offset_at(zone, middle) == offset:
                    lo = middle
                else:
                    hi = middle
            return datetime.fromtimestamp(hi, UTC)
        low = high
    return until


def next_opening(window: SendWindow, zone: str, now_utc: datetime) -> datetime:
    """The first instant at or after ``now_utc`` at which the window is open, in UTC.

    Walks the zone's spans of constant UTC offset. Within a span the wall clock runs evenly, so
    the first open instant is either the span's beginning or the next time the clock shows
    ``start``; an offset change (a DST switch) can open the window by itself, which is why every
    span's beginning is checked.
    """
    tz = _zone(zone)
    instant = _utc(now_utc)
    horizon = instant + _HORIZON
    while instant < horizon:
        span_end = _next_change(tz, instant, horizon)
        offset = _offset_at(tz, instant.timestamp())
        local = (instant + offset).replace(tzinfo=None)
        if window.contains(local.time()):
            return instant
        opening = datetime.combine(local.date(), window.start)
        if opening <= local:
            opening += timedelta(days=1)
        candidate = (opening - offset).replace(tzinfo=UTC)
        if candidate < span_end:
            return candidate
        instant = span_end
    raise AssertionError("a send window opens within any four days")  # unreachable for a valid window
