"""The results: a table for people, one JSON line for machines (and a copy under bench/results/)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(stages: dict[str, dict[str, Any]]) -> str:
    header = (
        f"{'stage':<18} {'seconds':>10} {'baseline s':>11} {'× faster':>9} {'peak MB':>9} {'base MB':>8} {'rows':>12}"
    )
    lines = [header, "-" * len(header)]
    for name, stage in stages.items():
        ratio = stage.get("ratio")
        rows = stage.get("rows")
        lines.append(
            f"{name:<18} {_cell(stage['seconds'], 2):>10} {_cell(stage['baseline_seconds'], 2):>11} "
            f"{'-' if ratio is None else f'{ratio:.2f}×':>9} {_cell(stage['peak_mb'], 0):>9} "
            f"{_cell(stage.get('baseline_peak_mb'), 0):>8} {'-' if rows is None else f'{rows:,d}':>12}"
        )
    return "\n".join(lines)


def write_json(summary: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}-{summary['patients']}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path
