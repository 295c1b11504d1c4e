"""One large read through 1, 2 and 3 bridge replicas with Dask, side by side.

    python -m bench.scaleout [--rows 10000000] [--workers 2] [--split-rows 625000]

The replicas are ``omero-flight serve`` processes over one embedded store folder
with one signing key (tests/scaleout/replicas.py starts them); Dask's distributed
scheduler runs ``--workers`` worker processes on this machine. Each replica count
reads the whole table (``df.sum()``: every column travels, only sums come back)
and, for reference, the plain client reads it in one process. Results go to
bench/results/scaleout.json; see docs/scale-out.md for what they can and cannot
show on a small machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results" / "scaleout.json"


def _frame(rows: int) -> pd.DataFrame:
    idx = np.arange(rows, dtype="int64")
    return pd.DataFrame({"idx": idx, "val": idx * 0.25, "grp": idx % 7, "w": idx * 2.0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--split-rows", type=int, default=625_000,
                        help="rows per endpoint (default: 16 endpoints for 10M rows)")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed reads per setting (the median is reported)")
    args = parser.parse_args()

    import distributed

    import flight_client
    from flight_client.dask import read_dask
    from tests.conftest import PASSWORDS
    from tests.scaleout.replicas import start_replicas

    login = {"username": "alice", "password": PASSWORDS["alice"]}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        folder = Path(tmp)
        first = start_replicas(folder, 1, args.split_rows)
        try:
            started = time.perf_counter()
            ann = flight_client.upload_table(_frame(args.rows), "bench", parent_id=1,
                                             server=first.urls[0], progress=False, **login)
            upload_s = time.perf_counter() - started
            file_id = next(t["file_id"] for t in flight_client.list_tables(
                server=first.urls[0], **login) if t["annotation_id"] == ann)
            started = time.perf_counter()
            table = flight_client.read_arrow(file_id=file_id, server=first.urls[0],
                                             progress=False, **login)
            assert table.num_rows == args.rows
            rows.append({"setting": "plain client, 1 replica", "replicas": 1,
                         "seconds": round(time.perf_counter() - started, 2)})
            del table
        finally:
            first.close()
        print(f"uploaded {args.rows:,} rows in {upload_s:.1f} s")
        with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                      processes=True, dashboard_address=None) as cluster, \
                distributed.Client(cluster):
            for n in args.replicas:
                reps = start_replicas(folder, n, args.split_rows)
                try:
                    # warm: workers connected, files in the page cache
                    read_dask(file_id=file_id, server=reps.urls[0], **login).sum().compute()
                    times = []
                    for _ in range(args.repeat):
                        started = time.perf_counter()
                        # planned anew each time (a new sign-in, so new task keys: Dask
                        # cannot hand back a result it still holds)
                        df = read_dask(file_id=file_id, server=reps.urls[0], **login)
                        total = df.sum().compute()
                        times.append(time.perf_counter() - started)
                        assert int(total["grp"]) == int((np.arange(args.rows) % 7).sum())
                    rows.append({"setting": f"Dask, {args.workers} workers, {n} replica(s)",
                                 "replicas": n, "partitions": df.npartitions,
                                 "seconds": round(statistics.median(times), 2),
                                 "min_max": [round(min(times), 2), round(max(times), 2)]})
                finally:
                    reps.close()
    for row in rows:
        row["rows_per_s"] = round(args.rows / row["seconds"])
        print(f"{row['setting']:40s} {row['seconds']:8.2f} s {row['rows_per_s']:>14,} rows/s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": "python -m bench.scaleout " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()),
        "rows": args.rows, "columns": 4, "cpus": os.cpu_count(),
        "machine": platform.platform(), "results": rows,
    }, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
