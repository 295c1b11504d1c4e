"""Flight SQL pushdown: one selective query with and without projection and predicate pushdown.

A bridge over a fresh embedded store runs in this process (so the benchmark
can switch pushdown off on its Flight SQL face and read the rows-read report
the server keeps per statement); the client is the real ADBC Flight SQL driver
(``adbc-driver-flightsql``). The table has ``rows`` cells over 1,000 images;
the query keeps one image (0.1 % of the rows) and two of the four columns.

Figures per variant: median wall time of ``repeats`` runs, rows the backend
read, rows returned; and the ratio of the two variants. Both variants must
return the same result, or the benchmark fails.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SQL = ("SELECT well, count(*) AS cells, avg(area) AS mean_area FROM {table} "
       "WHERE image = 7 GROUP BY well ORDER BY well")


def _frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "well": rng.integers(1, 385, rows), "image": rng.integers(0, 1000, rows),
        "area": rng.gamma(4.0, 25.0, rows),
        "label": rng.choice(["nucleus", "cytoplasm", "membrane"], rows),
    })  # fmt: skip


def _variant(face: Any, conn: Any, sql: str, pushdown: bool, repeats: int
             ) -> tuple[dict[str, Any], pd.DataFrame]:
    face.pushdown = pushdown
    times, result = [], pd.DataFrame()
    for _ in range(repeats):
        start = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(sql)
            result = cur.fetch_df()
        times.append(time.perf_counter() - start)
    report = next(r for r in reversed(face.reports) if r.sql == sql)
    return {"seconds": round(statistics.median(times), 4),
            "rows_read": report.total_rows_read, "rows_out": len(result)}, result


def run(rows: int, repeats: int, out: Path) -> dict[str, Any]:
    import adbc_driver_flightsql.dbapi as fsql

    import flight_client
    from flight_server.backends.local import LocalStore
    from flight_server.service import FlightService
    from flight_server.sql import face

    with tempfile.TemporaryDirectory(prefix="omero-flight-sql-") as tmp:
        store = LocalStore(Path(tmp) / "store")
        store.add_group("bench", "read-only")
        store.add_user("bench", "bench-password-123", groups=["bench"])
        server = FlightService(store, "grpc://127.0.0.1:0")
        try:
            with flight_client.connect_to_omero(server=server.url, username="bench",
                                                password="bench-password-123",
                                                interactive=False, allow_token=False,
                                                keep_alive=False) as client:
                ann = flight_client.upload_table(_frame(rows), "cells", links=[("Image", 1)],
                                                 omero_connector=client, progress=False)
            sql = SQL.format(table=f"a_{ann}")
            conn = fsql.connect(server.url, db_kwargs={"username": "bench",
                                                       "password": "bench-password-123"},
                                autocommit=True)
            try:
                sql_face = face(server)
                pushed, a = _variant(sql_face, conn, sql, True, repeats)
                whole, b = _variant(sql_face, conn, sql, False, repeats)
            finally:
                conn.close()
        finally:
            server.shutdown()
            store.close()
    pd.testing.assert_frame_equal(a, b)
    result = {
        "benchmark": "sql", "rows": rows, "repeats": repeats, "query": SQL,
        "with_pushdown": pushed, "without_pushdown": whole,
        "rows_read_ratio": round(whole["rows_read"] / max(1, pushed["rows_read"]), 1),
        "speedup": round(whole["seconds"] / pushed["seconds"], 2),
    }
    print(f"Flight SQL (ADBC) on a {rows:,}-row table: {SQL.format(table='a_<id>')}")
    print(f"  {'':<18}{'seconds':>10}{'rows read':>14}{'rows out':>10}")
    for label, fig in (("with pushdown", pushed), ("without pushdown", whole)):
        print(f"  {label:<18}{fig['seconds']:>10}{fig['rows_read']:>14,}{fig['rows_out']:>10}")
    print(f"  pushdown reads {result['rows_read_ratio']}x fewer rows, "
          f"{result['speedup']}x faster")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nfigures written to {out}")
    return result
