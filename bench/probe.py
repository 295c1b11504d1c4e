"""One measured client task, run in a child process so its peak memory is its own.

``python -m bench.probe TASK JSON`` prints one JSON line: the task's result,
seconds, the resident memory after imports (baseline) and the peak resident
memory during the task, both in MiB. The kernel's high-water mark (VmHWM) is
reset after the imports (``/proc/self/clear_refs``), so import-time peaks do
not count.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _connect(args: dict[str, Any]):
    import flight_client

    return flight_client.connect_to_omero(
        server=args["url"], username=args["username"], password=args["password"],
        interactive=False, allow_token=False,
    )


def task_download(args: dict[str, Any]) -> dict[str, Any]:
    """Stream a table to CSV or Parquet (by the target's suffix)."""
    import flight_client

    with _connect(args) as conn:
        flight_client.download_table(args["target"], file_id=args["file_id"],
                                     omero_connector=conn, progress=False)
    return {"bytes_written": Path(args["target"]).stat().st_size}


def task_read_table(args: dict[str, Any]) -> dict[str, Any]:
    """Materialize the table as a pandas DataFrame (the comparison point)."""
    import flight_client

    with _connect(args) as conn:
        df = flight_client.read_table(file_id=args["file_id"], omero_connector=conn,
                                      progress=False)
    return {"rows": len(df), "dataframe_mib": df.memory_usage(deep=True).sum() / 2**20}


def task_stream_discard(args: dict[str, Any]) -> dict[str, Any]:
    """Read every batch (of ``columns``, default all) and drop it: what the server streams."""
    import flight_client

    rows = 0
    with _connect(args) as conn:
        reader = flight_client.read_arrow(file_id=args["file_id"], omero_connector=conn,
                                          column_names=args.get("columns") or (),
                                          stream=True, progress=False)
        for batch in reader:
            rows += batch.num_rows
    return {"rows": rows}


def task_upload_csv(args: dict[str, Any]) -> dict[str, Any]:
    """Upload a CSV path through upload_table, which must read it in chunks."""
    import flight_client

    with _connect(args) as conn:
        ann = flight_client.upload_table(args["csv"], "bench upload", links=[("Image", 1)],
                                         chunk_size=args.get("chunk_size"),
                                         omero_connector=conn, progress=False)
    return {"annotation_id": ann}


def task_pandas_read_csv(args: dict[str, Any]) -> dict[str, Any]:
    """Read the whole CSV with pandas: the memory a non-chunked upload would need."""
    import pandas as pd

    df = pd.read_csv(args["csv"])
    return {"rows": len(df)}


TASKS = {name[5:]: fn for name, fn in globals().items() if name.startswith("task_")}


def main() -> None:
    name, raw = sys.argv[1], sys.argv[2]
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    import flight_client  # noqa: F401  (count imports in the baseline)

    baseline = _status_mib("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    result = TASKS[name](json.loads(raw))
    seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    print(json.dumps({"task": name, "seconds": seconds, "baseline_mib": baseline,
                      "peak_mib": peak, "result": result}))


if __name__ == "__main__":
    main()
