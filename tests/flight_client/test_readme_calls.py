"""The omero2pandas README's calls, unchanged apart from the server address."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

import flight_client as omero2pandas


class RString:
    """Looks like omero.rtypes.rstring: the client only calls getValue()."""

    def __init__(self, value: str) -> None:
        self._value = value

    def getValue(self) -> str:  # noqa: N802 - omero's spelling
        return self._value


@pytest.fixture
def login(alice) -> dict[str, object]:
    return dict(alice)


def test_read_table(table, login):
    df = omero2pandas.read_table(file_id=table.file_id, **login)
    pd.testing.assert_frame_equal(df, table.frame, check_dtype=False, check_index_type=False)
    assert list(df.index) == list(range(len(table.frame)))


def test_read_table_columns_and_every_tenth_row(table, login):
    my_dataframe = omero2pandas.read_table(file_id=table.file_id,
                                           column_names=["id", "area"],
                                           rows=range(0, 100, 10), **login)
    assert list(my_dataframe.columns) == ["id", "area"]
    assert list(my_dataframe.index) == list(range(0, 100, 10))
    assert list(my_dataframe["id"]) == list(range(0, 100, 10))


def test_query(table, login):
    df = omero2pandas.read_table(file_id=table.file_id, query="(id%2==0) & (id<50)", **login)
    assert list(df["id"]) == list(range(0, 50, 2))
    assert list(df.index) == list(range(0, 50, 2))  # the table's own row numbers


def test_query_with_rtype_variable(table, login):
    df = omero2pandas.read_table(file_id=table.file_id, query="x>440",
                                 variables={"x": RString("area")}, **login)
    assert list(df["id"]) == [i for i in range(300) if i * 1.5 > 440]


def test_columns_and_size(table, login):
    columns = omero2pandas.get_table_columns(annotation_id=table.annotation_id, **login)
    assert columns == list(table.frame.columns)
    num_rows, num_cols = omero2pandas.get_table_size(annotation_id=table.annotation_id,
                                                     **login)
    assert (num_rows, num_cols) == table.frame.shape


def test_download_table(table, login, tmp_path):
    target = tmp_path / "output.csv"
    omero2pandas.download_table(str(target), file_id=table.file_id, chunk_size=1000, **login)
    back = pd.read_csv(target, index_col=0)
    pd.testing.assert_frame_equal(back, table.frame, check_dtype=False, check_index_type=False)


def test_read_and_download_csv(csv_files, csv_text, login, tmp_path):
    my_dataframe = omero2pandas.read_csv(file_id=csv_files["csv"].file_id,
                                         column_names=["id", "label"], **login)
    assert list(my_dataframe.columns) == ["id", "label"]
    assert len(my_dataframe) == 50
    packed = omero2pandas.read_csv(annotation_id=csv_files["gz"].annotation_id, **login)
    pd.testing.assert_frame_equal(packed, pd.read_csv(tmp_csv(tmp_path, csv_text)))

    omero2pandas.download_csv(str(tmp_path / "output.csv"), file_id=csv_files["csv"].file_id,
                              **login)
    assert (tmp_path / "output.csv").read_text() == csv_text
    omero2pandas.download_csv(str(tmp_path / "output.csv.gz"),
                              file_id=csv_files["gz"].file_id, **login)
    assert gzip.decompress((tmp_path / "output.csv.gz").read_bytes()).decode() == csv_text


def test_download_csv_check_type(csv_files, login, tmp_path):
    with pytest.raises(ValueError, match="not a CSV"):
        omero2pandas.download_csv(str(tmp_path / "notes.txt"), file_id=csv_files["txt"].file_id,
                                  **login)
    assert not (tmp_path / "notes.txt").exists()
    omero2pandas.download_csv(str(tmp_path / "notes.txt"), file_id=csv_files["txt"].file_id,
                              check_type=False, **login)
    assert (tmp_path / "notes.txt").read_bytes() == b"not a table\n"


def test_upload_table(login):
    my_data = pd.DataFrame({"object": [1, 2, 3], "intensity": [0.5, 0.25, 0.125]})
    ann_id = omero2pandas.upload_table(my_data, "Name for table",
                                       parent_id=142, parent_type="Image", **login)
    assert isinstance(ann_id, int)
    back = omero2pandas.read_table(annotation_id=ann_id, **login)
    pd.testing.assert_frame_equal(back, my_data, check_dtype=False, check_index_type=False)


def test_upload_links_and_csv_in_chunks(login, tmp_path, csv_text):
    path = tmp_csv(tmp_path, csv_text)
    ann_id = omero2pandas.upload_table(
        str(path), "My table",
        links=[("Image", 101), ("Dataset", 2), ("Roi", 1923)], **login)
    linked = omero2pandas.list_tables("Dataset", 2, **login)
    entry = next(t for t in linked if t["annotation_id"] == ann_id)
    assert sorted(map(tuple, entry["links"])) == [("Dataset", 2), ("Image", 101), ("Roi", 1923)]

    ann_id = omero2pandas.upload_table(str(path), "My table", 142, chunk_size=100, **login)
    back = omero2pandas.read_table(annotation_id=ann_id, **login)
    pd.testing.assert_frame_equal(back, pd.read_csv(path), check_dtype=False)


def test_connect_to_omero_as_connector(table, login):
    connector = omero2pandas.connect_to_omero(**login)
    try:
        df = omero2pandas.read_table(file_id=table.file_id, omero_connector=connector)
        assert len(df) == len(table.frame)
    finally:
        connector.shutdown()
    with omero2pandas.connect_to_omero(**login, interactive=False) as connector:
        assert omero2pandas.get_table_size(file_id=table.file_id,
                                           omero_connector=connector)[0] == 300


def tmp_csv(tmp_path, text: str):
    path = tmp_path / "my_data.csv"
    if not path.exists():
        path.write_text(text)
    return path
