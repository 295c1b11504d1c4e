"""OMERO.tables as TileDB arrays, in the layout OMERO Plus reads (and omero2pandas writes).

The layout is what ``tiledb.from_pandas(..., sparse=True, full_domain=True,
tile=10000)`` produces for a DataFrame with a default index, plus OMERO's
metadata:

* a sparse array with one ``uint64`` dimension ``__tiledb_rows`` (the row
  number, 0-based, full domain, tile 10,000), no duplicates;
* one attribute per column: ``int64`` for Long and id columns, ``float64``
  for DoubleColumn, ``bool`` for BoolColumn, variable-length UTF-8 for
  StringColumn, and fixed-size multi-value cells (``int64``/``float32``/
  ``float64`` times the array length) for the array columns;
* array metadata ``__version = '3'``, ``__initialized`` (a float time) and,
  when one is given, ``SecretToken`` (OMERO Plus checks it on registration);
* ``__omero_columns``: JSON with each column's OMERO type, string width and
  description, so a round trip keeps id columns and descriptions. Arrays
  without it (e.g. written by omero2pandas) get their types from the
  attribute dtypes and column names, through :mod:`flight_server.columns`.

MaskColumn is refused: OMERO Plus has no documented TileDB layout for masks.

Every batch appended is one TileDB write, hence one fragment. Reads go
straight from TileDB into Arrow one range at a time. Queries are the checked
expressions of :mod:`flight_server.query`, evaluated with numexpr over the
numpy columns of one range, never the user's text.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flight_server import columns as cols
from flight_server.backends.base import FileInfo, TableHandle
from flight_server.errors import AlreadyExists, InvalidArgument, NotFound
from flight_server.query import CheckedQuery

VERSION = "3"
ROW_DIM = "__tiledb_rows"
TILE = 10_000
TOKEN_KEY = "SecretToken"
COLUMNS_KEY = "__omero_columns"
_BASE_DTYPES = {cols.LONG_ARRAY: np.int64, cols.FLOAT_ARRAY: np.float32,
                cols.DOUBLE_ARRAY: np.float64}


class TileDBUnavailable(InvalidArgument, ImportError):
    """tiledb is not installed here (a client gets ``invalid_argument`` with this message)."""


def tiledb_module() -> Any:
    """The ``tiledb`` package, or :class:`TileDBUnavailable` saying how to install it."""
    try:
        import tiledb
    except ImportError:
        raise TileDBUnavailable(
            "TileDB tables need tiledb, which is not installed here: "
            "pip install 'omero-flight[tiledb]'") from None
    return tiledb


def is_tiledb_array(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a TileDB array."""
    return Path(path).is_dir() and tiledb_module().object_type(str(path)) == "array"


def _record_dtype(base: type, length: int) -> np.dtype:
    return np.dtype([(f"f{i}", base) for i in range(length)])


def _attr(f: pa.Field) -> Any:
    tiledb = tiledb_module()
    kind = cols.column_type_of(f)
    if kind in cols.INTEGER_COLUMNS:
        dtype: Any = np.int64
    elif kind == cols.DOUBLE:
        dtype = np.float64
    elif kind == cols.BOOL:
        dtype = np.bool_
    elif kind == cols.STRING:
        return tiledb.Attr(name=f.name, dtype=np.str_, var=True)
    elif kind in cols.ARRAY_COLUMNS:
        dtype = _record_dtype(_BASE_DTYPES[kind], f.type.list_size)
    else:
        raise cols.UnsupportedColumn(
            f"column {f.name!r} is a MaskColumn, which TileDB tables cannot store "
            "(OMERO Plus has no TileDB layout for masks): upload it as an HDF5 table"
        )
    return tiledb.Attr(name=f.name, dtype=dtype, filters=[tiledb.ZstdFilter()])


def _column_meta(schema: pa.Schema, widths: dict[str, int]) -> str:
    out = []
    for f in schema:
        kind = cols.column_type_of(f)
        size: int | None = None
        if kind == cols.STRING:
            size = max(1, cols.string_size_of(f) or 0, widths.get(f.name, 0))
        elif kind in cols.ARRAY_COLUMNS:
            size = f.type.list_size
        description = (f.metadata or {}).get(cols.META_DESCRIPTION, b"").decode()
        out.append({"name": f.name, "type": cols.short_name(kind), "size": size,
                    "description": description})
    return json.dumps(out)


def _cell_values(arr: pa.Array, f: pa.Field, cell: np.dtype) -> np.ndarray:
    """A conformed Arrow column as the numpy values a TileDB write takes.

    ``cell`` is the attribute's dtype: TileDB reports two-value float cells as
    complex numbers, longer ones as records; array rows are viewed as either.
    """
    kind = cols.column_type_of(f)
    if kind == cols.STRING:
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)
    values = cols.to_numpy(arr, f)
    if kind in cols.ARRAY_COLUMNS:
        assert isinstance(values, np.ndarray)
        return np.ascontiguousarray(values, dtype=_BASE_DTYPES[kind]).view(cell).reshape(-1)
    assert isinstance(values, np.ndarray)
    return values


