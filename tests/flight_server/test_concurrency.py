"""Several readers and a writer at once, over loopback, through the one HDF5 lock."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from tests.flight_server.wire import read, upload


def test_concurrent_readers_and_writer(connect):
    alice = connect("alice")
    data = pa.table({"x": pa.array(np.arange(20_000)), "s": pa.array([f"v{i}" for i in
                                                                       range(20_000)])})
    fid = upload(*alice, data, "shared")["file_id"]

    def reader(k: int) -> bool:
        client, options = connect("bob" if k % 2 else "alice")
        for _ in range(5):
            got = read(client, options, file_id=fid, chunk_size=1500, row_numbers=False)
            if not got.equals(data.cast(got.schema)):
                return False
            part = read(client, options, file_id=fid, query="x % 7 == k", variables={"k": k})
            if part["x"].to_pylist() != list(range(k, 20_000, 7)):
                return False
        return True

    def writer(k: int) -> int:
        client, options = connect("alice")
        t = pa.table({"y": pa.array(np.arange(5000) * k)})
        return upload(client, options, t, f"w{k}", batch_rows=700)["rows"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        reads = [pool.submit(reader, k) for k in range(5)]
        writes = [pool.submit(writer, k) for k in range(3)]
        assert all(f.result(timeout=120) for f in reads)
        assert [f.result(timeout=120) for f in writes] == [5000] * 3
