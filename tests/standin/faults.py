"""Test hook: make OMERO.tables calls hang or fail, and count them (the stand-in only).

A test writes ``<data dir>/standin-faults.json``, e.g.::

    {"read": {"mode": "hang", "seconds": 3}, "addData": {"mode": "die"}}

and every later call of that Table operation on the stand-in first sleeps
(``hang``: a frozen OMERO.tables, for ``seconds`` or until the fault is
lifted) or fails the way Glacier2 answers when the OMERO.tables service
behind it has died (``die``: ``Ice.UnknownLocalException``
naming a lost connection), until the file is removed. Calls of each operation
are counted and published in the status file (``table_calls``), so a test can
see how many ``addData`` calls an upload made.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import Ice

FAULTS_FILE = "standin-faults.json"
MAX_HANG = 60.0
COUNTED = ("addData", "read", "slice", "getWhereList")


class TableFaults:
    """Counts Table calls and applies the faults a test asked for."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FAULTS_FILE
        self._lock = threading.Lock()
        self.calls: dict[str, int] = dict.fromkeys(COUNTED, 0)

    def _fault(self, operation: str) -> dict[str, Any] | None:
        try:
            faults = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        fault = faults.get(operation) if isinstance(faults, dict) else None
        return fault if isinstance(fault, dict) else None

    def before(self, operation: str) -> None:
        """Count one call of ``operation`` and apply its fault, if any."""
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1
        fault = self._fault(operation)
        if fault is None:
            return
        if fault.get("mode") == "hang":  # until the time is up or the fault is lifted
            deadline = time.monotonic() + min(MAX_HANG, float(fault.get("seconds", 5)))
            while time.monotonic() < deadline and self._fault(operation) is not None:
                time.sleep(0.05)
        elif fault.get("mode") == "die":
            raise Ice.UnknownLocalException(
                "Ice::ConnectionLostException: recv() returned zero "
                "(stand-in fault: the OMERO.tables service died)")

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.calls)
