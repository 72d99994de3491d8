"""Orchestration: generate, time carecast's stages, time the naive script, compare, report.

The parent only starts children and collects numbers; it imports none of the measured code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.isolation import run_isolated
from bench.report import table, write_json

CARECAST_STAGES = ("ingest", "models", "segment", "audience", "render", "deliver", "report")
DEFAULT_MAIL_SAMPLE = 50_000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="use this folder as CARECAST_HOME and keep it afterwards")
    parser.add_argument(
        "--mail-sample",
        type=int,
        default=DEFAULT_MAIL_SAMPLE,
        help="the naive render+deliver loop sends at most this many messages and scales its time up "
        f"linearly to the whole audience (default {DEFAULT_MAIL_SAMPLE:,})",
    )
    return parser


@contextlib.contextmanager
def _home(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=False)
        yield keep.resolve()
        return
    folder = Path(tempfile.mkdtemp(prefix="carecast-bench-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _measure_carecast(home: Path, patients: int) -> dict[str, dict[str, Any]]:
    measured = {"generate": run_isolated("bench.workload:generate", home, patients)}
    _progress(f"generate: {measured['generate']['seconds']:.1f} s")
    for stage in CARECAST_STAGES:
        measured[stage] = run_isolated("bench.carecast_stages:run_stage", home, stage)
        _progress(f"{stage}: {measured[stage]['seconds']:.1f} s")
    return measured


def _measure_naive(home: Path, mail_sample: int) -> tuple[dict[str, Any], dict[str, Any]]:
    plain, naive_lake = home / "naive-plain-landing", home / "naive-lake"
    try:
        try:
            run_isolated("bench.naive_ingest:decrypt_landing", home, plain)
            ingest = run_isolated("bench.naive_ingest:naive_ingest", plain, naive_lake)
        finally:
            shutil.rmtree(plain, ignore_errors=True)
        _progress(f"naive ingest: {ingest['seconds']:.1f} s")
        pipeline = run_isolated("bench.naive_pipeline:naive_pipeline", home, naive_lake, mail_sample)
        _progress("naive pipeline: " + ", ".join(f"{k} {v:.1f} s" for k, v in pipeline["seconds"].items()))
    finally:
        shutil.rmtree(naive_lake, ignore_errors=True)
    return ingest, pipeline


def _stage(seconds: float, baseline: float | None, peak_mb: float, **extra: Any) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 3),
        "baseline_seconds": None if baseline is None else round(baseline, 3),
        "peak_mb": peak_mb,
        "ratio": None if baseline is None or seconds <= 0 else round(baseline / seconds, 2),
        **extra,
    }


def _summarize(
    patients: int,
    carecast: dict[str, dict[str, Any]],
    ingest: dict[str, Any],
    pipeline: dict[str, Any],
    parquet: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    baselines = {"ingest": ingest["seconds"], **pipeline["seconds"]}
    baseline_peaks = {"ingest": ingest["peak_mb"], **dict.fromkeys(pipeline["seconds"], pipeline["peak_mb"])}
    stages: dict[str, dict[str, Any]] = {}
    for name, measured in carecast.items():
        extra: dict[str, Any] = {"rows": measured["rows"]}
        if name in baseline_peaks:
            extra["baseline_peak_mb"] = baseline_peaks[name]
        if name in ("render", "deliver") and pipeline["sampled_rows"] is not None:
            extra["baseline_sampled_rows"] = pipeline["sampled_rows"]
        stages[name] = _stage(measured["seconds"], baselines.get(name), measured["peak_mb"], **extra)
    stages["parquet_encrypted"] = _stage(
        parquet["seconds"], parquet["baseline_seconds"], parquet["peak_mb"], rows=parquet["rows"]
    )
    return stages


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    with _home(args.keep) as home:
        carecast = _measure_carecast(home, args.patients)
        ingest, pipeline = _measure_naive(home, args.mail_sample)
        parquet = run_isolated("bench.parquet_cost:parquet_cost", home)
    stages = _summarize(args.patients, carecast, ingest, pipeline, parquet)
    audience = {"carecast": carecast["audience"]["rows"], "naive": pipeline["rows"]["audience"]}
    summary = {
        "patients": args.patients,
        "stages": stages,
        "audience_check": {**audience, "match": audience["carecast"] == audience["naive"]},
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    print(f"carecast bench: {args.patients:,} patients (peak MB = whole child process, interpreter included)")
    print(table(stages))
    print(f"audience: carecast {audience['carecast']:,}, naive {audience['naive']:,}")
    naive_sent = {k: pipeline["rows"][k] for k in ("delivered", "bounced")}
    print(f"sent: carecast {carecast['deliver']['states']}, naive {naive_sent}")
    print(f"excluded: carecast {carecast['audience']['excluded']}, naive {pipeline['excluded']}")
    if pipeline["sampled_rows"] is not None:
        print(f"naive render/deliver timed on {pipeline['sampled_rows']:,} recipients, scaled to the audience")
    print(f"results: {write_json(summary)}")
    print(json.dumps(summary))
    if not summary["audience_check"]["match"]:
        _progress("audience sizes differ between carecast and the naive baseline")
        return 1
    return 0
