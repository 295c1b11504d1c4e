"""The unmodified omero2pandas from PyPI against the stand-in, over real Ice."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from tests.standin.fixtures import SKIP_REASON  # noqa: E402

omero = pytest.importorskip("omero", reason=SKIP_REASON)
omero2pandas = pytest.importorskip("omero2pandas", reason="omero2pandas is not installed")

pytestmark = pytest.mark.omero


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    n = 2500
    return pd.DataFrame({
        "object": np.arange(n, dtype=np.int64),
        "area": rng.uniform(0, 100, n),
        "label": [f"cell-{i % 17}" for i in range(n)],
        "valid": rng.integers(0, 2, n).astype(bool),
    })


@pytest.fixture(scope="module")
def connection(omero_standin, omero_world):
    """An OMEROConnection for alice, made by omero2pandas itself (SSL, like port 4064)."""
    conn = omero2pandas.connect_to_omero(
        server=omero_standin.host, port=omero_standin.port, username="alice",
        password="alice-password", allow_token=False, interactive=False, keep_alive=False)
    yield conn
    conn.shutdown()


@pytest.fixture(scope="module")
def uploaded(omero_standin, omero_world, connection, frame):
    """The annotation id of ``frame`` uploaded by omero2pandas, linked to an Image and Dataset."""
    group = omero_world.shared_group
    image = omero_world.images[group]
    dataset = omero_standin.seed.dataset("alice", group, "o2p dataset")
    ann_id = omero2pandas.upload_table(frame, "o2p table", links=[("Image", image),
                                                                  ("Dataset", dataset)],
                                       omero_connector=connection)
    return ann_id, image, dataset


def _bridge_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.reset_index(drop=True)


def test_upload_links_the_table(omero_standin, uploaded):
    ann_id, image, dataset = uploaded
    client = omero_standin.login("alice")
    try:
        query = client.sf.getQueryService()
        ctx = {"omero.group": "-1"}
        for kind, parent in (("Image", image), ("Dataset", dataset)):
            params = omero.sys.ParametersI()
            params.addId(parent)
            children = query.findAllByQuery(
                f"select l.child from {kind}AnnotationLink l where l.parent.id = :id",
                params, ctx)
            assert ann_id in [c.id.val for c in children]
        params = omero.sys.ParametersI()
        params.addId(ann_id)
        ofile = query.findByQuery("SELECT fa.file from FileAnnotation fa where fa.id = :id",
                                  params, ctx)
        assert ofile.mimetype.val == "OMERO.tables"
        assert ofile.name.val == "o2p table"
        assert ofile.size.val > 0
    finally:
        client.closeSession()
    assert omero_standin.open_tables() == []


def test_read_table_whole(connection, uploaded, frame):
    ann_id = uploaded[0]
    result = omero2pandas.read_table(annotation_id=ann_id, omero_connector=connection)
    pd.testing.assert_frame_equal(result, frame, check_dtype=False)


def test_read_table_columns_and_rows(connection, uploaded, frame):
    ann_id = uploaded[0]
    rows = [0, 5, 1234, 2499]
    result = omero2pandas.read_table(annotation_id=ann_id, column_names=["area", "label"],
                                     rows=rows, omero_connector=connection)
    expected = frame.loc[rows, ["area", "label"]]
    pd.testing.assert_frame_equal(result, expected, check_dtype=False)


def test_read_table_query_with_variables(connection, uploaded, frame):
    ann_id = uploaded[0]
    result = omero2pandas.read_table(
        annotation_id=ann_id, query="(area > threshold) & valid",
        variables={"threshold": omero.rtypes.rdouble(60.0)}, omero_connector=connection)
    # omero2pandas asks getWhereList for stop=-1, which OMERO.tables hands to PyTables
    # unchanged, so the last row is never searched: the real server behaves the same.
    searched = frame.iloc[:-1]
    expected = searched[(searched.area > 60.0) & searched.valid]
    assert len(expected) > 0
    assert bool((frame.area > 60.0).iloc[-1] & frame.valid.iloc[-1])  # the row it misses
    pd.testing.assert_frame_equal(result, expected, check_dtype=False)


def test_table_size_and_columns(connection, uploaded, frame):
    ann_id = uploaded[0]
    assert omero2pandas.get_table_size(annotation_id=ann_id,
                                       omero_connector=connection) == frame.shape
    assert omero2pandas.get_table_columns(annotation_id=ann_id,
                                          omero_connector=connection) == list(frame.columns)


def test_read_by_file_id_with_credentials(omero_standin, uploaded, frame):
    """omero2pandas opening its own temporary session from server/port/username/password."""
    ann_id = uploaded[0]
    client = omero_standin.login("alice")
    try:
        ofile = client.sf.getQueryService().findByQuery(
            "SELECT fa.file from FileAnnotation fa where fa.id = :id",
            omero.sys.ParametersI().addId(ann_id), {"omero.group": "-1"})
    finally:
        client.closeSession()
    before = {t["uuid"] for t in omero_standin.open_tables()}
    result = omero2pandas.read_table(
        file_id=ofile.id.val, column_names=["object"], server=omero_standin.host,
        port=omero_standin.port, username="alice", password="alice-password")
    pd.testing.assert_frame_equal(result, frame[["object"]], check_dtype=False)
    # read_table never closes its table; closing the temporary session releases it.
    assert {t["uuid"] for t in omero_standin.open_tables()} <= before


def test_read_csv_and_csv_gz(omero_standin, omero_world, connection, frame, tmp_path):
    group = omero_world.shared_group
    image = omero_world.images[group]
    plain = omero_standin.seed.csv("alice", group, frame, "plain.csv", links=[("Image", image)])
    packed = omero_standin.seed.csv("alice", group, frame, "packed.csv.gz", gzip=True,
                                    links=[("Image", image)])
    for seeded in (plain, packed):
        result = omero2pandas.read_csv(annotation_id=seeded.annotation_id,
                                       omero_connector=connection)
        pd.testing.assert_frame_equal(result, frame)
        subset = omero2pandas.read_csv(file_id=seeded.file_id, column_names=["label"],
                                       omero_connector=connection)
        pd.testing.assert_frame_equal(subset, frame[["label"]])
    target = tmp_path / "download.csv.gz"
    omero2pandas.download_csv(str(target), annotation_id=packed.annotation_id,
                              omero_connector=connection)
    assert gzip.decompress(target.read_bytes()) == frame.to_csv(index=False).encode()


def test_upload_links_to_every_container_kind(omero_standin, omero_world, connection):
    seed = omero_standin.seed
    group = omero_world.shared_group
    image = omero_world.images[group]
    plate = seed.plate("alice", group)
    links = [("Image", image), ("Dataset", seed.dataset("alice", group)),
             ("Project", seed.project("alice", group)), ("Plate", plate),
             ("Well", seed.well("alice", group, plate, row=1, column=2)),
             ("Screen", seed.screen("alice", group)),
             ("Roi", seed.roi("alice", group, image))]
    frame = pd.DataFrame({"image": [image, image], "score": [0.5, 1.5]})
    ann_id = omero2pandas.upload_table(frame, "linked everywhere", links=links,
                                       omero_connector=connection)
    client = omero_standin.login("bob")
    try:
        query = client.sf.getQueryService()
        for kind, parent in links:
            children = query.findAllByQuery(
                f"select l.child from {kind}AnnotationLink l where l.parent.id = :id",
                omero.sys.ParametersI().addId(parent), {"omero.group": "-1"})
            assert ann_id in [c.id.val for c in children], kind
    finally:
        client.closeSession()
    result = omero2pandas.read_table(annotation_id=ann_id, omero_connector=connection)
    pd.testing.assert_frame_equal(result, frame, check_dtype=False)
