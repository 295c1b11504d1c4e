"""Repeated timings, interleaved across contenders, summarized as median and spread."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Timing:
    """Seconds of each repetition of one contender."""

    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def as_json(self) -> dict[str, Any]:
        return {"median_s": round(self.median, 4), "min_s": round(min(self.runs), 4),
                "max_s": round(max(self.runs), 4), "runs_s": [round(r, 4) for r in self.runs]}

    def cell(self) -> str:
        """``median (min-max)`` in seconds."""
        if len(self.runs) == 1:
            return f"{self.median:7.3f}"
        return f"{self.median:7.3f} ({min(self.runs):.3f}-{max(self.runs):.3f})"


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds for one call, after a garbage collection so no contender pays another's."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved(contenders: dict[str, Callable[[], Any]], reps: dict[str, int],
                check: Callable[[str, Any], None] | None = None,
                quick_reps: int = 0, quick_seconds: float = 1.0) -> dict[str, Timing]:
    """Round robin: repetition 1 of every contender, then repetition 2, ... (same conditions).

    A contender whose first run took under ``quick_seconds`` runs ``quick_reps`` times when
    that is more than its ``reps``: a read of tens of milliseconds moves by as much from run
    to run as the differences measured, and more runs of it cost little.
    """
    out = {name: Timing() for name in contenders}
    wanted = dict(reps)
    for rep in range(max(max(reps.values(), default=0), quick_reps)):
        for name, fn in contenders.items():
            if rep >= wanted[name]:
                continue
            seconds, result = time_once(fn)
            if check is not None:
                check(name, result)
            del result
            out[name].runs.append(seconds)
            if rep == 0 and seconds < quick_seconds:
                wanted[name] = max(wanted[name], quick_reps)
            print(f"  {name:34} {seconds:8.3f} s", flush=True)
    return out
