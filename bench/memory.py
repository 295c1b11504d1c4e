"""Memory while streaming: server and client peaks against the table's size.

For each table size this starts a real bridge (embedded store) in its own
process, uploads a synthetic measurement table, then measures side by side:

* the server's resident memory while a client streams the whole table;
* a client streaming the table to CSV and to Parquet (``download_table``),
  next to ``read_table``, which holds the result on purpose;
* a client uploading a CSV file larger than its chunk size, next to reading
  that CSV whole with pandas;
* wide rows: the server's peak while a client reads one int64 column of a
  table whose rows also hold a 4,000-byte string, against the same read of the
  whole table (``python -m bench.memory --wide-rows N`` runs it alone).

Each client task runs in its own process (``bench.probe``); the figures are
peak resident memory above the process's baseline after imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa

from bench.servers import STORE_PASSWORD, STORE_USER, running_store_bridge
from flight_server.synthetic import measurement_batches, write_measurement_csv

USER, PASSWORD = STORE_USER, STORE_PASSWORD


def run_probe(task: str, **args: Any) -> dict[str, Any]:
    """Run one ``bench.probe`` task in a child process and return its figures."""
    out = subprocess.run([sys.executable, "-m", "bench.probe", task, json.dumps(args)],
                         check=True, capture_output=True, text=True,
                         env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


class PeakSampler:
    """Samples a process's resident memory in a thread; ``peak_mib`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.start_mib = self.proc.memory_info().rss / 2**20
        self.peak_mib = self.start_mib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self.proc.memory_info().rss / 2**20)
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _upload_synthetic(url: str, rows: int) -> tuple[int, float]:
    """Upload ``rows`` synthetic rows; returns the file id and the Arrow size in MiB."""
    import flight_client

    batches = list(measurement_batches(rows))
    table = pa.Table.from_batches(batches)
    with flight_client.connect_to_omero(server=url, username=USER, password=PASSWORD,
                                        interactive=False, allow_token=False) as conn:
        ann = flight_client.upload_table(table.to_pandas(), f"bench {rows}",
                                         links=[("Image", 1)], omero_connector=conn,
                                         progress=False)
        info = [t for t in flight_client.list_tables(omero_connector=conn)
                if t["annotation_id"] == ann][0]
    return int(info["file_id"]), table.nbytes / 2**20


def measure_size(rows: int, workdir: Path) -> dict[str, Any]:
    """All memory figures for one table size."""
    with running_store_bridge(workdir / f"store-{rows}") as bridge:
        file_id, table_mib = _upload_synthetic(bridge.url, rows)
        common = {"url": bridge.url, "username": USER, "password": PASSWORD, "file_id": file_id}

        with PeakSampler(bridge.process.pid) as server:
            stream = run_probe("stream_discard", **common)
        csv_dl = run_probe("download", target=str(workdir / f"dl-{rows}.csv"), **common)
        pq_dl = run_probe("download", target=str(workdir / f"dl-{rows}.parquet"), **common)
        full = run_probe("read_table", **common)

        csv_path = write_measurement_csv(workdir / f"up-{rows}.csv", rows, seed=1)
        csv_mib = csv_path.stat().st_size / 2**20
        up = run_probe("upload_csv", csv=str(csv_path), chunk_size=50_000, **common)
        whole = run_probe("pandas_read_csv", csv=str(csv_path))

    def delta(p: dict[str, Any]) -> float:
        return round(p["peak_mib"] - p["baseline_mib"], 1)

    return {
        "rows": rows,
        "table_arrow_mib": round(table_mib, 1),
        "csv_file_mib": round(csv_mib, 1),
        "server_stream_peak_delta_mib": round(server.peak_mib - server.start_mib, 1),
        "client_stream_discard_mib": delta(stream),
        "client_download_csv_mib": delta(csv_dl),
        "client_download_parquet_mib": delta(pq_dl),
        "client_read_table_mib": delta(full),
        "client_upload_csv_mib": delta(up),
        "pandas_read_csv_whole_mib": delta(whole),
        "seconds": {
            "stream_discard": round(stream["seconds"], 2),
            "download_csv": round(csv_dl["seconds"], 2),
            "download_parquet": round(pq_dl["seconds"], 2),
            "read_table": round(full["seconds"], 2),
            "upload_csv": round(up["seconds"], 2),
        },
    }


ROWS_LABELS = [
    ("table in Arrow (MiB)", "table_arrow_mib"),
    ("server peak while streaming", "server_stream_peak_delta_mib"),
    ("client: stream and discard", "client_stream_discard_mib"),
    ("client: download_table -> CSV", "client_download_csv_mib"),
    ("client: download_table -> Parquet", "client_download_parquet_mib"),
    ("client: read_table (holds result)", "client_read_table_mib"),
    ("CSV file (MiB)", "csv_file_mib"),
    ("client: upload_table(CSV path)", "client_upload_csv_mib"),
    ("pandas.read_csv whole file", "pandas_read_csv_whole_mib"),
]


