"""Run one measured piece in a fresh spawned interpreter and read back its peak memory.

Spawned (not forked) so a child starts without the parent's heap; the peak it reports is
``ru_maxrss`` of the whole child process: interpreter, imports and the piece's data together.
"""

from __future__ import annotations

import importlib
import multiprocessing
import resource
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_KIB_PER_MB = 1024


def peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (_KIB_PER_MB * _KIB_PER_MB if sys.platform == "darwin" else _KIB_PER_MB)


def _measured(target: str, args: tuple[Any, ...]) -> dict[str, Any]:
    module, name = target.split(":")
    result = getattr(importlib.import_module(module), name)(*args)
    return {**result, "peak_mb": round(peak_mb(), 1)}


def run_isolated(target: str, *args: Any) -> dict[str, Any]:
    """``module:function`` called with ``args`` in a new process: its result dict plus that process's
    ``peak_mb``. Named by string so the parent never imports the measured code (and stays small)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_measured, target, args).result()
