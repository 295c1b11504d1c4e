"""Soak: server memory across rounds of mixed load, to tell caching from leaks.

A real bridge (embedded store) runs in its own process. A warm-up round
fills whatever the server caches; then two equal rounds of the same mixed
load (uploads, whole reads, queries, row lists, listings and refused requests,
from several client threads) run one after the other. The server's resident
memory is read after each round. Caching shows as growth in the warm-up round
only; a leak shows as growth that repeats in round 1 and round 2.

Figures: resident MiB after start, after warm-up, after round 1 and after
round 2, and the growth per round (MiB and KiB per operation).
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from bench.servers import STORE_PASSWORD, STORE_USER, running_store_bridge

THREADS = 3


def _table(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"Image": rng.integers(1, 1000, rows), "area": rng.random(rows) * 500,
                         "label": [f"cell-{k % 97}" for k in range(rows)]})


def _worker(url: str, ops: int, rows: int, seed: int, errors: list[str]) -> None:
    import flight_client as o2p

    rng = random.Random(seed)
    with o2p.connect_to_omero(server=url, username=STORE_USER, password=STORE_PASSWORD,
                              interactive=False, allow_token=False, keep_alive=False) as conn:
        for i in range(ops):
            op = rng.choice(["upload", "read", "query", "rows", "list", "refused"])
            try:
                if op == "upload":
                    o2p.upload_table(_table(rows, seed * 10_000 + i), f"soak {seed}-{i}",
                                     links=[("Image", 1)], omero_connector=conn,
                                     progress=False)
                    continue
                tables = o2p.list_tables(omero_connector=conn)
                file_id = rng.choice(tables)["file_id"]
                if op == "read":
                    o2p.read_table(file_id=file_id, omero_connector=conn, progress=False)
                elif op == "query":
                    o2p.read_table(file_id=file_id, query="(area > 250) & (Image < 500)",
                                   omero_connector=conn, progress=False)
                elif op == "rows":
                    o2p.read_table(file_id=file_id, rows=rng.sample(range(rows), 50),
                                   omero_connector=conn, progress=False)
                elif op == "refused":
                    try:
                        o2p.read_table(file_id=file_id, query="nosuchcolumn > 1",
                                       omero_connector=conn, progress=False)
                    except o2p.InvalidRequest:
                        pass
            except Exception as exc:  # counted and reported: a soak must not hide failures
                errors.append(f"{op}: {type(exc).__name__}: {exc}")


def _round(url: str, ops: int, rows: int, seed: int) -> list[str]:
    errors: list[str] = []
    threads = [threading.Thread(target=_worker, args=(url, ops, rows, seed + t, errors))
               for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def run(ops_per_thread: int, rows: int, out: Path) -> dict[str, Any]:
    """Warm-up plus two measured rounds of ``THREADS * ops_per_thread`` operations each."""
    with tempfile.TemporaryDirectory(prefix="omero-flight-soak-") as tmp:
        with running_store_bridge(Path(tmp) / "store") as bridge:
            server = psutil.Process(bridge.process.pid)

            def rss() -> float:
                return round(server.memory_info().rss / 2**20, 1)

            import flight_client as o2p

            with o2p.connect_to_omero(server=bridge.url, username=STORE_USER,
                                      password=STORE_PASSWORD, interactive=False,
                                      allow_token=False, keep_alive=False) as conn:
                o2p.upload_table(_table(rows, 0), "soak seed", links=[("Image", 1)],
                                 omero_connector=conn, progress=False)
            figures: dict[str, Any] = {"start_mib": rss()}
            errors = _round(bridge.url, ops_per_thread, rows, 100)
            figures["warmup_mib"] = rss()
            errors += _round(bridge.url, ops_per_thread, rows, 200)
            figures["round1_mib"] = rss()
            errors += _round(bridge.url, ops_per_thread, rows, 300)
            figures["round2_mib"] = rss()
    ops = THREADS * ops_per_thread
    result = {
        "benchmark": "soak", "threads": THREADS, "ops_per_round": ops, "rows_per_table": rows,
        **figures,
        "growth_round1_mib": round(figures["round1_mib"] - figures["warmup_mib"], 1),
        "growth_round2_mib": round(figures["round2_mib"] - figures["round1_mib"], 1),
        "errors": errors[:20], "error_count": len(errors),
    }
    for key in ("growth_round1_mib", "growth_round2_mib"):
        result[key.replace("_mib", "_kib_per_op")] = round(result[key] * 1024 / ops, 2)
    print(f"server resident memory (MiB) under mixed load, {ops} operations per round "
          f"from {THREADS} threads, {rows:,}-row tables")
    print(f"  {'start':>10}{'warm-up':>10}{'round 1':>10}{'round 2':>10}"
          f"{'+round 1':>10}{'+round 2':>10}")
    print(f"  {figures['start_mib']:>10}{figures['warmup_mib']:>10}{figures['round1_mib']:>10}"
          f"{figures['round2_mib']:>10}{result['growth_round1_mib']:>10}"
          f"{result['growth_round2_mib']:>10}")
    print(f"  errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nfigures written to {out}")
    return result
