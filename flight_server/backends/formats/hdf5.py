"""OMERO.tables HDF5 files, read and written with PyTables in omero-py's exact layout.

The layout is what ``omero.hdfstorageV2.HdfStorage.initialize`` writes:

* group ``/OME``;
* table ``/OME/Measurements``, one HDF5 column per OMERO column, built from the
  descriptors of ``omero/columns.py`` (``Int64Col`` for Long and id columns,
  ``Float64Col``, ``BoolCol``, ``StringCol(itemsize)``, array columns with a
  ``shape``, and a MaskColumn as a nested ``i,z,t,x,y,w,h`` description);
* VLArray ``/OME/Measurements_masks`` of ``uint8``: the mask bytes of row *n*
  at index *n* (only when the table has a MaskColumn);
* arrays ``/OME/ColumnTypes`` (Ice type ids) and ``/OME/ColumnDescriptions``;
* attributes ``__version = '2'`` and ``__initialized`` (a float time) on the
  Measurements table.

Every file is checked before PyTables opens it
(:func:`flight_server.backends.formats.hdf5_check.check_file`: plain, self-contained storage in
this layout, nothing PyTables would unpickle), then its column types are
checked against the stored dtypes. Writing refuses a table whose compound type
cannot fit HDF5's object header (:func:`flight_protocol.columns.check_hdf5_header`).
Reads fetch whole rows, at most :data:`READ_BYTES` at a time, and keep only the
requested columns.

libhdf5 is usually built without thread safety, so every PyTables call in this
process goes through :data:`HDF5_LOCK` (as OMERO.tables does with its global
lock). Callers hold it for one chunk at a time, never for a whole stream.

HDF5's own file locks (flock) are off in the bridge unless HDF5_USE_FILE_LOCKING
says otherwise: OMERO.tables keeps the tables it has open locked for writing,
which would stop direct reads beside OMERO, and libhdf5 reads this setting when
PyTables (or h5py) first loads it, so this module sets it before importing them;
every server module reaches libhdf5 through this module. The bridge writes each
HDF5 file once, to a private temporary path, under its own :data:`HDF5_LOCK`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from flight_protocol import columns as cols
from flight_server.backends.handles import FileInfo, OnClose, TableHandle
from flight_server.errors import InvalidArgument, NotFound
from flight_server.query import CheckedQuery

# Before PyTables and h5py load libhdf5 (see the module docstring).
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import tables  # noqa: E402 - after the setting above

from flight_server.backends.formats.hdf5_check import check_file  # noqa: E402 - loads h5py

log = logging.getLogger(__name__)

#: The process-wide lock around every libhdf5 call.
HDF5_LOCK = threading.RLock()
#: Rows a query is evaluated over while holding :data:`HDF5_LOCK` (others wait at most this,
#: about 10 ms for a narrow table; 65,536-row windows made a 10M-row query 2.3x slower).
WHERE_ROWS = 262_144

VERSION = "2"
TITLE = "OMERO HDF Measurement Storage"
_MASK_DTYPE = [("i", np.dtype(np.int64)), ("z", np.dtype(np.int32)), ("t", np.dtype(np.int32)),
               *((c, np.dtype(np.float64)) for c in "xywh")]
_MASK_FIELDS = {"imageId": "i", "theZ": "z", "theT": "t", "x": "x", "y": "y", "w": "w", "h": "h"}


def _mask_description(pos: int) -> tables.IsDescription:
    class MaskDescription(tables.IsDescription):
        _v_pos = pos
        i = tables.Int64Col(pos=0)
        z = tables.Int32Col(pos=1)
        t = tables.Int32Col(pos=2)
        x = tables.Float64Col(pos=3)
        y = tables.Float64Col(pos=4)
        w = tables.Float64Col(pos=5)
        h = tables.Float64Col(pos=6)

    return MaskDescription()


def _descriptor(f: pa.Field, pos: int) -> tables.Col | tables.IsDescription:
    """The PyTables column omero/columns.py would declare for this stored field."""
    kind = cols.column_type_of(f)
    if kind in cols.INTEGER_COLUMNS:
        return tables.Int64Col(pos=pos)
    if kind == cols.DOUBLE:
        return tables.Float64Col(pos=pos)
    if kind == cols.BOOL:
        return tables.BoolCol(pos=pos)
    if kind == cols.STRING:
        size = cols.string_size_of(f)
        if not size or size < 1:
            raise InvalidArgument(f"string column {f.name!r} needs a width of at least 1 byte")
        return tables.StringCol(itemsize=size, pos=pos)
    if kind in cols.ARRAY_COLUMNS:
        atom = {cols.LONG_ARRAY: tables.Int64Col, cols.FLOAT_ARRAY: tables.Float32Col,
                cols.DOUBLE_ARRAY: tables.Float64Col}[kind]
        return atom(pos=pos, shape=f.type.list_size)
    return _mask_description(pos)


def _stored_field(table: tables.Table, name: str, kind: str, description: str) -> pa.Field:
    dtype = table.coldtypes.get(name)
    size = None
    if kind == cols.STRING:
        size = dtype.itemsize
    elif kind in cols.ARRAY_COLUMNS:
        size = dtype.shape[0] if dtype.shape else 1
    return cols.arrow_field(name, kind, size, description)


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class H5Writer:
    """Creates a new OMERO.tables file and appends conformed batches to it."""

    def __init__(self, path: str | Path, schema: pa.Schema) -> None:
        self.path = Path(path)
        self.schema = schema
        self.rows = 0
        cols.check_hdf5_header(schema)
        definition = {f.name: _descriptor(f, i) for i, f in enumerate(schema)}
        self._has_mask = any(cols.column_type_of(f) == cols.MASK for f in schema)
        with HDF5_LOCK:
            self._h5 = tables.open_file(str(self.path), mode="w", title=TITLE)
            try:
                ome = self._h5.create_group("/", "OME")
                with warnings.catch_warnings():  # column names need not be identifiers
                    warnings.simplefilter("ignore", tables.NaturalNameWarning)
                    self._table = self._h5.create_table(ome, "Measurements", definition)
                types = [cols.column_type_of(f) for f in schema]
                descriptions = [  # UTF-8 bytes: PyTables refuses non-ASCII str arrays
                    (f.metadata or {}).get(cols.META_DESCRIPTION, b"") for f in schema
                ]
                self._h5.create_array(ome, "ColumnTypes", types)
                self._h5.create_array(ome, "ColumnDescriptions", descriptions)
                self._table.attrs["__version"] = VERSION
                self._table.attrs["__initialized"] = time.time()
                self._masks = (
                    self._h5.create_vlarray(ome, "Measurements_masks", tables.UInt8Atom())
                    if self._has_mask else None
                )
                self._h5.flush()
            except BaseException:
                self._h5.close()
                self.path.unlink(missing_ok=True)  # a refused table leaves no file
                raise

    def append(self, batch: pa.RecordBatch) -> None:
        """Append a batch already conformed to the stored schema."""
        if batch.num_rows == 0:
            return
        records = np.empty(batch.num_rows, dtype=self._table.dtype)
        mask_bytes: list[bytes] = []
        for f, arr in zip(self.schema, batch.columns, strict=True):
            values = cols.to_numpy(arr, f)
            if isinstance(values, dict):
                for src, dst in _MASK_FIELDS.items():
                    records[f.name][dst] = values[src]
                mask_bytes = values["bytes"]  # type: ignore[assignment]
            else:
                records[f.name] = values
        with HDF5_LOCK:
            self._table.append(records)
            if self._masks is not None:
                for b in mask_bytes:
                    self._masks.append(np.frombuffer(b or b"", dtype=np.uint8))
            self._table.flush()
        self.rows += batch.num_rows

    def close(self) -> None:
        with HDF5_LOCK:
            if self._h5.isopen:
                self._h5.close()


#: Bytes of whole HDF5 rows read at a time: a read of a few columns of a table with wide
#: rows holds at most this much beyond the requested columns themselves.
READ_BYTES = 4 << 20


def _expected_dtype(kind: str, dtype: np.dtype) -> bool:
    """Whether a stored HDF5 column's dtype is what omero/columns.py writes for ``kind``."""
    if kind in cols.INTEGER_COLUMNS:
        return dtype == np.int64
    if kind == cols.DOUBLE:
        return dtype == np.float64
    if kind == cols.BOOL:
        return dtype == np.bool_
    if kind == cols.STRING:
        return dtype.kind == "S" and dtype.itemsize >= 1
    if kind in cols.ARRAY_COLUMNS:
        base = {cols.LONG_ARRAY: np.int64, cols.FLOAT_ARRAY: np.float32,
                cols.DOUBLE_ARRAY: np.float64}[kind]
        shape = dtype.shape
        return dtype.subdtype is not None and dtype.base == base and len(shape) == 1 \
            and shape[0] >= 1
    fields = dtype.fields
    return dtype.names is not None and fields is not None \
        and [(n, fields[n][0]) for n in dtype.names] == _MASK_DTYPE


