"""``omero-flight demo``: the whole bridge on this machine, end to end, with timings.

Starts a bridge over a throw-away embedded store on a free loopback port,
uploads a synthetic measurement table (one row per segmented object), then
reads it back through Arrow Flight into pandas, Polars and DuckDB, with a
column selection and a query, and prints what it did and how fast.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

COLUMNS = ["object", "image", "area", "mean_intensity", "label"]
QUERY = '(area > min_area) & (label == "nucleus")'
VARIABLES = {"min_area": 400.0}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="run a local bridge, upload a table and read it back (no OMERO needed)",
        description="Start a bridge over a temporary embedded store on 127.0.0.1, upload a "
                    "synthetic measurement table, read it back through Arrow Flight into "
                    "pandas, Polars and DuckDB with a column selection and a query, and "
                    "print timings. Nothing is left behind unless --store is given.",
    )
    p.add_argument("--rows", type=int, default=1_000_000,
                   help="rows in the synthetic table (default 1000000)")
    p.add_argument("--store", help="keep the store in this folder instead of a temporary one")
    p.set_defaults(func=run)


class Report:
    """Collects timed steps and prints them as they finish."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float, str]] = []

    def time(self, label: str, fn: Callable[[], T], detail: Callable[[T, float], str]) -> T:
        """Run ``fn``, print the label, the seconds it took and ``detail(result, seconds)``."""
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        text = detail(result, seconds)
        self.steps.append((label, seconds, text))
        print(f"  {label:<46} {seconds:7.2f} s   {text}", flush=True)
        return result


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds / 1e6:.2f} M rows/s" if seconds > 0 else ""


@contextlib.contextmanager
def _store_dir(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="omero-flight-demo-") as tmp:
        yield Path(tmp)


def run(args: argparse.Namespace) -> int:
    from flight_server.cli import CliError

    if args.rows < 1:
        raise CliError("--rows must be at least 1")
    with _store_dir(args.store) as folder:
        _demo(folder, args.rows)
    return 0


def _demo(folder: Path, rows: int) -> None:
    import flight_client as omero2pandas
    from flight_server.backends.local import LocalStore
    from flight_server.service import FlightService
    from flight_server.synthetic import measurement_table

    store = LocalStore(folder)
    password = secrets.token_urlsafe(12)
    user = f"demo-{secrets.token_hex(3)}"
    store.add_group(f"{user}-lab", "read-only")
    store.add_user(user, password, groups=[f"{user}-lab"])
    server = FlightService(store, "grpc://127.0.0.1:0")
    print(f"omero-flight demo: bridge on {server.url}, embedded store in {folder}\n")
    report = Report()
    try:
        df = report.time(f"make {rows:,} synthetic measurement rows",
                         lambda: measurement_table(rows),
                         lambda d, _: f"{d.shape[1]} columns, "
                                   f"{d.memory_usage(deep=True).sum() / 2**20:.0f} MiB in pandas")
        with omero2pandas.connect_to_omero(server=server.url, username=user, password=password,
                                           interactive=False, allow_token=False) as conn:
            _steps(report, omero2pandas, conn, df)
    finally:
        server.shutdown()
        store.close()
    total = sum(s for _, s, _ in report.steps[1:])
    print(f"\ndone: {len(report.steps) - 1} Flight operations in {total:.2f} s")


def _steps(report: Report, o2p: Any, conn: Any, df: Any) -> None:
    rows = len(df)
    ann = report.time("upload_table (DataFrame -> OMERO.tables HDF5)",
                      lambda: o2p.upload_table(df, "demo measurements",
                                               links=[("Image", 1), ("Dataset", 1)],
                                               omero_connector=conn),
                      lambda a, t: f"annotation {a}, {_rate(rows, t)}")
    report.time("get_table_size", lambda: o2p.get_table_size(annotation_id=ann,
                                                             omero_connector=conn),
                lambda s, _: f"{s[0]:,} rows x {s[1]} columns")
    report.time("read_table -> pandas (all columns)",
                lambda: o2p.read_table(annotation_id=ann, omero_connector=conn),
                lambda d, t: f"{len(d):,} rows, {_rate(len(d), t)}")
    sel = report.time(f"read_table -> pandas, {len(COLUMNS)} columns + query",
                      lambda: o2p.read_table(annotation_id=ann, column_names=COLUMNS,
                                             query=QUERY, variables=VARIABLES,
                                             omero_connector=conn),
                      lambda d, _: f"{len(d):,} rows match {QUERY} (min_area=400)")
    report.time("read_polars, same selection and query",
                lambda: o2p.read_polars(annotation_id=ann, column_names=COLUMNS,
                                        query=QUERY, variables=VARIABLES, omero_connector=conn),
                lambda p, _: f"{p.height:,} rows, polars {type(p).__name__}"
                          + (" (same rows as pandas)" if p.height == len(sel) else " (MISMATCH)"))
    summary = report.time(
        "read_duckdb -> per-label count and mean area",
        lambda: o2p.read_duckdb(annotation_id=ann, column_names=["label", "area"],
                                omero_connector=conn)
        .aggregate("label, count(*) AS objects, round(avg(area), 1) AS mean_area", "label")
        .order("label").fetchall(),
        lambda r, _: f"{len(r)} labels",
    )
    for label, objects, mean_area in summary:
        print(f"      {label:<14} {objects:>9,} objects   mean area {mean_area}")

