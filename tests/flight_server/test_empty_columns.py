"""Columns with no values (issue 11, fault 4) and names with NUL (issue 10, finding 6).

omero2pandas stores an ``object`` column as a StringColumn whose width is the
longest value, or 1 when there is none, with missing values as ``""``. A column
with no values at all reaches the bridge as Arrow's ``null`` type: an object
column of ``None``, an Arrow null column, or any column of a DataFrame without
rows. It is stored the same way, through the real client and server.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight
import pytest

import flight_client
from flight_client.errors import InvalidRequest
from flight_protocol import columns as cols
from flight_server.backends.base import TableRef
from tests.flight_server.wire import error_code, read, upload


@pytest.fixture(scope="module")
def login(bridge) -> dict[str, object]:
    return {"server": bridge.host, "port": bridge.port, "username": "alice",
            "password": bridge.passwords["alice"]}


def _stored(bridge, annotation_id: int) -> pa.Schema:
    """The schema the store holds for the table of an annotation."""
    caller = bridge.store.lookup_caller("alice")
    with bridge.store.open_table(caller, TableRef(annotation_id=annotation_id)) as handle:
        return handle.schema


def test_object_column_of_none_is_an_empty_string_column(bridge, login):
    df = pd.DataFrame({"area": [1.5, 2.5, 3.5], "label": [None, None, None]})
    ann = flight_client.upload_table(df, "all none", parent_id=1, progress=False, **login)
    schema = _stored(bridge, ann)
    label = schema.field("label")
    assert cols.column_type_of(label) == cols.STRING and cols.string_size_of(label) == 1
    back = flight_client.read_table(annotation_id=ann, progress=False, **login)
    assert back["label"].tolist() == ["", "", ""]
    assert back["area"].tolist() == [1.5, 2.5, 3.5]


def test_dataframe_with_columns_and_no_rows(bridge, login):
    df = pd.DataFrame(columns=["Image", "label"])
    ann = flight_client.upload_table(df, "no rows", parent_id=1, progress=False, **login)
    schema = _stored(bridge, ann)
    # As omero2pandas: object columns are StringColumns, "Image" included (it holds no ints).
    assert [cols.short_name(cols.column_type_of(f)) for f in schema] == ["StringColumn"] * 2
    assert [cols.string_size_of(f) for f in schema] == [1, 1]
    back = flight_client.read_table(annotation_id=ann, progress=False, **login)
    assert list(back.columns) == ["Image", "label"] and len(back) == 0


def test_arrow_null_column_through_the_wire(bridge, connect):
    client, options = connect("bob")
    data = pa.table({"n": pa.array([1, 2], type=pa.int64()), "empty": pa.nulls(2)})
    answer = upload(client, options, data, "arrow nulls")
    got = read(client, options, file_id=answer["file_id"], row_numbers=False)
    assert got.schema.field("empty").type == pa.string()
    assert got.to_pydict() == {"n": [1, 2], "empty": ["", ""]}


@pytest.mark.parametrize("name", ["a\x00b", "\x00", "label\x00" + "x" * 10_000])
def test_column_names_with_nul_are_refused_at_upload(bridge, connect, name):
    client, options = connect("bob")
    before = len(bridge.store.list_tables(bridge.store.lookup_caller("root")))
    data = pa.table({"ok": [1], name: [2]})
    with pytest.raises(flight.FlightError) as info:
        upload(client, options, data, "nul names")
    assert error_code(info.value) == "invalid_argument"
    message = json.loads(info.value.extra_info)["message"]
    assert "NUL character" in message and len(message) < 400
    assert len(bridge.store.list_tables(bridge.store.lookup_caller("root"))) == before
    assert list(bridge.store.tmp.iterdir()) == []


def test_names_differing_after_a_nul_are_refused_not_merged(bridge, login):
    df = pd.DataFrame({"a\x00one": [1], "a\x00two": [2]})
    with pytest.raises(InvalidRequest, match="NUL character"):
        flight_client.upload_table(df, "nul pair", parent_id=1, progress=False, **login)