#: A column selection's batch schema and, per column, (name, field, is a mask column).
_Layout = tuple[pa.Schema, list[tuple[str, pa.Field, bool]]]


class H5Reader(TableHandle):
    """An open OMERO.tables file: its stored schema and chunked reads.

    The file is checked first (:func:`.hdf5_check.check_file`): only plain, self-contained
    OMERO.tables files are opened. Reads fetch whole HDF5 rows (the storage keeps rows
    together) at most :data:`READ_BYTES` at a time and keep only the requested columns, so
    memory follows the requested columns, not the table's width. ``on_close`` is called
    once, by :meth:`close` (a backend's registry of open handles).
    """

    def __init__(self, path: str | Path, info: FileInfo | None = None,
                 on_close: OnClose | None = None) -> None:
        self.path = Path(path)
        self._label = self.path.name
        self._on_close = on_close
        if info is not None:
            self.info = info
            self._label = f"OriginalFile {info.file_id} ({info.name[:100]!r})"
        check_file(self.path, self._label)
        with HDF5_LOCK:
            try:
                self._h5 = tables.open_file(str(self.path), mode="r")
            except (OSError, tables.HDF5ExtError) as exc:
                raise NotFound(f"cannot open {self._label} as an HDF5 file: {exc}") from None
            try:
                self._open()
            except tables.NoSuchNodeError:
                self._h5.close()
                raise InvalidArgument(f"{self._label} is not an OMERO.tables file") from None
            except BaseException:
                self._h5.close()
                raise

    def _open(self) -> None:
        ome = self._h5.root.OME
        self._table = ome.Measurements
        kinds = {"Measurements": tables.Table, "ColumnTypes": tables.Array,
                 "ColumnDescriptions": tables.Array}
        for name, kind in kinds.items():
            node = getattr(ome, name)
            if type(node) is not kind or (kind is tables.Array and node.atom.kind != "string"):
                raise InvalidArgument(f"{self._label}: /OME/{name} is not an OMERO.tables "
                                      f"{kind.__name__}")
        types = [_text(t) for t in ome.ColumnTypes.read()]
        descriptions = [_text(d) for d in ome.ColumnDescriptions.read()]
        self._masks: Any = getattr(ome, "Measurements_masks", None)
        names = list(self._table.description._v_names)
        if len(types) != len(names) or len(descriptions) != len(names):
            raise InvalidArgument(
                f"{self._label}: {len(types)} column types and {len(descriptions)} "
                f"descriptions for {len(names)} columns"
            )
        try:
            kinds_of = [cols._full_name(t) for t in types]
        except cols.UnsupportedColumn as exc:
            raise InvalidArgument(f"{self._label}: {str(exc)[:200]}") from None
        for name, kind in zip(names, kinds_of, strict=True):
            if not _expected_dtype(kind, self._table.dtype[name]):
                raise InvalidArgument(
                    f"{self._label}: column {name[:100]!r} is declared "
                    f"{cols.short_name(kind)} but stored as {self._table.dtype[name]}")
        if cols.MASK in kinds_of:
            masks: Any = self._masks
            if (type(masks) is not tables.VLArray or type(masks.atom) is not tables.UInt8Atom
                    or masks.nrows < self._table.nrows):
                raise InvalidArgument(f"{self._label}: /OME/Measurements_masks is not the "
                                      "table's mask bytes")
        self._schema = pa.schema(
            _stored_field(self._table, n, k, d)
            for n, k, d in zip(names, kinds_of, descriptions, strict=True)
        )
        self._num_rows = int(self._table.nrows)
        self._layouts: dict[tuple[str, ...], _Layout] = {}
        self._rows_per_read = max(1, READ_BYTES // max(1, self._table.rowsize))

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def num_rows(self) -> int:
        return self._num_rows

    def _layout(self, names: Sequence[str]) -> _Layout:
        """The batch schema of ``names`` and each column's (name, field, is a mask), worked
        out once per column selection: every batch of a read asks again."""
        key = tuple(names)
        found = self._layouts.get(key)
        if found is None:
            fields = [self.schema.field(n) for n in key]
            found = (pa.schema(fields), [(n, f, cols.column_type_of(f) == cols.MASK)
                                         for n, f in zip(key, fields, strict=True)])
            if len(self._layouts) < 64:
                self._layouts[key] = found
        return found

    def _to_batch(self, names: Sequence[str], records: dict[str, np.ndarray], rows: np.ndarray,
                  ) -> pa.RecordBatch:
        schema, layout = self._layout(names)
        arrays = []
        for name, f, is_mask in layout:
            if is_mask:
                sub = records[name]
                values: dict = {src: sub[dst] for src, dst in _MASK_FIELDS.items()}
                with HDF5_LOCK:
                    values["bytes"] = [self._masks[int(r)].tobytes() for r in rows]
                arrays.append(cols.from_numpy(values, f))
            else:
                arrays.append(cols.from_numpy(records[name], f))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _columns(self, names: Sequence[str], count: int,
                 read: Callable[[int, int], np.ndarray]) -> dict[str, np.ndarray]:
        """The named columns of ``count`` rows, from whole rows read a bounded piece at a time.

        ``read(i, j)`` returns the records of result rows ``i..j``; only the named fields of
        each piece are kept, so whole rows never pile up.
        """
        out = {n: np.empty(count, dtype=self._table.dtype[n]) for n in names}
        for i in range(0, count if names else 0, self._rows_per_read):
            j = min(i + self._rows_per_read, count)
            try:
                with HDF5_LOCK:
                    records = read(i, j)
            except (tables.HDF5ExtError, OSError) as exc:
                raise InvalidArgument(f"{self._label} cannot be read (damaged file?): "
                                      f"{str(exc)[:200]}") from None
            for n in names:
                out[n][i:j] = records[n]
        return out

    def read_range(self, names: Sequence[str], start: int, stop: int) -> pa.RecordBatch:
        """Rows ``[start, stop)`` of the named columns."""
        stop = min(stop, self.num_rows)
        start = min(start, stop)
        records = self._columns(names, stop - start,
                                lambda i, j: self._table.read(start + i, start + j))
        return self._to_batch(names, records, np.arange(start, stop, dtype=np.int64))

    def read_rows(self, names: Sequence[str], rows: np.ndarray) -> pa.RecordBatch:
        """The given rows (any order, repeats allowed) of the named columns."""
        rows = np.asarray(rows, dtype=np.int64)
        unique, inverse = np.unique(rows, return_inverse=True)
        records = self._columns(names, len(unique),
                                lambda i, j: self._table.read_coordinates(unique[i:j]))
        if len(unique) != len(rows) or not np.array_equal(unique, rows):  # else in place
            records = {n: v[inverse] for n, v in records.items()}
        return self._to_batch(names, records, rows)

    def where(self, query: CheckedQuery, start: int, stop: int) -> np.ndarray:
        """Sorted row numbers in ``[start, stop)`` where the checked condition holds."""
        stop = min(stop, self.num_rows)
        if start >= stop:
            return np.empty(0, dtype=np.int64)
        parts = []
        for first in range(start, stop, WHERE_ROWS):  # the lock is released between chunks
            with HDF5_LOCK:
                condvars = query.condvars(self._table.cols._f_col)
                try:
                    parts.append(self._table.get_where_list(
                        query.expression, condvars=condvars, start=first,
                        stop=min(first + WHERE_ROWS, stop), sort=True))
                except (TypeError, ValueError, NotImplementedError, KeyError, SyntaxError,
                        ArithmeticError) as exc:
                    raise InvalidArgument(
                        f"query {query.source!r} cannot be evaluated on this table: {exc}"
                    ) from None
        return np.concatenate(parts).astype(np.int64, copy=False)

    def close(self) -> None:
        with HDF5_LOCK:
            if self._h5.isopen:
                self._h5.close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)
