"""Turn a stream of record batches into what the caller asked for.

In memory: pandas (index = the table's own row numbers), Arrow, Polars,
DuckDB. On disk: CSV (header plus an index column, as omero2pandas writes) or
Parquet (the row numbers kept as the pandas index), written batch by batch so
memory stays constant whatever the table's size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from flight_client import errors
from flight_client.protocol import ROW_NUMBER_COLUMN

LOGGER = logging.getLogger(__name__)

FORMATS = ("csv", "parquet", "tiledb")


def require_module(module: str, extra: str) -> Any:
    """Import an optional library, or say which extra installs it."""
    try:
        return __import__(module)
    except ImportError:
        raise errors.MissingDependency(
            f"this needs {module}: pip install 'omero-flight[{extra}]'"
        ) from None


def split_row_numbers(data: pa.Table | pa.RecordBatch) -> tuple[Any, pa.Table | pa.RecordBatch]:
    """(row-number array or None, the data without the row-number column)."""
    names = data.schema.names
    if ROW_NUMBER_COLUMN not in names:
        return None, data
    i = names.index(ROW_NUMBER_COLUMN)
    return data.column(i), data.drop_columns([ROW_NUMBER_COLUMN])


def to_pandas(data: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    """A DataFrame indexed by the table's own row numbers (when they were sent)."""
    rows, rest = split_row_numbers(data)
    df = rest.to_pandas()
    if rows is not None:
        df.index = pd.Index(rows.to_numpy(), dtype="int64")
    return df


def to_polars(table: pa.Table) -> Any:
    pl = require_module("polars", "polars")
    return pl.from_arrow(table)


def to_duckdb(table: pa.Table, connection: Any = None) -> Any:
    duckdb = require_module("duckdb", "duckdb")
    con = connection if connection is not None else duckdb.default_connection()
    return con.from_arrow(table)


def file_format(target_path: str | os.PathLike[str], format: str | None) -> str:
    """``format`` if given, else by suffix: ``.parquet``/``.pq``, ``.tiledb``, else ``csv``."""
    if format is None:
        suffix = Path(target_path).suffix.lower()
        return {".parquet": "parquet", ".pq": "parquet", ".tiledb": "tiledb"}.get(suffix, "csv")
    fmt = format.lower()
    if fmt not in FORMATS:
        raise errors.InvalidRequest(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
    return fmt


def check_target(target_path: str | os.PathLike[str]) -> Path:
    """Refuse to overwrite; create missing parent folders."""
    path = Path(target_path)
    if path.exists():
        raise FileExistsError(f"target file {str(path)!r} already exists; "
                              "remove it or choose another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


INDEX_COLUMN = "__index_level_0__"  # where pandas keeps an unnamed index in Parquet


def _indexed(batch: pa.RecordBatch, index_name: str, last: bool) -> pa.RecordBatch:
    """The batch with its row numbers renamed to ``index_name``, first or last."""
    rows, rest = split_row_numbers(batch)
    if rows is None:
        rows = pa.array(range(batch.num_rows), type=pa.int64())
    columns, names = list(rest.columns), list(rest.schema.names)
    if last:
        return pa.RecordBatch.from_arrays([*columns, rows], names=[*names, index_name])
    return pa.RecordBatch.from_arrays([rows, *columns], names=[index_name, *names])


def _csv_writable(schema: pa.Schema) -> bool:
    return not any(pa.types.is_nested(f.type) for f in schema)


class _CsvSink:
    """CSV as omero2pandas writes it: an unnamed first column with the row numbers.

    Arrow's CSV writer does the formatting; tables with array or mask columns,
    which it cannot write, go through pandas (one batch at a time either way).
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._path = path
        self._schema = schema
        self._arrow = _csv_writable(schema)
        self._writer: pacsv.CSVWriter | None = None
        self._fh = None if self._arrow else open(path, "x", newline="", encoding="utf-8")  # noqa: SIM115
        self._header = True

    def write(self, batch: pa.RecordBatch) -> None:
        if not self._arrow:
            to_pandas(batch).to_csv(self._fh, header=self._header, index=True)
            self._header = False
            return
        out = _indexed(batch, "", last=False)
        if self._writer is None:
            self._writer = pacsv.CSVWriter(self._path, out.schema)
        self._writer.write_batch(out)

    def close(self) -> None:
        if self._writer is None and self._fh is None:  # nothing arrived: still write a header
            self._arrow = True
            empty = pa.RecordBatch.from_pylist([], schema=self._schema)
            self.write(empty)
        if self._writer is not None:
            self._writer.close()
        if self._fh is not None:
            if self._header:
                self._fh.write(to_pandas(self._schema.empty_table()).to_csv(index=True))
            self._fh.close()


class _ParquetSink:
    """Parquet written batch by batch, with pandas metadata that makes the row numbers
    the index when read back with pandas."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        empty = _indexed(pa.RecordBatch.from_pylist([], schema=schema), INDEX_COLUMN, last=True)
        pandas_meta = pa.Schema.from_pandas(to_pandas(schema.empty_table()),
                                            preserve_index=True).metadata
        self._schema = empty.schema.with_metadata(pandas_meta)
        self._writer = pq.ParquetWriter(path, self._schema)

    def write(self, batch: pa.RecordBatch) -> None:
        out = _indexed(batch, INDEX_COLUMN, last=True)
        self._writer.write_batch(pa.RecordBatch.from_arrays(out.columns, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


def write_file(
    target_path: str | os.PathLike[str],
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    format: str = "csv",
) -> int:
    """Write batches to a new file as they arrive; remove the partial file on failure."""
    path = check_target(target_path)
    sink: _CsvSink | _ParquetSink = (_ParquetSink(path, schema) if format == "parquet"
                                     else _CsvSink(path, schema))
    rows = 0
    try:
        for batch in batches:
            sink.write(batch)
            rows += batch.num_rows
    except BaseException:
        try:
            sink.close()
        finally:
            path.unlink(missing_ok=True)
        raise
    sink.close()
    LOGGER.info("wrote %d rows to %s", rows, path)
    return rows
