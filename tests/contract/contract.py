"""The backend contract, exercised directly (no Flight), for every backend to run.

:class:`BackendContract` holds the tests; a backend runs them by subclassing it in a
``Test...`` class that provides the fixtures below (as fsspec's abstract tests do):

- ``backend``: the backend under test (class scope);
- ``caller``: a user who may write tables linked to ``link``;
- ``other``: a user who may not see ``caller``'s unlinked tables (another user in a
  private group);
- ``link``: ``(type, id)`` of an object ``caller`` may annotate;

and implements :meth:`BackendContract.open_table_ids` (the file ids of the table
handles open now, as the backend's own side sees them) and, optionally,
:meth:`BackendContract.leftovers` (what an aborted upload could have left behind).
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from flight_protocol import columns as cols
from flight_server.backends.base import (
    Backend,
    Caller,
    FileInfo,
    TableHandle,
    TableRef,
    UploadResult,
)
from flight_server.errors import InvalidArgument, NotFound
from flight_server.query import check_query

ROWS = 50


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


def stored_schema() -> pa.Schema:
    incoming = pa.schema([("id", pa.int64()), ("score", pa.float64()), ("label", pa.string()),
                          ("flag", pa.bool_())])
    return cols.with_string_sizes(cols.omero_schema(incoming), {"label": 8})


def batch(start: int, stop: int, schema: pa.Schema) -> pa.RecordBatch:
    ids = np.arange(start, stop, dtype=np.int64)
    return pa.record_batch({
        "id": pa.array(ids),
        "score": pa.array(ids * 0.5),
        "label": pa.array([f"r{i}" for i in ids], pa.string()),
        "flag": pa.array(ids % 2 == 0),
    }, schema=schema)


def write_table(backend: Backend, caller: Caller, links: list[tuple[str, int]],
                name: str | None = None, format: str = "hdf5") -> UploadResult:
    """A table of :data:`ROWS` rows in two batches, committed (aborted if anything fails)."""
    schema = stored_schema()
    writer = backend.create_table(caller, name or unique("contract"), schema, links,
                                  "written by the contract suite", format)
    try:
        writer.append(batch(0, ROWS // 2, schema))
        writer.append(batch(ROWS // 2, ROWS, schema))
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


class BackendContract:
    """The contract's tests; see the module docstring. Not collected on its own."""

    # -- what a subclass provides ------------------------------------------------------

    def open_table_ids(self, backend: Backend) -> list[int]:
        """File ids of the table handles open now (one entry per open handle)."""
        raise NotImplementedError

    def leftovers(self, backend: Backend) -> list[Any]:
        """Anything an aborted or refused upload left in the backend's private space."""
        return []

    # -- helpers -----------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def table(cls, backend: Backend, caller: Caller, link: tuple[str, int]) -> UploadResult:
        return write_table(backend, caller, [link])

    def table_names(self, backend: Backend, caller: Caller) -> set[str]:
        return {s.file.name for s in backend.list_tables(caller)}

    # -- tables ------------------------------------------------------------------------

    def test_commit_makes_the_table_readable(self, backend, caller, table):
        assert table.rows == ROWS
        for ref in (TableRef(annotation_id=table.annotation_id),
                    TableRef(file_id=table.file_id)):
            with backend.open_table(caller, ref) as handle:
                assert handle.schema.names == ["id", "score", "label", "flag"]
                assert [cols.short_name(cols.column_type_of(f)) for f in handle.schema] == [
                    "LongColumn", "DoubleColumn", "StringColumn", "BoolColumn"]
                assert cols.string_size_of(handle.schema.field("label")) == 8
                assert handle.num_rows == ROWS
                assert handle.info.file_id == table.file_id

    def test_reads_ranges_columns_rows_and_queries(self, backend, caller, table):
        with backend.open_table(caller, TableRef(annotation_id=table.annotation_id)) as handle:
            part = handle.read_range(["label", "id"], 3, 7)
            assert part.schema.names == ["label", "id"]
            assert part.to_pydict() == {"label": ["r3", "r4", "r5", "r6"], "id": [3, 4, 5, 6]}
            rows = handle.read_rows(["id", "flag"], np.array([40, 2, 17], dtype=np.int64))
            assert rows.to_pydict() == {"id": [40, 2, 17], "flag": [True, True, False]}
            kinds = {f.name: cols.column_type_of(f) for f in handle.schema}
            query = check_query("(score >= 10) & flag", kinds)
            assert handle.where(query, 0, ROWS).tolist() == list(range(20, ROWS, 2))
            assert handle.where(query, 30, 35).tolist() == [30, 32, 34]

    def test_lists_tables_with_links_and_rows(self, backend, caller, table, link):
        kind, object_id = link
        listed = {s.file.file_id: s for s in backend.list_tables(caller)}
        assert listed[table.file_id].rows in (ROWS, None)  # None: a backend that cannot tell
        assert listed[table.file_id].links == (link,)
        assert listed[table.file_id].file.annotation_id == table.annotation_id
        linked = backend.list_tables(caller, kind.lower(), object_id)  # spelled as OMERO does
        assert table.file_id in [s.file.file_id for s in linked]
        assert table.file_id in [s.file.file_id for s in backend.list_tables(caller, kind)]

    def test_abort_leaves_nothing(self, backend, caller, link):
        name = unique("aborted")
        schema = stored_schema()
        writer = backend.create_table(caller, name, schema, [link])
        writer.append(batch(0, 10, schema))
        writer.abort()
        writer.abort()  # safe twice
        assert name not in self.table_names(backend, caller)
        assert self.leftovers(backend) == []

    def test_links_are_spelled_as_omero_does_and_repeats_dropped(self, backend, caller, link):
        kind, object_id = link
        result = write_table(backend, caller, [(kind.upper(), object_id), link])
        listed = {s.file.file_id: s for s in backend.list_tables(caller)}
        assert listed[result.file_id].links == (link,)

    # -- formats -----------------------------------------------------------------------

    @pytest.mark.parametrize("format", ["hdf5", "tiledb"])
    def test_every_offered_format_round_trips_and_others_are_refused(self, backend, caller,
                                                                     link, format):
        if format not in backend.table_formats:
            with pytest.raises(InvalidArgument, match=format):
                backend.create_table(caller, unique("refused"), stored_schema(), [link],
                                     format=format)
            with pytest.raises(InvalidArgument, match=format):
                backend.check_upload(caller, [link], format)
            assert self.leftovers(backend) == []
            return
        if format == "tiledb":
            pytest.importorskip("tiledb")
        result = write_table(backend, caller, [link], format=format)
        with backend.open_table(caller, TableRef(file_id=result.file_id)) as handle:
            assert handle.num_rows == ROWS
            assert handle.read_range(["id"], ROWS - 1, ROWS).to_pydict() == {"id": [ROWS - 1]}

    # -- plain files -------------------------------------------------------------------

    def test_file_upload_and_download(self, backend, caller, link):
        data = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(100))
        name = unique("numbers").replace(" ", "-") + ".csv"
        writer = backend.create_file(caller, name, "", [link])
        try:
            for start in range(0, len(data), 64):
                writer.write(data[start:start + 64])
            info = writer.commit()
        except BaseException:
            writer.abort()
            raise
        assert isinstance(info, FileInfo)
        assert (info.name, info.mimetype, info.size) == (name, "text/csv", len(data))
        ref = TableRef(file_id=info.file_id)
        assert backend.file_info(caller, ref).size == len(data)
        chunks = list(backend.read_file(caller, ref, 100))
        assert b"".join(chunks) == data
        assert max(len(c) for c in chunks) <= 100
        with pytest.raises(InvalidArgument, match="not an OMERO.table|plain file"):
            backend.open_table(caller, ref)
        assert info.file_id not in self.open_table_ids(backend)

    def test_file_abort_leaves_nothing(self, backend, caller, link):
        writer = backend.create_file(caller, "aborted.csv", "text/csv", [link])
        writer.write(b"x,y\n")
        writer.abort()
        writer.abort()
        assert self.leftovers(backend) == []

    # -- permissions -------------------------------------------------------------------

    def test_another_users_private_table_is_not_found(self, backend, caller, other):
        result = write_table(backend, caller, [])  # unlinked: the caller's own group
        for ref in (TableRef(file_id=result.file_id),
                    TableRef(annotation_id=result.annotation_id)):
            with pytest.raises(NotFound):
                backend.open_table(other, ref)
            with pytest.raises(NotFound):
                backend.file_info(other, ref)
            with pytest.raises(NotFound):
                list(backend.read_file(other, ref, 1024))
        assert result.file_id not in [s.file.file_id for s in backend.list_tables(other)]

    def test_a_missing_table_is_not_found(self, backend, caller):
        with pytest.raises(NotFound):
            backend.open_table(caller, TableRef(file_id=2**62))

    # -- refusals, typed and naming what was wrong ---------------------------------------

    @pytest.mark.parametrize("name, links, message", [
        ("", None, "must not be empty"),
        ("   ", None, "must not be empty"),
        ("nul\x00name", None, "NUL"),
        (None, [("Nope", 1)], "'Nope'"),
        (None, [("Image", -1)], "Image id"),
        (None, [("Image",)], "pair"),
        (None, "Image:1", "list of"),
        (None, 7, "list of"),
    ])
    def test_bad_names_and_links_are_refused(self, backend, caller, link, name, links,
                                             message):
        before = self.table_names(backend, caller)
        with pytest.raises(InvalidArgument, match=message):
            backend.create_table(caller, unique("bad") if name is None else name,
                                 stored_schema(), [link] if links is None else links)
        if name is None:
            with pytest.raises(InvalidArgument, match=message):
                backend.check_upload(caller, links)
            with pytest.raises(InvalidArgument, match=message):
                backend.create_file(caller, "bad.csv", "text/csv", links)
        assert self.table_names(backend, caller) == before
        assert self.leftovers(backend) == []

    def test_bad_schemas_are_refused(self, backend, caller, link):
        unsized = cols.omero_schema(pa.schema([("text", pa.string())]))
        with pytest.raises(InvalidArgument, match="'text' has no width"):
            backend.create_table(caller, unique("unsized"), unsized, [link])
        bare = pa.schema([("plain", pa.int64())])  # not mapped: no OMERO column type
        with pytest.raises(InvalidArgument, match="'plain'"):
            backend.create_table(caller, unique("bare"), bare, [link])
        wide = cols.omero_schema(pa.schema([(f"c{i:04d}_{'x' * 60}", pa.int64())
                                            for i in range(2000)]))
        with pytest.raises(InvalidArgument, match="cannot store this table"):
            backend.create_table(caller, unique("wide"), wide, [link])
        assert self.leftovers(backend) == []

    @pytest.mark.parametrize("name, mimetype, message", [
        ("a/b.csv", "text/csv", "'/'"),
        ("", "text/csv", "must not be empty"),
        ("t.h5", "OMERO.tables", "cannot have the mimetype"),
        ("t.h5", " omero.TABLES ", "cannot have the mimetype"),
    ])
    def test_bad_files_are_refused(self, backend, caller, link, name, mimetype, message):
        with pytest.raises(InvalidArgument, match=message):
            backend.create_file(caller, name, mimetype, [link])
        assert self.leftovers(backend) == []

    def test_bad_references_and_chunk_sizes_are_refused(self, backend, caller, table):
        for ref in (TableRef(), TableRef(file_id=1, annotation_id=1), TableRef(file_id=-1)):
            with pytest.raises(InvalidArgument, match="file_id|annotation_id|id"):
                backend.open_table(caller, ref)
            with pytest.raises(InvalidArgument):
                backend.file_info(caller, ref)
        for size in (0, -5, 1.5):
            with pytest.raises(InvalidArgument, match="chunk_size"):
                backend.read_file(caller, TableRef(file_id=table.file_id), size)
        with pytest.raises(InvalidArgument, match="object_type"):
            backend.list_tables(caller, None, 5)
        with pytest.raises(InvalidArgument, match="'Nope'"):
            backend.list_tables(caller, "Nope")

    # -- open handles ------------------------------------------------------------------

    def test_open_handles_are_released(self, backend, caller, table):
        ref = TableRef(file_id=table.file_id)
        assert table.file_id not in self.open_table_ids(backend)
        first = backend.open_table(caller, ref)
        second = backend.open_table(caller, ref)
        try:
            assert isinstance(first, TableHandle)
            assert self.open_table_ids(backend).count(table.file_id) == 2
            first.close()
            assert self.open_table_ids(backend).count(table.file_id) == 1
        finally:
            first.close()  # closing twice is harmless
            second.close()
        assert table.file_id not in self.open_table_ids(backend)
        with pytest.raises(ZeroDivisionError), backend.open_table(caller, ref):
            1 / 0  # noqa: B018 - a read that fails still closes its handle
        assert table.file_id not in self.open_table_ids(backend)
