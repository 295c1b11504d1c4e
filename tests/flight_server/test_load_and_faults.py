"""Load and faults: clients read, query and upload while the server is killed and restarted.

Several client processes (the real ``flight_client``) work against ``omero-flight
serve`` on the embedded store for a bounded time, while the test SIGKILLs the
server at random moments and starts it again on the same port and store. Each
client writes a journal of the uploads the server acknowledged. Afterwards:

- every acknowledged upload is listed and whole (its rows are exactly the ones sent);
- every listed table is whole (a table is whole or absent, never partial);
- no temporary or spool file remains once the server has started again, and
  every file in the store's ``Files/`` is one the catalog references.

Timings are not asserted; the run is bounded by ``LOAD_SECONDS``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import PASSWORDS, seed_store
from tests.processes import CLI, free_port, wait_signed_in

LOAD_SECONDS = float(os.environ.get("OMERO_FLIGHT_LOAD_SECONDS", "20"))
WORKERS = 3


#: One client process: uploads deterministic tables, reads and queries what it finds.
WORKER = textwrap.dedent(
    """
    import json, random, sys, time
    import numpy as np, pandas as pd
    import flight_client as o2p

    url, user, password, worker, seconds, journal = sys.argv[1:7]
    worker, deadline = int(worker), time.time() + float(seconds)
    rng = random.Random(worker)

    def table(i):
        n = 500 + (i * 7919) % 15000
        idx = np.arange(n, dtype="int64")
        return pd.DataFrame({"idx": idx, "val": idx * 0.5 + worker,
                             "label": [f"r{k}" for k in range(n)]})

    def log(**entry):
        with open(journal, "a") as fh:
            fh.write(json.dumps(entry) + "\\n")

    i = 0
    while time.time() < deadline:
        op = rng.choice(["upload", "upload", "read", "query"])
        try:
            with o2p.connect_to_omero(server=url, username=user, password=password,
                                      interactive=False, keep_alive=False) as conn:
                if op == "upload":
                    i += 1
                    name = f"w{worker}-{i}"
                    df = table(i)
                    ann = o2p.upload_table(df, name, links=[("Image", 1)],
                                           chunk_size=rng.choice([200, 1000, 5000]),
                                           omero_connector=conn)
                    log(acked=name, annotation_id=ann, rows=len(df))
                else:
                    tables = o2p.list_tables(omero_connector=conn)
                    if tables:
                        t = rng.choice(tables)
                        if op == "read":
                            o2p.read_table(file_id=t["file_id"], omero_connector=conn)
                        else:
                            o2p.read_table(file_id=t["file_id"], query="idx < 100",
                                           omero_connector=conn)
        except Exception as exc:  # the server dies under us: tolerated, journaled
            log(error=type(exc).__name__, op=op)
        except KeyboardInterrupt:
            break
    log(done=True)
    """
)


def _serve(store: Path, port: int, spool: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMERO_FLIGHT_SPOOL_DIR": str(spool)}
    return subprocess.Popen(CLI + ["serve", "--store", str(store), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _expected_rows(name: str) -> tuple[int, int]:
    """(worker, rows) of a table the workers upload under ``name`` (``w<worker>-<i>``)."""
    worker, i = name[1:].split("-")
    return int(worker), 500 + (int(i) * 7919) % 15000


@pytest.mark.slow
def test_kills_and_restarts_lose_no_acknowledged_upload(tmp_path: Path) -> None:
    import flight_client as o2p

    store_path, spool = tmp_path / "store", tmp_path / "spool"
    spool.mkdir()
    seed_store(store_path).catalog.close()
    port = free_port()
    url = f"grpc://127.0.0.1:{port}"
    server = _serve(store_path, port, spool)
    wait_signed_in(url, server, "alice", PASSWORDS["alice"])

    journals = [tmp_path / f"journal-{w}.jsonl" for w in range(WORKERS)]
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, url, "alice", PASSWORDS["alice"],
                          str(w), str(LOAD_SECONDS), str(journals[w])],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for w in range(WORKERS)
    ]
    rng = random.Random(2026)
    kills = 0
    try:
        deadline = time.monotonic() + LOAD_SECONDS
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.5, 2.5))
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=30)
            kills += 1
            server = _serve(store_path, port, spool)
            wait_signed_in(url, server, "alice", PASSWORDS["alice"])
        for proc in workers:
            _, err = proc.communicate(timeout=LOAD_SECONDS + 120)
            assert proc.returncode == 0, err.decode()[-2000:]
        # One more unclean stop, then a clean start: what remains must be consistent.
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        server = _serve(store_path, port, spool)
        wait_signed_in(url, server, "alice", PASSWORDS["alice"])

        entries = [json.loads(line) for j in journals for line in j.read_text().splitlines()]
        acked = {e["acked"]: e for e in entries if "acked" in e}
        assert sum("done" in e for e in entries) == WORKERS
        assert kills >= 3 and acked, f"the run did too little: {kills} kills, {len(acked)} acks"

        with o2p.connect_to_omero(server=url, username="alice", password=PASSWORDS["alice"],
                                  interactive=False, keep_alive=False) as conn:
            listed = {t["name"]: t for t in o2p.list_tables(omero_connector=conn)}
            missing = sorted(set(acked) - set(listed))
            assert not missing, f"acknowledged uploads lost: {missing}"
            for name, entry in listed.items():
                worker, rows = _expected_rows(name)
                assert entry["rows"] == rows, f"{name}: {entry['rows']} rows listed, not {rows}"
                df = o2p.read_table(file_id=entry["file_id"], omero_connector=conn)
                assert len(df) == rows and df["idx"].tolist() == list(range(rows)), name
                assert (df["val"] == df["idx"] * 0.5 + worker).all(), name
                assert df["label"].iloc[-1] == f"r{rows - 1}", name
            for name, entry in acked.items():
                assert listed[name]["annotation_id"] == entry["annotation_id"], name
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()

    # Nothing temporary survives a restart; every stored file is in the catalog.
    leftovers = [p for p in (store_path / "tmp").rglob("*")] + list(spool.iterdir())
    assert not leftovers, f"temporary files left behind: {leftovers[:5]}"
    db = sqlite3.connect(store_path / "catalog.sqlite")
    known = {store_path / row[0] for row in db.execute("SELECT path FROM original_files")}
    db.close()
    stored = {p for p in (store_path / "Files").rglob("*") if p.is_file()}
    stored_tops = {p for p in stored if not any(p.is_relative_to(k) for k in known)}
    assert not stored_tops, f"files the catalog does not reference: {sorted(stored_tops)[:5]}"
    assert all(k.exists() for k in known), "the catalog references files that are gone"
