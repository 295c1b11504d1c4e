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
import pyarrow.parquet as pq

from flight_client import errors
from flight_client.protocol import ROW_NUMBER_COLUMN

LOGGER = logging.getLogger(__name__)

FORMATS = ("csv", "parquet")


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


def strip_row_numbers(table: pa.Table) -> pa.Table:
    return split_row_numbers(table)[1]


def to_polars(table: pa.Table) -> Any:
    pl = require_module("polars", "polars")
    return pl.from_arrow(table)


def to_duckdb(table: pa.Table, connection: Any = None) -> Any:
    duckdb = require_module("duckdb", "duckdb")
    con = connection if connection is not None else duckdb.default_connection()
    return con.from_arrow(table)


def file_format(target_path: str | os.PathLike[str], format: str | None) -> str:
    """``format`` if given, else ``parquet`` for a ``.parquet``/``.pq`` suffix, else ``csv``."""
    if format is None:
        suffix = Path(target_path).suffix.lower()
        return "parquet" if suffix in (".parquet", ".pq") else "csv"
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


class _CsvSink:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._fh = open(path, "x", newline="", encoding="utf-8")  # noqa: SIM115
        self._schema = schema
        self._header = True

    def write(self, batch: pa.RecordBatch) -> None:
        to_pandas(batch).to_csv(self._fh, header=self._header, index=True)
        self._header = False

    def close(self) -> None:
        if self._header:  # nothing written yet: still give the file its header
            self.write(pa.RecordBatch.from_pylist([], schema=self._schema))
        self._fh.close()


class _ParquetSink:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        # Derive the Parquet schema once from an empty frame so that pandas
        # metadata marks the row numbers as the index when read back.
        empty = to_pandas(schema.empty_table())
        self._schema = pa.Schema.from_pandas(empty, preserve_index=True)
        self._writer = pq.ParquetWriter(path, self._schema)

    def write(self, batch: pa.RecordBatch) -> None:
        frame = to_pandas(batch)
        self._writer.write_table(pa.Table.from_pandas(frame, schema=self._schema,
                                                      preserve_index=True))

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
