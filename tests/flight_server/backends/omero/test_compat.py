"""Cross-compatibility: unmodified omero2pandas and the bridge read each other's tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

omero = pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")
omero2pandas = pytest.importorskip("omero2pandas", reason="omero2pandas is not installed")

import flight_client  # noqa: E402

pytestmark = pytest.mark.omero


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n = 3000
    return pd.DataFrame({
        "object": np.arange(n, dtype=np.int64),
        "Image": rng.integers(1, 5, n),
        "area": rng.uniform(0, 100, n),
        "label": [f"cell-{i % 13}" if i % 5 else "ünïcødé" for i in range(n)],
        "valid": rng.integers(0, 2, n).astype(bool),
    })


@pytest.fixture(scope="module")
def o2p(omero_standin):
    conn = omero2pandas.connect_to_omero(
        server=omero_standin.host, port=omero_standin.port, username="alice",
        password="alice-password", allow_token=False, interactive=False, keep_alive=False)
    yield conn
    conn.shutdown()


def test_omero2pandas_upload_reads_identically_through_the_bridge(omero_bridge, o2p, frame,
                                                                   sign_in):
    image = omero_bridge.world.images[omero_bridge.world.shared_group]
    # omero2pandas 0.4.2 sizes string columns in characters, not bytes: keep this one ASCII.
    frame = frame.assign(label=frame.label.str.replace("ünïcødé", "unicode"))
    ann = omero2pandas.upload_table(frame, "from omero2pandas", links=[("Image", image)],
                                    omero_connector=o2p)
    conn = sign_in("alice")
    direct = omero2pandas.read_table(annotation_id=ann, omero_connector=o2p)
    bridged = flight_client.read_table(annotation_id=ann, omero_connector=conn)
    pd.testing.assert_frame_equal(bridged, direct)
    pd.testing.assert_frame_equal(bridged, frame, check_dtype=False)
    rows = [2999, 0, 17]
    pd.testing.assert_frame_equal(
        flight_client.read_table(annotation_id=ann, column_names=["area", "label"], rows=rows,
                                 omero_connector=conn),
        omero2pandas.read_table(annotation_id=ann, column_names=["area", "label"], rows=rows,
                                omero_connector=o2p))
    assert flight_client.get_table_columns(annotation_id=ann, omero_connector=conn) == \
        omero2pandas.get_table_columns(annotation_id=ann, omero_connector=o2p)
    types = {c["name"]: c["type"]
             for c in conn.column_details(annotation_id=ann)}
    assert types["Image"] == "ImageColumn"
    # Also readable by the other user of the read-only group, through the same bridge.
    assert len(flight_client.read_table(annotation_id=ann, omero_connector=sign_in("bob"))) == 3000


def test_bridge_upload_reads_identically_with_omero2pandas(omero_bridge, o2p, frame, sign_in):
    image = omero_bridge.world.images[omero_bridge.world.shared_group]
    conn = sign_in("alice")
    ann = flight_client.upload_table(frame, "from the bridge", parent_id=image,
                                     omero_connector=conn, progress=False)
    direct = omero2pandas.read_table(annotation_id=ann, omero_connector=o2p)
    pd.testing.assert_frame_equal(direct, frame, check_dtype=False)
    pd.testing.assert_frame_equal(
        direct, flight_client.read_table(annotation_id=ann, omero_connector=conn))
    assert omero2pandas.get_table_size(annotation_id=ann, omero_connector=o2p) == frame.shape
    # omero2pandas's own query path (getWhereList with rtypes) on the bridge's table
    found = omero2pandas.read_table(annotation_id=ann, query="(area > lo) & valid",
                                    variables={"lo": omero.rtypes.rdouble(50.0)},
                                    omero_connector=o2p)
    searched = frame.iloc[:-1]  # omero2pandas asks for stop=-1 (see tests/standin)
    pd.testing.assert_frame_equal(found, searched[(searched.area > 50.0) & searched.valid],
                                  check_dtype=False)
    # the table is annotated and linked as omero2pandas would have done it
    linked = [t["annotation_id"] for t in flight_client.list_tables("Image", image,
                                                                    omero_connector=conn)]
    assert ann in linked
    assert not [t for t in omero_bridge.standin.open_tables()
                if t["session"] != o2p.getSessionId()]  # omero2pandas never closes its own
