"""The benchmark's tables, and the limit: plain PyTables reads and writes of the same data.

``narrow``: five columns as in the issue (two integer ids, two doubles, a
16-byte string). ``wide``: an integer id and 99 doubles. Values are seeded,
so every contender reads and writes the same data.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

# PyTables as the bridge loads it (HDF5 file locking off: OMERO.tables holds its files open).
from flight_protocol.columns import fixed_width_strings
from flight_server.backends.formats.hdf5 import tables

NARROW_SUBSET = ["object", "area"]
WIDE_SUBSET = ["object", "m1", "m2", "m3", "m4"]
QUERY = "area < 0.01"  # about 1% of rows, scattered (area is uniform on [0, 1))


def narrow(rows: int, seed: int = 0) -> pd.DataFrame:
    """object, Image (ids), x, area (doubles), label (16-byte strings)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(rows, dtype=np.int64)
    label = pa.compute.binary_join_element_wise(
        "cell-", pa.compute.utf8_lpad(pa.array(ids).cast(pa.string()), 11, "0"), "")
    return pd.DataFrame({
        "object": ids,
        "Image": rng.integers(1, 1000, rows, dtype=np.int64),
        "x": rng.uniform(0, 2048, rows),
        "area": rng.uniform(0, 1, rows),
        "label": label.to_numpy(zero_copy_only=False).astype(object),
    })


def wide(rows: int, seed: int = 0) -> pd.DataFrame:
    """object (id), area (uniform on [0, 1)) and 98 more doubles m1..m98."""
    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {"object": np.arange(rows, dtype=np.int64),
                                   "area": rng.uniform(0, 1, rows)}
    block = rng.standard_normal((98, rows))
    data.update({f"m{i + 1}": block[i] for i in range(98)})
    return pd.DataFrame(data)


def subset_of(kind: str) -> list[str]:
    return NARROW_SUBSET if kind == "narrow" else WIDE_SUBSET


def fixed_width_bytes(values: pa.Array, width: int | None = None) -> np.ndarray:
    """Strings as a numpy ``S<width>`` array (NUL-padded, as PyTables stores them), vectorized.

    The UTF-8 bytes are scattered into a zeroed ``(rows, width)`` block straight
    from Arrow's buffers, with no per-value Python object.
    """
    binary = values.cast(pa.binary())
    if binary.null_count:
        binary = binary.fill_null(b"")
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int32,
                            count=len(binary) + 1, offset=binary.offset * 4)
    lengths = np.diff(offsets)
    width = width or max(1, int(lengths.max(initial=0)))
    data = np.frombuffer(binary.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    block = np.zeros((len(binary), width), dtype=np.uint8)
    rows = np.repeat(np.arange(len(binary)), lengths)
    cols = np.arange(len(data)) - np.repeat(offsets[:-1] - offsets[0], lengths)
    block[rows, cols] = data
    return block.view(f"S{width}").reshape(-1)


def string_widths(frame: pd.DataFrame) -> dict[str, int]:
    """The byte width of each string column: its longest UTF-8 value."""
    return {str(name): max(1, int(pa.compute.max(pa.compute.binary_length(
                pa.array(frame[name]).cast(pa.binary()))).as_py() or 1))
            for name, dtype in frame.dtypes.items() if dtype.kind not in "iufb"}


def records(frame: pd.DataFrame, widths: dict[str, int]) -> np.ndarray:
    """The frame as the structured array PyTables appends (strings as fixed-width bytes)."""
    columns: dict[str, np.ndarray] = {}
    for name in frame.columns:
        if str(name) in widths:
            columns[str(name)] = fixed_width_bytes(pa.array(frame[name]), widths[str(name)])
        else:
            columns[str(name)] = frame[name].to_numpy()
    out = np.empty(len(frame), dtype=[(n, c.dtype) for n, c in columns.items()])
    for name, values in columns.items():
        out[name] = values
    return out


def pytables_write(frame: pd.DataFrame, path: Path, chunk_rows: int = 65_536) -> None:
    """The limit for uploads: the frame to a PyTables table, as fast as PyTables allows.

    Rows are converted and appended a cache-sized chunk at a time.
    """
    with warnings.catch_warnings(), tables.open_file(str(path), "w") as h5:
        warnings.simplefilter("ignore", tables.NaturalNameWarning)
        table = None
        widths = string_widths(frame)
        for start in range(0, len(frame), chunk_rows):
            data = records(frame.iloc[start:start + chunk_rows], widths)
            if table is None:
                table = h5.create_table("/", "Measurements", data.dtype,
                                        expectedrows=len(frame))
            table.append(data)


def pytables_read(path: Path, columns: Sequence[str] | None = None,
                  query: str | None = None) -> pa.Table:
    """The limit for reads: an OMERO.tables HDF5 file straight into Arrow, in this process.

    Rows are stored whole (one compound record per row), so a column subset
    still reads whole rows: one read, then the columns are picked.
    """
    with tables.open_file(str(path), "r") as h5:
        table = h5.root.OME.Measurements
        names = list(columns or table.colnames)
        data = table.read_where(query) if query is not None else table.read()
    return pa.table({n: _array(data[n]) for n in names})


def _array(col: np.ndarray) -> pa.Array:
    if col.dtype.kind == "S":  # fixed-width bytes lose their NUL padding, as OMERO's do
        return fixed_width_strings(col)  # the fastest conversion there is, the bridge's own
    return pa.array(col)
