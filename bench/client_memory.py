"""Client peak memory of ``read_table`` against the DataFrame it returns, side by side.

One run starts the OMERO stand-in (omero-py's own OMERO.tables over Ice) and a
bridge over it that reads its data directory directly, uploads the narrow
table (``bench.datasets.narrow``: two int64 ids, two doubles, a 16-byte string)
and reads it whole into pandas with:

* the bridge's ``read_table`` (batches copied into their final columns as they
  arrive: ``flight_client.assembly``);
* the bridge before that change: ``read_arrow`` of the whole table, then
  ``outputs.to_pandas`` (what ``read_table`` did);
* the bridge's ``read_table`` with ~4 MiB batches (``chunk_size=65,536``, the
  bridge's default before it became ~1 MiB);
* the floor: a streaming read that drops every batch (``read_arrow(stream=True)``),
  with both batch sizes: what Flight and gRPC hold while a read streams;
* ``omero2pandas.read_table`` against the stand-in, with its default
  ``chunk_size`` (1,000) and tuned (50,000).

Each read runs in a fresh process (``python -m bench.client_memory probe ...``):
it imports and connects, then its resident memory is the start, the kernel's
high-water mark (VmHWM) is reset, the read runs, and the figure is the peak
above the start over the DataFrame's ``memory_usage(deep=True)``.

``python -m bench.client_memory [--rows N ...] [--reps R]`` runs it alone;
``python -m bench --only client_memory`` runs it from the bench runner.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import datasets, servers
from bench.probe import _reset_peak, _status_mib

GOAL_RATIO = 1.3  # issue 16: client peak <= 1.3x the DataFrame
GOAL_BELOW_O2P = 3.0  # ... and at least 3x below omero2pandas' peak for the same read
O2P_TUNED_CHUNK = 50_000
#: omero2pandas' default chunk (1,000 rows) takes ~20 s per million rows: only up to this.
O2P_DEFAULT_MAX_ROWS = 1_000_000

#: Rows per batch of the ``bridge_4mib`` reader: ~4 MiB batches of the narrow table (60 bytes
#: a row; the bridge's default was ~4 MiB, now ~1 MiB). Flight and gRPC hold a few messages
#: while streaming, so the batch size sets most of what a read needs beyond its result.
LARGE_BATCH_ROWS = 65_536

READERS = {
    "bridge": "bridge read_table (assembly)",
    "bridge_4mib": f"bridge read_table, chunk_size={LARGE_BATCH_ROWS:,}",
    "bridge_stream": "bridge stream, batches dropped (floor)",
    "bridge_stream_4mib": f"same, chunk_size={LARGE_BATCH_ROWS:,}",
    "bridge_before": "bridge read_arrow + to_pandas (before)",
    "o2p_tuned": f"omero2pandas chunk_size={O2P_TUNED_CHUNK:,}",
    "o2p_default": "omero2pandas default chunk (1,000)",
}


# -- the probe: one read in a fresh process ----------------------------------------------------
# (resident memory from /proc/self/status: the one reader in bench.probe)
def _bridge_read(args: dict[str, Any], how: str) -> tuple[Any, Any]:
    import flight_client
    from flight_client import outputs

    conn = flight_client.connect_to_omero(server=args["url"], username=args["username"],
                                          password=args["password"], interactive=False,
                                          allow_token=False, keep_alive=False)

    def read() -> Any:
        if how == "stream":  # the floor: every batch received and dropped
            reader = flight_client.read_arrow(file_id=args["file_id"], omero_connector=conn,
                                              chunk_size=args.get("chunk_size"), stream=True,
                                              row_numbers=True, progress=False)
            return sum(batch.num_rows for batch in reader)
        if how == "before":
            table = flight_client.read_arrow(file_id=args["file_id"], omero_connector=conn,
                                             row_numbers=True, progress=False)
            return outputs.to_pandas(table)
        return flight_client.read_table(file_id=args["file_id"], omero_connector=conn,
                                        chunk_size=args.get("chunk_size"), progress=False)
    return conn, read


def _o2p_read(args: dict[str, Any]) -> tuple[Any, Any]:
    import omero2pandas

    conn = omero2pandas.connect_to_omero(server=args["host"], port=args["port"],
                                         username=args["username"], password=args["password"],
                                         allow_token=False, interactive=False, keep_alive=False)
    chunk = args.get("chunk_size")

    def read() -> Any:
        kwargs = {"chunk_size": chunk} if chunk else {}
        return omero2pandas.read_table(file_id=args["file_id"], omero_connector=conn, **kwargs)
    return conn, read


def probe(reader: str, args: dict[str, Any]) -> dict[str, Any]:
    """Connect, then read the table once; the peak counts the read only."""
    import pandas as pd  # noqa: F401
    import pyarrow  # noqa: F401

    how = ("stream" if reader.startswith("bridge_stream") else
           "before" if reader == "bridge_before" else "read_table")
    conn, read = _o2p_read(args) if reader.startswith("o2p") else _bridge_read(args, how)
    try:
        gc.collect()
        start = _status_mib("VmRSS")
        _reset_peak()
        began = time.perf_counter()
        df = read()
        seconds = time.perf_counter() - began
        peak = _status_mib("VmHWM")
        if isinstance(df, int):  # a stream: rows only
            return {"reader": reader, "seconds": seconds, "start_mib": start,
                    "peak_mib": peak, "dataframe_mib": None, "shape": [df], "dtypes": None,
                    "index": None, "digest": None}
        frame_mib = df.memory_usage(deep=True).sum() / 2**20
        # After the peak: what came back (the bridge's two paths must agree exactly).
        import pandas as pd

        digest = int(pd.util.hash_pandas_object(df, index=True).sum())
        return {"reader": reader, "seconds": seconds, "start_mib": start, "peak_mib": peak,
                "dataframe_mib": frame_mib, "shape": list(df.shape),
                "dtypes": [str(t) for t in df.dtypes], "index": str(df.index.dtype),
                "digest": digest}
    finally:
        conn.shutdown()


def run_probe(reader: str, **args: Any) -> dict[str, Any]:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(servers.REPO_ROOT)}
    out = subprocess.run([sys.executable, "-m", "bench.client_memory", "probe", reader,
                          json.dumps(args)], check=True, capture_output=True, text=True,
                         env=env, cwd=servers.REPO_ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the run -----------------------------------------------------------------------------------
def _upload(bridge: servers.Bridge, omero: servers.Omero, rows: int) -> int:
    import flight_client

    frame = datasets.narrow(rows)
    with flight_client.connect_to_omero(server=bridge.url, username=servers.OMERO_USER,
                                        password=servers.OMERO_PASSWORD, interactive=False,
                                        allow_token=False, keep_alive=False) as conn:
        ann = flight_client.upload_table(frame, f"client memory {rows}", parent_id=omero.image,
                                         omero_connector=conn, progress=False)
        for t in flight_client.list_tables(omero_connector=conn):
            if t["annotation_id"] == ann:
                return int(t["file_id"])
    raise LookupError(f"FileAnnotation {ann} not listed")


def _summary(runs: list[dict[str, Any]], frame_of_read: float) -> dict[str, Any]:
    """Medians of one reader's runs; a stream's ratio is over the DataFrame of the read."""
    above = [r["peak_mib"] - r["start_mib"] for r in runs]
    frame = runs[0]["dataframe_mib"]
    peak = statistics.median(above)
    return {"dataframe_mib": None if frame is None else round(frame, 1),
            "peak_above_start_mib": round(peak, 1),
            "peak_runs_mib": [round(a, 1) for a in above],
            "ratio": round(peak / (frame or frame_of_read), 2),
            "seconds": round(statistics.median(r["seconds"] for r in runs), 2),
            "shape": runs[0]["shape"], "dtypes": runs[0]["dtypes"], "index": runs[0]["index"],
            "digest": runs[0]["digest"]}


def measure_size(omero: servers.Omero, bridge: servers.Bridge, rows: int,
                 reps: int) -> dict[str, Any]:
    file_id = _upload(bridge, omero, rows)
    bridge_args = {"url": bridge.url, "username": servers.OMERO_USER,
                   "password": servers.OMERO_PASSWORD, "file_id": file_id}
    o2p_args = {"host": omero.host, "port": omero.port, "username": servers.OMERO_USER,
                "password": servers.OMERO_PASSWORD, "file_id": file_id}
    plan: dict[str, tuple[dict[str, Any], int]] = {
        "bridge": (bridge_args, reps),
        "bridge_before": (bridge_args, reps),
        "bridge_4mib": ({**bridge_args, "chunk_size": LARGE_BATCH_ROWS}, reps),
        "bridge_stream": (bridge_args, reps),
        "bridge_stream_4mib": ({**bridge_args, "chunk_size": LARGE_BATCH_ROWS}, reps),
        "o2p_tuned": ({**o2p_args, "chunk_size": O2P_TUNED_CHUNK}, 1 if rows > 10**6 else reps),
    }
    if rows <= O2P_DEFAULT_MAX_ROWS:
        plan["o2p_default"] = (o2p_args, 1)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in plan}
    for rep in range(max(n for _, n in plan.values())):  # interleaved, one of each per round
        for name, (args, n) in plan.items():
            if rep < n:
                print(f"  {rows:,} rows: {READERS[name]} (run {rep + 1})", flush=True)
                runs[name].append(run_probe(name, **args))
    result = {"rows": rows, "columns": 5, "file_id": file_id,
              "readers": {name: _summary(r, runs["bridge"][0]["dataframe_mib"])
                          for name, r in runs.items()}}
    r = result["readers"]
    result["bridge_paths_identical"] = all(
        (r[name]["digest"], r[name]["dtypes"], r[name]["index"])
        == (r["bridge"]["digest"], r["bridge"]["dtypes"], r["bridge"]["index"])
        for name in ("bridge_before", "bridge_4mib"))
    result["streams_complete"] = all(r[name]["shape"] == [rows]
                                     for name in ("bridge_stream", "bridge_stream_4mib"))
    return result


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 16's memory goals for one size, each with its measured ratio."""
    r = result["readers"]
    out = [{"goal": f"bridge read_table peak <= {GOAL_RATIO}x the DataFrame",
            "measured": r["bridge"]["ratio"], "met": r["bridge"]["ratio"] <= GOAL_RATIO}]
    for name in ("o2p_tuned", "o2p_default"):
        if name in r and r["bridge"]["peak_above_start_mib"] > 0:
            below = r[name]["peak_above_start_mib"] / r["bridge"]["peak_above_start_mib"]
            out.append({"goal": f"bridge peak >= {GOAL_BELOW_O2P}x below {READERS[name]}",
                        "measured": round(below, 2), "met": below >= GOAL_BELOW_O2P})
    return out


