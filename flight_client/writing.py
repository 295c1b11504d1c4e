"""What an upload sends, and sending it: a DataFrame, an Arrow table, or a CSV/Parquet file
read in chunks.

Every source becomes an :class:`UploadSource`: an Arrow schema (with
``omero.string_size``, the longest UTF-8 value, declared on each string
column), a row count, and batches of at most ``chunk_size`` rows. A CSV file is
read twice, block by block: once to find each column's type and width over the
whole file (one rule per cell, see ``_cell_kinds``, so the types never depend on
``chunk_size``), once to send it, so files larger than memory work. A
``pyarrow.RecordBatchReader`` is sent as it is read; the bridge measures its
string widths.

Types: integers, floats, booleans and strings map to the OMERO.tables column
types (integer columns named ``image``, ``roi``, ``well``, ... become id
columns, on the server); pandas categoricals travel as dictionaries. OMERO.tables
cannot store missing values in integer or boolean columns: a nullable pandas
integer column holding ``NA`` is refused by the server with an error naming it.
Missing strings are stored as empty strings, missing floats as NaN.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from flight_client import errors
from flight_client.progress import bar
from flight_client.selection import check_chunk_size
from flight_client.transport import Transport
from flight_protocol.messages import META_STRING_SIZE, UploadDescriptor

LOGGER = logging.getLogger(__name__)

#: omero2pandas' automatic chunk size: ~2 million cells per call, at most 50,000 rows.
CELLS_PER_CHUNK = 2_000_000
MAX_CHUNK_ROWS = 50_000


def optimal_chunk_size(column_count: int) -> int:
    """Rows per batch so that a batch holds about two million cells."""
    return max(min(CELLS_PER_CHUNK // max(column_count, 1), MAX_CHUNK_ROWS), 1)


# -- sources -----------------------------------------------------------------------------------
def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _string_width(column: pa.Array | pa.ChunkedArray) -> int:
    """Longest UTF-8 value in bytes (at least 1, as OMERO needs a positive width)."""
    if pa.types.is_dictionary(column.type):
        if isinstance(column, pa.ChunkedArray):
            return max([_string_width(c) for c in column.chunks] or [1])
        column = column.dictionary
    if len(column) == 0:
        return 1
    longest = pc.max(pc.binary_length(column)).as_py()
    return max(int(longest or 0), 1)


def _string_fields(schema: pa.Schema) -> list[str]:
    out = []
    for f in schema:
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if _is_string(t):
            out.append(f.name)
    return out


def with_string_sizes(schema: pa.Schema, sizes: dict[str, int]) -> pa.Schema:
    """Declare each string column's byte width in its field metadata."""
    fields = []
    for f in schema:
        if f.name in sizes:
            meta = dict(f.metadata or {})
            meta[META_STRING_SIZE] = str(sizes[f.name]).encode()
            f = f.with_metadata(meta)
        fields.append(f)
    return pa.schema(fields, metadata=schema.metadata)


@dataclass
class UploadSource:
    """What an upload sends: schema (with string widths), row count, batches."""

    schema: pa.Schema
    total_rows: int | None  # None: unknown until the end (a RecordBatchReader)
    batches: Iterator[pa.RecordBatch]


def _arrow_source(table: pa.Table, chunk_size: int | None) -> UploadSource:
    table = table.replace_schema_metadata(None)
    sizes = {name: _string_width(table.column(name)) for name in _string_fields(table.schema)}
    schema = with_string_sizes(table.schema, sizes)
    size = chunk_size or optimal_chunk_size(table.num_columns)
    table = pa.Table.from_batches(table.to_batches(), schema=schema) if sizes else table
    return UploadSource(schema, table.num_rows, iter(table.to_batches(max_chunksize=size)))


