"""Memory of the Arrow-native outputs: eager against streaming/lazy, on the same table.

For each table size this starts a real bridge (embedded store) in its own
process, uploads a synthetic measurement table, and runs the same aggregate
(``count(*)``, ``sum(area)``, ``max(mean_intensity)``) four ways, each in its
own child process (peak resident memory above the baseline after imports):

* ``read_duckdb`` (the table read into Arrow, then a DuckDB relation);
* ``read_duckdb(stream=True)`` (DuckDB scans the RecordBatchReader as it streams);
* ``read_polars`` (a polars DataFrame of the whole table);
* ``scan_polars`` (a LazyFrame: only the columns used are fetched, batch by batch).

``python -m bench.outputs [--rows N ...]`` runs it alone; ``python -m bench``
runs it with the other benchmarks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.memory import PASSWORD, USER, _upload_synthetic
from bench.servers import running_store_bridge

WAYS = ("duckdb_eager", "duckdb_stream", "polars_eager", "polars_lazy")
AGGREGATE_SQL = "count(*), sum(area), max(mean_intensity)"


def _aggregate(way: str, args: dict[str, Any]) -> list[Any]:
    import flight_client

    read = {"file_id": args["file_id"], "server": args["url"], "username": args["username"],
            "password": args["password"], "progress": False}
    if way.startswith("duckdb"):
        import duckdb

        relation = flight_client.read_duckdb(**read, connection=duckdb.connect(),
                                             stream=way == "duckdb_stream")
        return list(relation.aggregate(AGGREGATE_SQL).fetchall()[0])
    import polars as pl

    exprs = [pl.len(), pl.col("area").sum(), pl.col("mean_intensity").max()]
    if way == "polars_eager":
        return list(flight_client.read_polars(**read).select(exprs).row(0))
    return list(flight_client.scan_polars(**read).select(exprs).collect().row(0))


def probe(way: str, raw: str) -> None:
    """Child-process side: one aggregate, with its peak memory (see bench.probe)."""
    import duckdb  # noqa: F401 - imports count in the baseline
    import polars  # noqa: F401

    import flight_client  # noqa: F401
    from bench.probe import _reset_peak, _status_mib

    baseline = _status_mib("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    result = _aggregate(way, json.loads(raw))
    seconds = time.perf_counter() - start
    print(json.dumps({"way": way, "seconds": seconds, "baseline_mib": baseline,
                      "peak_mib": _status_mib("VmHWM"), "result": result}))


def _run_probe(way: str, args: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.outputs", "--probe", way,
                          json.dumps(args)], check=True, capture_output=True, text=True,
                         env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_size(rows: int, workdir: Path) -> dict[str, Any]:
    with running_store_bridge(workdir / f"store-outputs-{rows}") as bridge:
        file_id, table_mib = _upload_synthetic(bridge.url, rows)
        args = {"url": bridge.url, "username": USER, "password": PASSWORD, "file_id": file_id}
        probes = {way: _run_probe(way, args) for way in WAYS}
    answers = {json.dumps([round(v, 3) if isinstance(v, float) else v for v in p["result"]])
               for p in probes.values()}
    if len(answers) != 1:
        raise RuntimeError(f"the four outputs disagree: {answers}")
    return {
        "rows": rows,
        "table_arrow_mib": round(table_mib, 1),
        "peak_delta_mib": {w: round(p["peak_mib"] - p["baseline_mib"], 1)
                           for w, p in probes.items()},
        "seconds": {w: round(p["seconds"], 2) for w, p in probes.items()},
    }


def format_table(results: list[dict[str, Any]]) -> str:
    labels = {"duckdb_eager": "read_duckdb (in memory)",
              "duckdb_stream": "read_duckdb(stream=True)",
              "polars_eager": "read_polars (in memory)",
              "polars_lazy": "scan_polars (lazy, 2 of 8 columns)"}
    head = f"{'peak memory above baseline, MiB':36}" + "".join(
        f"{r['rows']:>12,} rows" + " " * 9 for r in results)
    lines = [head, "-" * len(head),
             f"{'table in Arrow (MiB)':36}" + "".join(
                 f"{r['table_arrow_mib']:>10.1f}" + " " * 16 for r in results)]
    for way in WAYS:
        lines.append(f"{labels[way]:36}" + "".join(
            f"{r['peak_delta_mib'][way]:>10.1f} ({r['seconds'][way]:5.2f} s)" + " " * 5
            for r in results))
    return "\n".join(lines)


def run(sizes: list[int], out: Path) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="omero-flight-bench-") as tmp:
        results = [measure_size(rows, Path(tmp)) for rows in sizes]
    print(format_table(results))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "outputs", "aggregate": AGGREGATE_SQL,
                               "sizes": sizes, "results": results}, indent=2) + "\n")
    print(f"\nfigures written to {out}")
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.outputs")
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "outputs.json")
    parser.add_argument("--probe", nargs=2, metavar=("WAY", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(*args.probe)
    else:
        run(args.rows, args.out)
