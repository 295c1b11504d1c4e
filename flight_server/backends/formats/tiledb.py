"""Reading TileDB table arrays (the layout of :mod:`flight_protocol.tiledb`) into Arrow.

Reads go straight from TileDB into Arrow one range at a time. Queries are the
checked expressions of :mod:`flight_server.query`, evaluated with numexpr over
the numpy columns of one range, never the user's text.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from flight_protocol import columns as cols
from flight_protocol.tiledb import (
    BASE_DTYPES,
    COLUMNS_KEY,
    ROW_DIM,
    TileDBUnavailable,
    TileDBWriter,
    is_tiledb_array,
    secret_token,
    tiledb_module,
)
from flight_server.backends.handles import FileInfo, OnClose, TableHandle
from flight_server.errors import InvalidArgument, NotFound
from flight_server.query import CheckedQuery

__all__ = ["TileDBReader", "TileDBUnavailable", "TileDBWriter", "is_tiledb_array",
           "secret_token"]



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

    def __init__(self, path: str | os.PathLike[str], info: FileInfo | None = None,
                 on_close: OnClose | None = None) -> None:
        tiledb = tiledb_module()
        self.path = Path(path)
        self._on_close = on_close
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
            flat = values.view(BASE_DTYPES[kind]) if len(values) else np.empty(0)
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
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)


def _runs(sorted_rows: np.ndarray) -> Iterator[slice]:
    """Inclusive slices covering runs of consecutive row numbers (TileDB multi_index)."""
    breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
    for run in np.split(sorted_rows, breaks):
        yield slice(int(run[0]), int(run[-1]))
