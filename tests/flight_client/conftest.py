"""Client fixtures on top of the real ``bridge`` server (tests/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

import flight_client
from flight_client.details import ENV_HOST, ENV_PASSWORD, ENV_PORT, ENV_URL, ENV_USER

ROWS = 300
#: The image the client tests link to; other test folders share the bridge and use Image 1.
IMAGE = 7001


def make_measurements(rows: int = ROWS) -> pd.DataFrame:
    ids = np.arange(rows, dtype="int64")
    return pd.DataFrame({
        "id": ids,
        "image": ids % 5 + 1,
        "area": ids * 1.5,
        "label": [f"cell-{i}" if i % 7 else f"nœud-{i}" for i in ids],
        "ok": ids % 2 == 0,
    })


@dataclass(frozen=True)
class Uploaded:
    annotation_id: int
    file_id: int
    frame: pd.DataFrame


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OMERO_FLIGHT_* from the developer's shell leaks into a test."""
    for name in (ENV_URL, ENV_HOST, ENV_PORT, ENV_USER, ENV_PASSWORD):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def alice(bridge) -> dict[str, object]:
    """Connection arguments for alice, as omero2pandas takes them."""
    return {"server": bridge.host, "port": bridge.port, "username": "alice",
            "password": bridge.passwords["alice"]}


@pytest.fixture(scope="session")
def conn(bridge, alice):
    with flight_client.connect_to_omero(**alice, interactive=False, keep_alive=False) as c:
        yield c


@pytest.fixture(scope="session")
def table(conn) -> Uploaded:
    """A 300-row table of alice's, linked to Image 7001."""
    df = make_measurements()
    ann = flight_client.upload_table(df, "measurements", parent_id=IMAGE, omero_connector=conn,
                                     progress=False)
    entry = next(t for t in flight_client.list_tables("Image", IMAGE, omero_connector=conn)
                 if t["annotation_id"] == ann)
    return Uploaded(ann, entry["file_id"], df)


@pytest.fixture(scope="session")
def csv_text() -> str:
    return make_measurements(50).to_csv(index=False)


@pytest.fixture(scope="session")
def csv_files(bridge, csv_text):
    """Plain files of alice's: a CSV, the same gzipped, and a non-CSV."""
    import gzip

    store = bridge.store
    plain = store.add_file("alice", csv_text.encode(), "cells.csv", "text/csv", [("Image", IMAGE)])
    packed = store.add_file("alice", gzip.compress(csv_text.encode()), "cells.csv.gz",
                            "application/x-gzip", [("Image", IMAGE)])
    other = store.add_file("alice", b"not a table\n", "notes.txt", "text/plain")
    return {"csv": plain, "gz": packed, "txt": other}