def dataframe_source(df: pd.DataFrame, chunk_size: int | None = None) -> UploadSource:
    """A DataFrame (its index is not uploaded, as in omero2pandas)."""
    bad = [c for c in df.columns if not isinstance(c, str)]
    if bad:
        raise errors.InvalidRequest(f"column names must be strings, got {bad[:5]!r}")
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise errors.InvalidRequest(f"cannot convert the DataFrame for upload: {exc}") from None
    return _arrow_source(table, chunk_size)


def rechunk(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """The same rows as batches of exactly ``size`` rows (the last one may be shorter)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        while batch.num_rows:
            part = batch.slice(0, size - held)
            batch = batch.slice(part.num_rows)
            pending.append(part)
            held += part.num_rows
            if held == size:
                yield pa.concat_batches(pending)
                pending, held = [], 0
    if held:
        yield pa.concat_batches(pending)


# -- CSV: one typing rule, whatever the chunks ------------------------------------------------
# Each cell has a kind, decided from its text alone (surrounding blanks ignored):
#   missing: empty, or one of pyarrow's null markers ("NA", "NaN", "null", ...);
#   int:     -?digits that fit int64 (longer ones are floats);
#   float:   a decimal or exponent number, inf, infinity or nan (any case);
#   bool:    True/TRUE/true/False/FALSE/false;
#   string:  anything else.
# A column's type follows from the set of kinds in the whole file (so no chunking can change
# it): any string, or bools mixed with anything else -> string (text kept as written); only
# bools -> bool; any float, or ints with missing values, or nothing but missing -> float64
# (missing as NaN); only ints -> int64. OMERO cannot store missing ints or bools.
_INT_RE = r"^-?[0-9]+$"
_FLOAT_RE = r"^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))$"
_BOOL_WORDS = pa.array(["True", "TRUE", "true", "False", "FALSE", "false"])
CSV_BLOCK_BYTES = 4 << 20  # the first try; a file with longer rows is read with larger blocks
MAX_CSV_BLOCK_BYTES = 1 << 30


def _cell_kinds(column: pa.Array) -> set[str]:
    """The kinds of the cells of one CSV column read as text (see the rule above)."""
    kinds: set[str] = set()
    text = pc.utf8_trim_whitespace(column)
    present = text.filter(pc.fill_null(pc.not_equal(text, ""), False))
    if len(present) < len(column):
        kinds.add("missing")
    is_int = pc.match_substring_regex(present, _INT_RE)
    ints = present.filter(is_int)
    if len(ints):
        try:
            pc.cast(ints, pa.int64())
            kinds.add("int")
        except pa.ArrowInvalid:  # beyond int64
            kinds.add("float")
    rest = present.filter(pc.invert(is_int))
    if len(rest):
        is_float = pc.match_substring_regex(rest, _FLOAT_RE)
        if pc.any(is_float).as_py():
            kinds.add("float")
        rest = rest.filter(pc.invert(is_float))
        if len(rest):
            is_bool = pc.is_in(rest, value_set=_BOOL_WORDS)
            if pc.any(is_bool).as_py():
                kinds.add("bool")
            if not pc.all(is_bool).as_py():
                kinds.add("string")
    return kinds


def _csv_type(kinds: set[str]) -> pa.DataType:
    if "string" in kinds or ("bool" in kinds and kinds != {"bool"}):
        return pa.string()
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"int"}:
        return pa.int64()
    return pa.float64()


def _csv_column(column: pa.Array, to: pa.DataType) -> pa.Array:
    """One CSV column read as text, converted to the column's type."""
    if pa.types.is_string(to):
        return column
    text = pc.utf8_trim_whitespace(column)
    if pa.types.is_floating(to):
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
        return pc.fill_null(pc.cast(text, to), float("nan"))
    return pc.cast(text, to)


class _RowTooLong(Exception):
    """A CSV row (or the header) does not fit in one block: read again with larger blocks."""


def _csv_error(path: Path, exc: pa.ArrowInvalid) -> Exception:
    if "straddl" in str(exc):
        return _RowTooLong()
    return errors.InvalidRequest(f"cannot read {str(path)!r} as CSV: {exc}")


def _csv_names(path: Path, block_bytes: int) -> list[str]:
    try:
        options = pa_csv.ReadOptions(block_size=block_bytes)
        with pa_csv.open_csv(path, read_options=options) as r:
            names = r.schema.names
    except pa.ArrowInvalid as exc:
        raise _csv_error(path, exc) from None
    return [name or f"Unnamed: {i}" for i, name in enumerate(names)]  # as pandas names them


def _csv_text_batches(path: Path, count: int, block_bytes: int) -> Iterator[pa.RecordBatch]:
    """The file's rows, every column as text (null when missing), block by block."""
    options = pa_csv.ConvertOptions(column_types={f"c{i}": pa.string() for i in range(count)},
                                    strings_can_be_null=True)
    read = pa_csv.ReadOptions(block_size=block_bytes, skip_rows=1,
                              column_names=[f"c{i}" for i in range(count)])
    try:
        with pa_csv.open_csv(path, read_options=read, convert_options=options) as reader:
            yield from reader
    except pa.ArrowInvalid as exc:
        raise _csv_error(path, exc) from None


@dataclass
class CsvPlan:
    """What the first pass over a CSV learned: column types, string widths, rows, chunk size,
    and the block size that holds its longest row."""

    schema: pa.Schema
    string_sizes: dict[str, int]
    rows: int
    chunk_size: int
    block_bytes: int


def scan_csv(path: Path, chunk_size: int | None = None) -> CsvPlan:
    """First pass: the type of each column over the whole file, string widths, rows."""
    block = CSV_BLOCK_BYTES
    while True:
        try:
            return _scan_csv(path, chunk_size, block)
        except _RowTooLong:
            if block >= MAX_CSV_BLOCK_BYTES:
                raise errors.InvalidRequest(
                    f"{str(path)!r} has a row longer than {MAX_CSV_BLOCK_BYTES} bytes, or an "
                    "unbalanced quote") from None
            block *= 4


def _scan_csv(path: Path, chunk_size: int | None, block: int) -> CsvPlan:
    names = _csv_names(path, block)
    kinds: list[set[str]] = [set() for _ in names]
    widths = [1] * len(names)
    rows = 0
    for batch in _csv_text_batches(path, len(names), block):
        rows += batch.num_rows
        for i, column in enumerate(batch.columns):
            if "string" not in kinds[i]:
                kinds[i] |= _cell_kinds(column)
            if batch.num_rows:
                widths[i] = max(widths[i], int(pc.max(pc.binary_length(column)).as_py() or 0))
    schema = pa.schema([(name, _csv_type(k)) for name, k in zip(names, kinds, strict=True)])
    string_sizes = {f.name: widths[i] for i, f in enumerate(schema) if _is_string(f.type)}
    LOGGER.info("scanned %s: %d rows, %d columns", path, rows, len(names))
    return CsvPlan(schema, string_sizes, rows, chunk_size or optimal_chunk_size(len(names)),
                   block)


def csv_source(path: str | os.PathLike[str], chunk_size: int | None = None) -> UploadSource:
    """A CSV file, read block by block in two passes (never whole); see the typing rule."""
    path = Path(path)
    if not path.is_file():
        raise errors.InvalidRequest(f"could not find file {str(path)!r}")
    plan = scan_csv(path, chunk_size)
    schema = with_string_sizes(plan.schema, plan.string_sizes)

    def typed() -> Iterator[pa.RecordBatch]:
        for batch in _csv_text_batches(path, len(schema), plan.block_bytes):
            columns = [_csv_column(c, f.type) for c, f in zip(batch.columns, schema, strict=True)]
            yield pa.RecordBatch.from_arrays(columns, schema=schema)

    return UploadSource(schema, plan.rows, rechunk(typed(), plan.chunk_size))


def reader_source(reader: pa.RecordBatchReader, chunk_size: int | None = None) -> UploadSource:
    """A stream of batches, each sent as soon as it is read (string widths are measured by
    the bridge). With ``chunk_size``, rows are regrouped into batches of that size;
    without, only batches larger than the automatic size are split."""
    schema = reader.schema.remove_metadata()

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)

    if chunk_size is not None:
        return UploadSource(schema, None, rechunk(batches(), chunk_size))
    size = optimal_chunk_size(len(schema))

    def split() -> Iterator[pa.RecordBatch]:
        for batch in batches():
            for start in range(0, max(batch.num_rows, 1), size):
                yield batch.slice(start, size)

    return UploadSource(schema, None, split())


