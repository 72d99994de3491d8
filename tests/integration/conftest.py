"""Run the real pipeline once per module, through the real CLIs, into a fresh data home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from carecast.crypto.kms import LocalKms
from carecast.crypto.sealed_file import open_sealed

AS_OF = "2026-11-23"


def run_cli(args: list[str], home: Path, temp: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "CARECAST_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "TMPDIR": str(temp),
    }
    completed = subprocess.run(args, env=environment, capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def carecast(args: list[str], home: Path, temp: Path) -> subprocess.CompletedProcess:
    return run_cli([sys.executable, "-m", "carecast.cli", *args], home, temp)


def last_json_line(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def read_landed(home: Path, source: str, table: str) -> pl.DataFrame:
    """Decrypt one landed extract into an all-string frame (the tests' independent view of the data)."""
    folder = max((home / "landing" / source).iterdir())
    sealed = next(folder.glob(f"{table}.*.enc"))
    data = open_sealed(sealed, LocalKms(home / "keys"))
    if sealed.name.endswith(".ndjson.enc"):
        return pl.read_ndjson(data).select(pl.all().cast(pl.String))
    return pl.read_csv(data, infer_schema=False)


@pytest.fixture(scope="module")
def temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tmpdir")
