"""Progress bars: tqdm's widget bar in a Jupyter kernel, a text bar on a terminal, none when piped.

``progress=None`` (the default everywhere) shows a bar when stderr is a
terminal or when the code runs in a notebook kernel (where stderr is never a
terminal); ``True``/``False`` force it on or off. In a kernel the bar is
tqdm's notebook widget when ipywidgets is installed (the ``jupyter`` extra),
else tqdm's text bar, which Jupyter shows as stderr output.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.std import tqdm as text_tqdm


def in_notebook() -> bool:
    """True inside a Jupyter (IPython) kernel, as tqdm.autonotebook decides it."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - a half-imported IPython is no notebook
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def progress_enabled(progress: bool | None) -> bool:
    """``None`` means: show a bar on a terminal or in a notebook kernel, not when piped."""
    if progress is not None:
        return bool(progress)
    if in_notebook():
        return True
    stream = sys.stderr
    return stream is not None and hasattr(stream, "isatty") and stream.isatty()


def bar_class() -> type:
    """tqdm's notebook bar in a kernel with ipywidgets, else the text bar."""
    if in_notebook():
        try:
            import ipywidgets  # noqa: F401 - tqdm.notebook needs it to draw
            from tqdm.notebook import tqdm as notebook_tqdm
        except ImportError:
            return text_tqdm
        return notebook_tqdm
    return text_tqdm


def bar(desc: str, total: int | None, unit: str, progress: bool | None) -> Any:
    """A tqdm bar; ``total`` None (unknown, e.g. a query) shows a counter instead."""
    enabled = progress_enabled(progress)
    cls = bar_class() if enabled else text_tqdm
    return cls(
        desc=desc,
        total=total if total is not None and total >= 0 else None,
        unit=unit,
        unit_scale=unit == "B",
        dynamic_ncols=True,
        disable=not enabled,
        leave=False,
    )