def parquet_source(path: str | os.PathLike[str], chunk_size: int | None = None) -> UploadSource:
    """A Parquet file, read ``chunk_size`` rows at a time."""
    path = Path(path)
    if not path.is_file():
        raise errors.InvalidRequest(f"could not find file {str(path)!r}")
    pf = pq.ParquetFile(path)
    pandas_index = [n for n in pf.schema_arrow.names if n.startswith("__index_level_")]
    pandas_index += [n for n in (pf.schema_arrow.pandas_metadata or {}).get("index_columns", [])
                     if isinstance(n, str)]  # e.g. download_table's __row__
    schema = pf.schema_arrow.remove_metadata()
    keep = [n for n in schema.names if n not in pandas_index]
    schema = pa.schema([schema.field(n) for n in keep])
    size = chunk_size or optimal_chunk_size(len(keep))
    sizes = dict.fromkeys(_string_fields(schema), 1)
    if sizes:
        for batch in pf.iter_batches(batch_size=size, columns=list(sizes)):
            for name in sizes:
                sizes[name] = max(sizes[name], _string_width(batch.column(name)))
    schema = with_string_sizes(schema, sizes)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in pf.iter_batches(batch_size=size, columns=keep):
            yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)

    return UploadSource(schema, pf.metadata.num_rows, batches())


