"""``omero.grid`` columns <-> Arrow, through numpy and the shared mapping in ``columns``.

omero-py's column objects carry their values as sequences; numpy arrays
marshal over Ice as they are (no per-value Python loop), and what comes back
is turned into numpy with ``np.asarray`` and into Arrow with
``columns.from_numpy`` (``np.fromiter`` with the column's dtype for scalar
columns). Strings are the exception in both directions: Ice wants and
returns ``str`` objects, which Arrow encodes itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import omero
import omero.grid
import omero_Tables_ice  # noqa: F401 - defines omero.grid.*Column
import pyarrow as pa

from flight_protocol import columns as cols

_CLASSES: dict[str, Any] = {
    cols.LONG: omero.grid.LongColumn, cols.DOUBLE: omero.grid.DoubleColumn,
    cols.STRING: omero.grid.StringColumn, cols.BOOL: omero.grid.BoolColumn,
    cols.IMAGE: omero.grid.ImageColumn, cols.ROI: omero.grid.RoiColumn,
    cols.WELL: omero.grid.WellColumn, cols.PLATE: omero.grid.PlateColumn,
    cols.DATASET: omero.grid.DatasetColumn, cols.FILE: omero.grid.FileColumn,
    cols.LONG_ARRAY: omero.grid.LongArrayColumn, cols.FLOAT_ARRAY: omero.grid.FloatArrayColumn,
    cols.DOUBLE_ARRAY: omero.grid.DoubleArrayColumn, cols.MASK: omero.grid.MaskColumn,
}
_MASK_FIELDS = tuple(cols.MASK_TYPE.names[:-1])
_SCALAR_DTYPES = {pa.int64(): np.int64, pa.float64(): np.float64, pa.bool_(): np.bool_}


def field_of(column: Any) -> pa.Field:
    """The stored-schema field for a column header from ``Table.getHeaders``."""
    column_type = column.ice_id()
    size = getattr(column, "size", None)
    return cols.arrow_field(column.name, column_type, size, column.description or "")


def schema_of(headers: list[Any]) -> pa.Schema:
    return pa.schema([field_of(c) for c in headers])


def empty_column(f: pa.Field) -> Any:
    """An empty omero.grid column for ``Table.initialize``."""
    column_type = cols.column_type_of(f)
    description = (f.metadata or {}).get(cols.META_DESCRIPTION, b"").decode()
    cls = _CLASSES[column_type]
    if column_type == cols.STRING:
        return cls(f.name, description, max(1, cols.string_size_of(f) or 1), [])
    if column_type in cols.ARRAY_COLUMNS:
        return cls(f.name, description, f.type.list_size, [])
    if column_type == cols.MASK:
        return cls(f.name, description)
    return cls(f.name, description, [])


def fill(column: Any, arr: pa.Array, f: pa.Field) -> None:
    """Set a column's values from a conformed Arrow array."""
    column_type = cols.column_type_of(f)
    if column_type == cols.STRING:
        column.values = arr.fill_null("").to_numpy(zero_copy_only=False).tolist()
        return
    values = cols.to_numpy(arr, f)
    if column_type == cols.MASK:
        assert isinstance(values, dict)
        for name in _MASK_FIELDS:
            setattr(column, name, values[name])
        column.bytes = values["bytes"]
        return
    column.values = values


def to_arrow(column: Any, f: pa.Field) -> pa.Array:
    """A column from ``Table.read``/``slice`` as an Arrow array of the field's type."""
    column_type = cols.column_type_of(f)
    if column_type == cols.MASK:
        if not column.imageId:
            return pa.array([], type=f.type)
        values: dict[str, Any] = {n: np.asarray(getattr(column, n)) for n in _MASK_FIELDS}
        values["bytes"] = column.bytes
        return cols.from_numpy(values, f)
    raw = column.values
    if raw is None or len(raw) == 0:
        return pa.array([], type=f.type)
    if column_type == cols.STRING:
        # Ice hands back ``str`` objects: Arrow encodes them in one C loop (15x faster
        # than numpy's fixed-width unicode and ``np.char.encode``).
        return pa.array(raw, type=f.type)
    dtype = _SCALAR_DTYPES.get(f.type)
    if dtype is not None:  # a list of Python numbers: one typed C loop, no dtype guessing
        return cols.from_numpy(np.fromiter(raw, dtype=dtype, count=len(raw)), f)
    return cols.from_numpy(np.asarray(raw), f)
