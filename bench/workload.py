"""The benchmark's data and run settings: one landing batch, one campaign, one fixed as-of date."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from carecast.crypto.kms import LocalKms
from carecast.home import CarecastHome
from carecast.project import load_project
from carecast.runtime import Runtime
from carecast.synth import DEFAULT_AS_OF, generate_landing

AS_OF = DEFAULT_AS_OF
"""A past date, so ``Runtime.send_time`` is a fixed instant (the end of that day) in every child
process, and the naive baseline can judge consent as of exactly the same moment."""
CAMPAIGN = "breast_screening_reminder"
BENCH_CAMPAIGN_PREFIX = "bench_"
"""The audiences stage makes up a campaign ``bench_<segment>`` for each segment no shipped campaign uses."""
SEED = 7


def open_runtime(home: Path) -> Runtime:
    return Runtime.open(CarecastHome(home), load_project(), as_of=AS_OF)


def generate(home: Path, patients: int) -> dict[str, Any]:
    """A sealed landing batch, as ``carecast generate`` writes it."""
    data_home = CarecastHome(home).ensure()
    started = time.perf_counter()
    counts = generate_landing(data_home.landing, patients, seed=SEED, as_of=AS_OF, kms=LocalKms(data_home.keys))
    return {"seconds": time.perf_counter() - started, "rows": sum(counts.values())}
