"""The TileDB array layout OMERO Plus reads (and omero2pandas writes), and its writer.

Shared by the client (``create_tiledb`` writes arrays on the user's machine) and
the server (the embedded store keeps TileDB tables); the reader lives with the
server's storage formats. Importing this module never imports ``tiledb``: it is
loaded on first use, and a missing install raises :class:`TileDBUnavailable`.

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
  attribute dtypes and column names, through :mod:`flight_protocol.columns`.

MaskColumn is refused: OMERO Plus has no documented TileDB layout for masks.
Every batch appended is one TileDB write, hence one fragment.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flight_protocol import columns as cols

VERSION = "3"
ROW_DIM = "__tiledb_rows"
TILE = 10_000
TOKEN_KEY = "SecretToken"
COLUMNS_KEY = "__omero_columns"
#: numpy base type of each array column's cells.
BASE_DTYPES = {cols.LONG_ARRAY: np.int64, cols.FLOAT_ARRAY: np.float32,
               cols.DOUBLE_ARRAY: np.float64}


class TileDBUnavailable(ImportError):
    """tiledb is not installed here; the message says how to install it."""


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
        dtype = _record_dtype(BASE_DTYPES[kind], f.type.list_size)
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
        return np.ascontiguousarray(values, dtype=BASE_DTYPES[kind]).view(cell).reshape(-1)
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
            raise FileExistsError(
                f"{self.path} already exists; TileDB tables are never overwritten")
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