class TileDBWriter:
    """Creates a new TileDB table array and appends conformed batches, one fragment each."""

    def __init__(self, path: str | os.PathLike[str], schema: pa.Schema,
                 token: str | None = None) -> None:
        tiledb = tiledb_module()
        self.path = Path(path)
        self.schema = schema
        self.token = token
        self.rows = 0
        self.writes = 0
        if self.path.exists():
            raise AlreadyExists(f"{self.path} already exists; TileDB tables are never overwritten")
        attrs = [_attr(f) for f in schema]
        self._cells = {a.name: np.dtype(a.dtype) for a in attrs}
        dim = tiledb.Dim(name=ROW_DIM, domain=(0, np.iinfo(np.uint64).max - TILE), tile=TILE,
                         dtype=np.uint64)
        array_schema = tiledb.ArraySchema(domain=tiledb.Domain(dim), attrs=attrs, sparse=True,
                                          allows_duplicates=False)
        self._widths = dict.fromkeys(
            (f.name for f in schema if cols.column_type_of(f) == cols.STRING), 0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tiledb.Array.create(str(self.path), array_schema)
        self._array = tiledb.open(str(self.path), mode="w")

    def append(self, batch: pa.RecordBatch) -> None:
        """Append a batch already conformed to the stored schema (one TileDB write)."""
        if batch.num_rows == 0:
            return
        data = {}
        for f, arr in zip(self.schema, batch.columns, strict=True):
            data[f.name] = _cell_values(arr, f, self._cells[f.name])
            if f.name in self._widths and len(arr):
                longest = pc.max(pc.binary_length(arr)).as_py() or 0
                self._widths[f.name] = max(self._widths[f.name], int(longest))
        coords = np.arange(self.rows, self.rows + batch.num_rows, dtype=np.uint64)
        self._array[coords] = data
        self.rows += batch.num_rows
        self.writes += 1

    def close(self) -> None:
        """Write OMERO's metadata and close the array."""
        if self._array is None:
            return
        array, self._array = self._array, None
        try:
            array.meta["__version"] = VERSION
            array.meta["__initialized"] = time.time()
            array.meta[COLUMNS_KEY] = _column_meta(self.schema, self._widths)
            if self.token is not None:
                array.meta[TOKEN_KEY] = self.token
        finally:
            array.close()


def secret_token(path: str | os.PathLike[str]) -> str | None:
    """The ``SecretToken`` in a TileDB array's metadata, or None when it has none."""
    tiledb = tiledb_module()
    with tiledb.open(str(path), mode="r") as array:
        value = array.meta.get(TOKEN_KEY)
    return None if value is None else str(value)


def _inferred_field(attr: Any) -> pa.Field:
    """The incoming Arrow field an attribute without OMERO metadata stands for."""
    dtype = np.dtype(attr.dtype)
    if attr.isvar and dtype.kind in "US":
        return pa.field(attr.name, pa.string())
    if dtype.kind == "V" and dtype.fields:
        base = next(iter(dtype.fields.values()))[0]
        return pa.field(attr.name, pa.list_(pa.from_numpy_dtype(base), len(dtype.fields)))
    try:
        return pa.field(attr.name, pa.from_numpy_dtype(dtype))
    except (pa.ArrowNotImplementedError, TypeError):
        raise InvalidArgument(
            f"TileDB attribute {attr.name!r} has type {dtype}, which no OMERO column holds"
        ) from None


class TileDBReader(TableHandle):
    """An open TileDB table: its stored schema and chunked reads straight into Arrow."""

    def __init__(self, path: str | os.PathLike[str], info: FileInfo | None = None) -> None:
        tiledb = tiledb_module()
        self.path = Path(path)
        if info is not None:
            self.info = info
        self._lock = threading.Lock()
        try:
            self._array = tiledb.open(str(self.path), mode="r")
        except tiledb.TileDBError as exc:
            raise NotFound(f"cannot open {self.path.name} as a TileDB array: {exc}") from None
        try:
            self._schema, self._num_rows = self._describe()
        except BaseException:
            self._array.close()
            raise

    def _describe(self) -> tuple[pa.Schema, int]:
        schema = self._array.schema
        if schema.domain.ndim != 1 or schema.domain.dim(0).name != ROW_DIM:
            raise InvalidArgument(
                f"{self.path.name} is not a TileDB table: it needs one dimension {ROW_DIM!r}"
            )
        attrs = [schema.attr(i) for i in range(schema.nattr)]
        raw = self._array.meta.get(COLUMNS_KEY)
        if raw is not None:
            stored = pa.schema(
                cols.arrow_field(c["name"], c["type"], c["size"], c.get("description", ""))
                for c in json.loads(raw)
            )
            if stored.names != [a.name for a in attrs]:
                raise InvalidArgument(f"{self.path.name}: column metadata does not match "
                                      "the array's attributes")
        else:
            try:
                stored = cols.omero_schema(pa.schema([_inferred_field(a) for a in attrs]))
            except cols.UnsupportedColumn as exc:
                raise InvalidArgument(f"{self.path.name}: {exc}") from None
        domain = self._array.nonempty_domain()
        rows = 0 if domain is None else int(domain[0][1]) + 1
        return stored, rows

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def num_rows(self) -> int:
        return self._num_rows

    def _query(self, names: Sequence[str], index: Any, multi: bool = False
               ) -> dict[str, np.ndarray]:
        with self._lock:
            q = self._array.query(attrs=list(names), dims=[ROW_DIM], order="U" if multi else "G")
            return dict(q.multi_index[index] if multi else q[index])

    def _to_batch(self, names: Sequence[str], data: dict[str, np.ndarray]) -> pa.RecordBatch:
        fields = [self.schema.field(n) for n in names]
        arrays = [self._arrow(data[f.name], f) for f in fields]
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))

    @staticmethod
    def _arrow(values: np.ndarray, f: pa.Field) -> pa.Array:
        kind = cols.column_type_of(f)
        if kind == cols.STRING:
            return pa.array(values, type=pa.string())
        if kind in cols.ARRAY_COLUMNS:
            flat = values.view(_BASE_DTYPES[kind]) if len(values) else np.empty(0)
            return cols.from_numpy(np.asarray(flat).reshape(len(values), -1), f)
        return cols.from_numpy(values, f)

    def _check_rows(self, found: np.ndarray, expected: int) -> None:
        if len(found) != expected:
            raise InvalidArgument(
                f"{self.path.name}: expected {expected} rows, the array holds {len(found)} "
                "(its row numbers have gaps)"
            )

    def read_range(self, names: Sequence[str], start: int, stop: int) -> pa.RecordBatch:
        """Rows ``[start, stop)`` of the named columns."""
        stop = min(stop, self.num_rows)
        start = min(start, stop)
        if not names or start == stop:
            return self._empty(names)
        data = self._query(names, slice(start, stop))
        self._check_rows(data[ROW_DIM], stop - start)
        return self._to_batch(names, data)

    def _empty(self, names: Sequence[str]) -> pa.RecordBatch:
        fields = [self.schema.field(n) for n in names]
        return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in fields],
                                          schema=pa.schema(fields))

    def read_rows(self, names: Sequence[str], rows: np.ndarray) -> pa.RecordBatch:
        """The given rows (any order, repeats allowed) of the named columns."""
        rows = np.asarray(rows, dtype=np.int64)
        unique, inverse = np.unique(rows, return_inverse=True)
        if not names or not len(unique):
            return self._empty(names)
        data = self._query(names, list(_runs(unique)), multi=True)
        found = data[ROW_DIM].astype(np.int64)
        self._check_rows(found, len(unique))
        order = np.argsort(found, kind="stable")
        take = order[inverse]
        return self._to_batch(names, {n: data[n][take] for n in names})

    def where(self, query: CheckedQuery, start: int, stop: int) -> np.ndarray:
        """Sorted row numbers in ``[start, stop)`` where the checked condition holds."""
        import numexpr

        stop = min(stop, self.num_rows)
        if start >= stop:
            return np.empty(0, dtype=np.int64)
        names = sorted(set(query.columns.values()))
        data = self._query(names, slice(start, stop)) if names else {}
        condvars = query.condvars(lambda name: self._numexpr_column(data[name], name))
        try:
            result = numexpr.evaluate(query.expression, local_dict=condvars, global_dict={})
        except (TypeError, ValueError, NotImplementedError, KeyError, SyntaxError,
                ArithmeticError) as exc:
            raise InvalidArgument(
                f"query {query.source!r} cannot be evaluated on this table: {exc}"
            ) from None
        result = np.asarray(result)
        if result.dtype != np.bool_:
            raise InvalidArgument(
                f"query {query.source!r} is not a condition: it gives {result.dtype} values"
            )
        if result.shape == ():  # a condition on constants only
            result = np.full(stop - start, bool(result))
        return np.flatnonzero(result).astype(np.int64) + start

    def _numexpr_column(self, values: np.ndarray, name: str) -> np.ndarray:
        """A column as numexpr takes it: strings as UTF-8 bytes, like PyTables stores them."""
        if cols.column_type_of(self.schema.field(name)) == cols.STRING:
            encoded = [v.encode("utf-8") for v in values]
            return np.array(encoded, dtype="S") if encoded else np.empty(0, dtype="S1")
        return values

    def close(self) -> None:
        with self._lock:
            self._array.close()


def _runs(sorted_rows: np.ndarray) -> Iterator[slice]:
    """Inclusive slices covering runs of consecutive row numbers (TileDB multi_index)."""
    breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
    for run in np.split(sorted_rows, breaks):
        yield slice(int(run[0]), int(run[-1]))
