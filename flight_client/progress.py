"""Progress bars (tqdm.auto): shown on a terminal, silent otherwise or with ``progress=False``."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress_enabled(progress: bool | None) -> bool:
    """``None`` means: show a bar only when stderr is a terminal."""
    if progress is not None:
        return bool(progress)
    stream = sys.stderr
    return stream is not None and hasattr(stream, "isatty") and stream.isatty()


def bar(desc: str, total: int | None, unit: str, progress: bool | None) -> Any:
    """A tqdm bar; ``total`` None (unknown, e.g. a query) shows a counter instead."""
    return tqdm(
        desc=desc,
        total=total if total is not None and total >= 0 else None,
        unit=unit,
        unit_scale=unit == "B",
        dynamic_ncols=True,
        disable=not progress_enabled(progress),
        leave=False,
    )
