"""Turn a stream of record batches into what the caller asked for.

In memory: pandas (index = the table's own row numbers), Arrow, Polars,
DuckDB. On disk: CSV (byte for byte the file omero2pandas writes) or Parquet (the
columns with their OMERO column types; row numbers as the pandas index),
written batch by batch so memory stays constant whatever the table's size.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flight_client import errors
from flight_protocol.messages import ROW_NUMBER_COLUMN

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


def to_duckdb(data: pa.Table | pa.RecordBatchReader, connection: Any = None) -> Any:
    """A DuckDB relation over a table (in memory) or a reader (scanned once, as it streams)."""
    duckdb = require_module("duckdb", "duckdb")
    con = connection if connection is not None else duckdb.default_connection()
    return con.from_arrow(data)


def lazy_polars(schema: Callable[[], pa.Schema],
                open_reader: Callable[[list[str] | None], pa.RecordBatchReader],
                name: str) -> Any:
    """A ``polars.LazyFrame`` that streams the table only when collected.

    ``schema()`` gives the Arrow schema (asked for when Polars plans);
    ``open_reader(columns)`` starts a streaming read of only the columns the
    query uses (``None``: all). Each batch is filtered by the query's predicate
    as it arrives, and the read stops once a ``head``/``limit`` is satisfied.
    """
    pl = require_module("polars", "polars")
    from polars.io.plugins import register_io_source

    def polars_schema() -> Any:
        return pl.from_arrow(schema().empty_table()).schema

    def source(with_columns: list[str] | None, predicate: Any, n_rows: int | None,
               batch_size: int | None) -> Iterator[Any]:
        reader = open_reader(with_columns)
        left = n_rows
        try:
            for batch in reader:
                df = pl.from_arrow(batch)
                if with_columns is not None:
                    df = df.select(with_columns)
                if predicate is not None:
                    df = df.filter(predicate)
                if left is not None:
                    df = df.head(left)
                    left -= df.height
                yield df
                if left is not None and left <= 0:
                    return
        finally:
            reader.close()

    return register_io_source(source, schema=polars_schema, explain_name=name)


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


def _csv_frame(batch: pa.RecordBatch) -> pd.DataFrame:
    """One batch as omero2pandas builds each chunk: array columns as Python lists."""
    df = to_pandas(batch)
    for field in batch.schema:
        if field.name != ROW_NUMBER_COLUMN and pa.types.is_nested(field.type):
            df[field.name] = pd.Series(batch.column(field.name).to_pylist(), index=df.index,
                                       dtype=object)
    return df


class _CsvSink:
    """CSV byte for byte as omero2pandas 0.4.2 writes it.

    omero2pandas builds a DataFrame per chunk, indexed by the row numbers, and
    appends it with ``DataFrame.to_csv(path, index=True, mode="a", header=<first>)``;
    this writes every batch with the same call and options, so header, unnamed
    index column, float and boolean formatting, NaN (empty) and quoting are the
    same, and memory holds one batch.
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._schema = schema
        self._fh = open(path, "x", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close
        self._header = True

    def write(self, batch: pa.RecordBatch) -> None:
        _csv_frame(batch).to_csv(self._fh, index=True, header=self._header)
        self._header = False

    def close(self) -> None:
        try:
            if self._header:  # no rows: omero2pandas writes no file; a header says more
                self.write(pa.RecordBatch.from_pylist([], schema=self._schema))
        finally:
            self._fh.close()


def _pandas_metadata(schema: pa.Schema, keep_rows: bool) -> dict[bytes, bytes]:
    """pandas metadata: a plain RangeIndex, or the ``__row__`` column as an unnamed index."""
    empty = to_pandas(schema.empty_table())
    if not keep_rows:
        return pa.Schema.from_pandas(empty, preserve_index=False).metadata
    empty.index = pd.Index([], dtype="int64", name=ROW_NUMBER_COLUMN)
    meta = json.loads(pa.Schema.from_pandas(empty, preserve_index=True).metadata[b"pandas"])
    for column in meta["columns"]:
        if column["field_name"] == ROW_NUMBER_COLUMN:
            column["name"] = None
    return {b"pandas": json.dumps(meta).encode()}


class _ParquetSink:
    """Parquet written batch by batch: the table's columns with their field metadata
    (``omero.column_type``), so a FileColumn or ImageColumn survives re-upload.

    A whole-table read is rows 0..n-1, which pandas gets back as its RangeIndex:
    nothing else is stored. A selection (``rows`` or ``query``) keeps its row
    numbers in a ``__row__`` column that pandas reads back as the index.
    """

    def __init__(self, path: Path, schema: pa.Schema, keep_rows: bool) -> None:
        columns = pa.schema([f for f in schema if f.name != ROW_NUMBER_COLUMN])
        fields = list(columns)
        if keep_rows:
            fields.append(pa.field(ROW_NUMBER_COLUMN, pa.int64(), nullable=False))
        self._keep_rows = keep_rows
        self._schema = pa.schema(fields).with_metadata(_pandas_metadata(columns, keep_rows))
        self._writer = pq.ParquetWriter(path, self._schema)

    def write(self, batch: pa.RecordBatch) -> None:
        rows, rest = split_row_numbers(batch)
        columns = list(rest.columns)
        if self._keep_rows:
            if rows is None:
                rows = pa.array(range(batch.num_rows), type=pa.int64())
            columns.append(rows.cast(pa.int64()))
        self._writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


def write_file(
    target_path: str | os.PathLike[str],
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    format: str = "csv",
    keep_row_numbers: bool = True,
) -> int:
    """Write batches to a new file as they arrive; remove the partial file on failure.

    ``keep_row_numbers=False`` (a whole-table read, rows 0..n-1) stores no row
    number column in Parquet; CSV always has them, as omero2pandas writes it.
    """
    path = check_target(target_path)
    sink: _CsvSink | _ParquetSink = (_ParquetSink(path, schema, keep_row_numbers)
                                     if format == "parquet" else _CsvSink(path, schema))
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