def upload_source(source: Any, chunk_size: int | None = None) -> UploadSource:
    """Pick the reader for a DataFrame, Arrow table, CSV path or Parquet path."""
    check_chunk_size(chunk_size)
    if isinstance(source, pd.DataFrame):
        return dataframe_source(source, chunk_size)
    if isinstance(source, pa.Table):
        return _arrow_source(source, chunk_size)
    if isinstance(source, pa.RecordBatchReader):
        return reader_source(source, chunk_size)
    if isinstance(source, str | os.PathLike):
        suffix = Path(source).suffix.lower()
        if suffix in (".parquet", ".pq"):
            return parquet_source(source, chunk_size)
        return csv_source(source, chunk_size)
    raise errors.InvalidRequest(
        "source must be a pandas DataFrame, a pyarrow Table or RecordBatchReader, or the path "
        "of a CSV or "
        f"Parquet file, got {type(source).__name__}"
    )


# -- the upload --------------------------------------------------------------------------------
def send_table(transport: Transport, descriptor: UploadDescriptor, source: UploadSource,
               progress: bool | None = None) -> dict[str, Any]:
    """Stream a source to the bridge with ``do_put``; returns the bridge's JSON result.

    The bridge stores the table only when the whole source was sent: see
    :meth:`flight_client.transport.Transport.upload`.
    """
    if not descriptor.explicit_commit:
        descriptor = dataclasses.replace(descriptor, explicit_commit=True)
    progress_bar = bar("Uploading table", source.total_rows, "rows", progress)
    try:
        message = transport.upload(descriptor.encode(), source.schema, source.batches,
                                   lambda batch: progress_bar.update(batch.num_rows))
    finally:
        progress_bar.close()
    if message is None:
        raise errors.ServerError("the bridge did not confirm the upload")
    try:
        result = json.loads(message)
    except ValueError:
        raise errors.ServerError("the bridge's upload confirmation is not JSON") from None
    LOGGER.info("uploaded %s rows as annotation %s (file %s)", result.get("rows"),
                result.get("annotation_id"), result.get("file_id"))
    return result
