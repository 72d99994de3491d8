"""The naive ingest: plain landing files -> pandas -> per-row checks in Python -> plain Parquet.

The script a team would write without carecast receives extracts in the clear, so the sealed
landing batch is first decrypted (untimed) into a scratch folder of plain files; the caller deletes
that folder as soon as the baseline is done.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from carecast.crypto.kms import LocalKms
from carecast.crypto.sealed_file import open_sealed
from carecast.home import CarecastHome
from carecast.ingest.landing import batch_files, complete_batches
from carecast.project import default_project_dir, load_project

TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


def landing_tables() -> list[tuple[str, str, dict[str, Any]]]:
    """(source, table, table spec) read from sources.yml as plain YAML, as a script's config would be."""
    sources = yaml.safe_load((default_project_dir() / "dbt_like_models" / "sources.yml").read_text())["sources"]
    return [(source, table, spec) for source, body in sources.items() for table, spec in body["tables"].items()]


def plain_file(folder: Path, source: str, table: str) -> Path:
    return folder / f"{source}_{table}.{'ndjson' if source == 'events' else 'csv'}"


def decrypt_landing(home: Path, plain: Path) -> dict[str, Any]:
    """Untimed preparation: one plain copy of every landed extract."""
    data_home = CarecastHome(home)
    kms = LocalKms(data_home.keys)
    plain.mkdir(parents=True, exist_ok=True)
    registry = load_project().registry
    for batch in complete_batches(data_home.landing):
        for landed in batch_files(batch, registry):
            data = open_sealed(landed.path, kms) if landed.sealed else landed.path.read_bytes()
            plain_file(plain, landed.target_source, landed.table).write_bytes(data)
    return {"seconds": 0.0}


def _parses(value: str, formats: tuple[str, ...]) -> bool:
    for fmt in formats:
        try:
            datetime.strptime(value, fmt)
            return True
        except ValueError:
            continue
    return False


def _filled(value: object) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _valid_rows(frame: pd.DataFrame, spec: dict[str, Any]) -> list[bool]:
    """Required ids non-empty, dates and timestamps parseable, keys unique: one Python loop per row."""
    columns = list(frame.columns)
    declared = spec["columns"]
    required = [columns.index(c) for c, s in declared.items() if s.get("not_null") and c in columns]
    dates = [columns.index(c) for c, s in declared.items() if s.get("type") == "date" and c in columns]
    stamps = [columns.index(c) for c, s in declared.items() if s.get("type") == "timestamp" and c in columns]
    key = columns.index(spec["key"]) if spec.get("key") in columns else None
    seen: set[str] = set()
    keep = []
    for row in frame.itertuples(index=False, name=None):
        ok = all(_filled(row[i]) for i in required)
        ok = ok and all(not _filled(row[i]) or _parses(row[i].strip()[:10], ("%Y-%m-%d",)) for i in dates)
        ok = ok and all(not _filled(row[i]) or _parses(row[i].strip(), TIMESTAMP_FORMATS) for i in stamps)
        if ok and key is not None:
            ok = row[key] not in seen
            seen.add(row[key])
        keep.append(ok)
    return keep


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".ndjson":
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    return pd.read_csv(path, dtype=str)


def naive_ingest(plain: Path, output: Path) -> dict[str, Any]:
    output.mkdir(parents=True, exist_ok=True)
    tables = landing_tables()
    started = time.perf_counter()
    rows = rejected = 0
    for source, table, spec in tables:
        frame = _read(plain_file(plain, source, table))
        frame = frame[[c for c in frame.columns if c in spec["columns"]]]
        keep = _valid_rows(frame, spec)
        frame[keep].to_parquet(output / f"{source}_{table}.parquet", index=False)
        rows += len(frame)
        rejected += len(keep) - sum(keep)
    return {"seconds": time.perf_counter() - started, "rows": rows, "rejected": rejected}