def format_results(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        head = (f"{'reader':42} {'DataFrame MiB':>13} {'peak MiB':>9} {'ratio':>6} "
                f"{'seconds':>8}")
        lines += [f"{result['rows']:,} rows x {result['columns']} columns", head,
                  "-" * len(head)]
        for name, s in result["readers"].items():
            frame = "-" if s["dataframe_mib"] is None else f"{s['dataframe_mib']:.1f}"
            lines.append(f"{READERS[name]:42} {frame:>13} "
                         f"{s['peak_above_start_mib']:>9.1f} {s['ratio']:>5.2f}x "
                         f"{s['seconds']:>8.2f}")
        lines.append("(peak: resident memory of a fresh client process above its start; ratio: "
                     "peak over the DataFrame's memory_usage(deep=True); a stream's over the "
                     "read's DataFrame)")
        lines.append(f"the bridge's readers give identical DataFrames: "
                     f"{result['bridge_paths_identical']}")
        for g in result["goals"]:
            lines.append(f"  goal: {g['goal']}: {g['measured']}x -> "
                         f"{'MET' if g['met'] else 'NOT MET'}")
        lines.append("")
    return "\n".join(lines)


def run(sizes: list[int], out: Path, reps: int = 3, command: str = "") -> list[dict[str, Any]]:
    from bench.perf import machine

    started = time.time()
    results = []
    with tempfile.TemporaryDirectory(prefix="omero-flight-client-memory-") as tmp:
        with (servers.running_omero(Path(tmp) / "omero") as omero,
              servers.running_omero_bridge(omero, direct=True) as bridge):
            for rows in sizes:
                result = measure_size(omero, bridge, rows, reps)
                result["goals"] = goals(result)
                results.append(result)
    print(format_results(results))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "client-memory", "command": command,
                               "machine": machine(), "reps": reps,
                               "total_seconds": round(time.time() - started, 1),
                               "results": results}, indent=1) + "\n")
    print(f"figures written to {out}")
    return results


def main() -> None:
    import argparse
    import shlex

    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        print(json.dumps(probe(sys.argv[2], json.loads(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.client_memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--reps", type=int, default=3, help="runs of each fast reader (median)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "client_memory.json")
    args = parser.parse_args()
    run(args.rows, args.out, args.reps,
        "python -m bench.client_memory " + shlex.join(sys.argv[1:]))


if __name__ == "__main__":
    main()