def format_table(results: list[dict[str, Any]]) -> str:
    """Figures side by side for each size, with each peak as a ratio of the table's size."""
    head = f"{'peak memory above baseline, MiB':36}" + "".join(
        f"{r['rows']:>12,} rows" + " " * 9 for r in results)
    lines = [head, "-" * len(head)]
    for label, key in ROWS_LABELS:
        cells = []
        for r in results:
            ref = r["csv_file_mib"] if "csv" in key and "download" not in key else r[
                "table_arrow_mib"]
            ratio = r[key] / ref if ref else 0.0
            cells.append(f"{r[key]:>10.1f} ({ratio:5.2f}x)" + " " * 6)
        lines.append(f"{label:36}" + "".join(cells))
    lines.append("(ratio: the peak divided by the table's Arrow size, or by the CSV file size "
                 "for the upload rows)")
    return "\n".join(lines)


WIDE_STRING_BYTES = 4_000


def _upload_wide(url: str, rows: int) -> tuple[int, float]:
    """A table of ``rows`` rows: ``n`` (int64) and ``text`` (4,000-byte strings), sent in
    batches; returns its file id and its size in MiB."""
    import flight_client

    def batches() -> Any:
        step = 2_000
        for start in range(0, rows, step):
            count = min(step, rows - start)
            text = [f"{i:08d}".ljust(WIDE_STRING_BYTES, "x") for i in range(start, start + count)]
            yield pa.record_batch({"n": pa.array(range(start, start + count), type=pa.int64()),
                                   "text": pa.array(text)})

    schema = pa.schema([("n", pa.int64()), ("text", pa.string())])
    table = pa.Table.from_batches(batches(), schema=schema)
    with flight_client.connect_to_omero(server=url, username=USER, password=PASSWORD,
                                        interactive=False, allow_token=False) as conn:
        ann = flight_client.upload_table(table, f"wide rows {rows}", links=[("Image", 1)],
                                         omero_connector=conn, progress=False)
        info = [t for t in flight_client.list_tables(omero_connector=conn)
                if t["annotation_id"] == ann][0]
    return int(info["file_id"]), table.nbytes / 2**20


def measure_wide_rows(rows: int, workdir: Path) -> dict[str, Any]:
    """Server peak for a one-column read of a wide-row table against the whole table's."""
    with running_store_bridge(workdir / f"store-wide-{rows}") as bridge:
        file_id, table_mib = _upload_wide(bridge.url, rows)
        common = {"url": bridge.url, "username": USER, "password": PASSWORD, "file_id": file_id}
        peaks = {}
        for label, columns in (("one_int64_column", ["n"]), ("whole_table", [])):
            with PeakSampler(bridge.process.pid) as server:
                probe = run_probe("stream_discard", columns=columns, **common)
            assert probe["result"]["rows"] == rows, probe
            peaks[label] = (round(server.peak_mib - server.start_mib, 1),
                            round(probe["seconds"], 2))
    return {
        "rows": rows,
        "string_bytes": WIDE_STRING_BYTES,
        "table_arrow_mib": round(table_mib, 1),
        "server_peak_delta_mib": {k: v[0] for k, v in peaks.items()},
        "seconds": {k: v[1] for k, v in peaks.items()},
    }


def format_wide(result: dict[str, Any]) -> str:
    peaks = result["server_peak_delta_mib"]
    return "\n".join([
        f"wide rows: {result['rows']:,} rows of int64 + {result['string_bytes']:,}-byte string "
        f"({result['table_arrow_mib']:.1f} MiB in Arrow)",
        f"  server peak above baseline, one int64 column: {peaks['one_int64_column']:8.1f} MiB",
        f"  server peak above baseline, whole table:      {peaks['whole_table']:8.1f} MiB",
    ])


def run_wide(rows: int, out: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="omero-flight-bench-") as tmp:
        result = measure_wide_rows(rows, Path(tmp))
    print(format_wide(result))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "memory-wide-rows", "result": result},
                              indent=2) + "\n")
    print(f"figures written to {out}")
    return result


def run(sizes: list[int], out: Path) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="omero-flight-bench-") as tmp:
        results = [measure_size(rows, Path(tmp)) for rows in sizes]
    print(format_table(results))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "memory", "sizes": sizes, "results": results},
                              indent=2) + "\n")
    print(f"\nfigures written to {out}")
    # Wide rows at full size (60,000 rows) with the full sizes, a tenth of it when smoke.
    run_wide(60_000 if max(sizes) >= 1_000_000 else 6_000, out.with_name("memory_wide.json"))
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--wide-rows", type=int, default=60_000,
                        help="rows of the wide-row table (default 60,000)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "memory_wide.json")
    args = parser.parse_args()
    run_wide(args.wide_rows, args.out)
