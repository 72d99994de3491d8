"""Vectorized column builders: random streams, UUIDs, zero-padded digits, day/timestamp draws.

Strings are assembled as fixed-width byte matrices and handed to Arrow without a per-row loop.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import date

import numpy as np
import polars as pl
import pyarrow as pa

SECONDS_PER_DAY = 86_400
DAYS_PER_YEAR = 365.25
NO_TIMESTAMP = np.iinfo(np.int64).min
_EPOCH = date(1970, 1, 1)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_DASHES = (8, 13, 18, 23)


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent, reproducible generator per purpose, so adding draws in one module does
    not shift the values of another."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode())])))


def day_number(value: date) -> int:
    return (value - _EPOCH).days


def fixed_width_strings(matrix: np.ndarray) -> pl.Series:
    """Turn an (n, width) uint8 matrix of ASCII bytes into a polars String series."""
    rows, width = matrix.shape
    offsets = np.arange(0, (rows + 1) * width, width, dtype=np.int64)
    data = np.ascontiguousarray(matrix, dtype=np.uint8)
    array = pa.Array.from_buffers(pa.large_string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return pl.Series(pl.from_arrow(array))


def uuids(rng: np.random.Generator, count: int) -> pl.Series:
    """Random version-4 UUID strings drawn from `rng` (deterministic, unlike uuid4)."""
    raw = np.frombuffer(rng.bytes(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hex_digits = np.empty((count, 32), dtype=np.uint8)
    hex_digits[:, 0::2] = _HEX[raw >> 4]
    hex_digits[:, 1::2] = _HEX[raw & 0x0F]
    out = np.full((count, 36), ord("-"), dtype=np.uint8)
    source = 0
    target = 0
    for dash in (*_UUID_DASHES, 36):
        span = dash - target
        out[:, target:dash] = hex_digits[:, source : source + span]
        source += span
        target = dash + 1
    return fixed_width_strings(out)


def digits(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal digits of non-negative integers as an (n, width) ASCII matrix."""
    values = np.asarray(values, dtype=np.int64)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers) % 10 + ord("0")).astype(np.uint8)


def literal(text: str, count: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text.encode("ascii"), dtype=np.uint8), (count, len(text)))


def patterned(*parts: np.ndarray) -> pl.Series:
    """Concatenate fixed-width byte matrices (from `digits`/`literal`) into one String series."""
    return fixed_width_strings(np.hstack(parts))


def choose(rng: np.random.Generator, count: int, shares: Sequence[float]) -> np.ndarray:
    weights = np.asarray(shares, dtype=np.float64)
    return rng.choice(len(weights), size=count, p=weights / weights.sum())


def labels(values: Sequence[str | None], index: np.ndarray) -> pl.Series:
    return pl.Series(values=list(values), dtype=pl.String).gather(index)


def uniform_days(rng: np.random.Generator, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """One day uniformly in [low, high] per row (high is clipped up to low)."""
    high = np.maximum(high, low)
    return low + np.floor(rng.random(low.shape[0]) * (high - low + 1)).astype(np.int64)


def daytime_timestamps(rng: np.random.Generator, days: np.ndarray) -> np.ndarray:
    """Epoch seconds at a random time of day between 07:00 and 19:00 on each day."""
    return days.astype(np.int64) * SECONDS_PER_DAY + rng.integers(7 * 3600, 19 * 3600, size=days.shape[0])


def datetimes(epoch_seconds: np.ndarray) -> pl.Series:
    """Epoch seconds (`NO_TIMESTAMP` = null) as a polars Datetime series."""
    seconds = pl.Series(values=np.asarray(epoch_seconds, dtype=np.int64))
    return pl.from_epoch(seconds, time_unit="s").set(seconds == NO_TIMESTAMP, None)


def dates(day_numbers: np.ndarray, missing: np.ndarray | None = None) -> pl.Series:
    series = pl.Series(values=np.asarray(day_numbers, dtype=np.int32)).cast(pl.Date)
    return series if missing is None else series.set(pl.Series(values=missing), None)
