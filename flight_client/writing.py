"""Uploading a new table: a DataFrame, an Arrow table, or a CSV/Parquet file read in chunks.

Every source becomes an :class:`UploadSource`: an Arrow schema (with
``omero.string_size``, the longest UTF-8 value, declared on each string
column), a row count, and batches of at most ``chunk_size`` rows. A CSV file is
read twice in chunks, as omero2pandas does: once to find each column's type and
width over the whole file, once to send it, so files larger than memory work.

Types: integers, floats, booleans and strings map to the OMERO.tables column
types (integer columns named ``image``, ``roi``, ``well``, ... become id
columns, on the server); pandas categoricals travel as dictionaries. OMERO.tables
cannot store missing values in integer or boolean columns: a nullable pandas
integer column holding ``NA`` is refused by the server with an error naming it.
Missing strings are stored as empty strings, missing floats as NaN.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flight_client import errors
from flight_client.connection import Connection, use_connection
from flight_client.progress import bar
from flight_client.protocol import (
    META_STRING_SIZE,
    ProtocolError,
    UploadDescriptor,
    normalize_links,
)
from flight_client.transport import translate_errors

LOGGER = logging.getLogger(__name__)

#: omero2pandas' automatic chunk size: ~2 million cells per call, at most 50,000 rows.
CELLS_PER_CHUNK = 2_000_000
MAX_CHUNK_ROWS = 50_000


def optimal_chunk_size(column_count: int) -> int:
    """Rows per batch so that a batch holds about two million cells."""
    return max(min(CELLS_PER_CHUNK // max(column_count, 1), MAX_CHUNK_ROWS), 1)


def upload_links(links: Any, parent_id: Any, parent_type: str) -> tuple[tuple[str, int], ...]:
    """omero2pandas' link rules: a bare ``("Image", 1)`` pair is accepted, parent added."""
    if links is None:
        items: list[Any] = []
    elif (isinstance(links, Sequence) and len(links) == 2 and isinstance(links[0], str)
          and not isinstance(links[1], str | Sequence)):
        items = [tuple(links)]
    elif isinstance(links, str | bytes) or not isinstance(links, Iterable):
        raise errors.InvalidRequest(
            f"links should be a list of (type, id) pairs, not {type(links).__name__}"
        )
    else:
        items = [tuple(link) if isinstance(link, list) else link for link in links]
    if parent_id is not None:
        items.append((parent_type, parent_id))
    if not items:
        raise errors.InvalidRequest(
            "no OMERO objects to link the table to: give parent_id (and parent_type) or links"
        )
    try:
        return normalize_links(items)
    except ProtocolError as exc:
        raise errors.InvalidRequest(str(exc)) from None


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
    total_rows: int
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


# Kinds ordered from narrowest to widest; a column takes the widest kind seen in any chunk.
_KIND_ORDER = {"b": 0, "i": 1, "u": 1, "f": 2}
_KIND_DTYPE = {0: "bool", 1: "int64", 2: "float64", 3: "str"}


def _kind_rank(dtype: Any) -> int:
    return _KIND_ORDER.get(getattr(dtype, "kind", "O"), 3)


@dataclass
class CsvPlan:
    """What the first pass over a CSV learned: dtypes, string widths, rows, chunk size."""

    dtypes: dict[str, str]
    string_sizes: dict[str, int]
    rows: int
    chunk_size: int


def scan_csv(path: Path, chunk_size: int | None = None, **read_kwargs: Any) -> CsvPlan:
    """First pass: the type of each column over the whole file, string widths, rows."""
    columns = list(pd.read_csv(path, nrows=0, **read_kwargs).columns)
    size = chunk_size or optimal_chunk_size(len(columns))
    ranks = dict.fromkeys(columns, 0)
    seen_values = dict.fromkeys(columns, False)
    rows = 0
    for chunk in pd.read_csv(path, chunksize=size, **read_kwargs):
        rows += len(chunk)
        for name in columns:
            column = chunk[name]
            if column.notna().any():
                seen_values[name] = True
                ranks[name] = max(ranks[name], _kind_rank(column.dtype))
            elif column.isna().any():
                # Missing values: an integer or boolean column cannot hold them.
                ranks[name] = max(ranks[name], 2)
    dtypes = {}
    for name in columns:
        rank = ranks[name] if seen_values[name] else 2  # all missing: float, as pandas reads it
        dtypes[name] = _KIND_DTYPE[rank]
    string_sizes = dict.fromkeys((n for n, t in dtypes.items() if t == "str"), 1)
    if string_sizes:
        for chunk in pd.read_csv(path, chunksize=size, usecols=list(string_sizes),
                                 dtype=dict.fromkeys(string_sizes, str), **read_kwargs):
            for name in string_sizes:
                widths = chunk[name].dropna().str.encode("utf-8").str.len()
                if len(widths):
                    string_sizes[name] = max(string_sizes[name], int(widths.max()))
    LOGGER.info("scanned %s: %d rows, %d columns", path, rows, len(columns))
    return CsvPlan(dtypes, string_sizes, rows, size)


def csv_source(path: str | os.PathLike[str], chunk_size: int | None = None) -> UploadSource:
    """A CSV file, read ``chunk_size`` rows at a time (two passes, never whole)."""
    path = Path(path)
    if not path.is_file():
        raise errors.InvalidRequest(f"could not find file {str(path)!r}")
    plan = scan_csv(path, chunk_size)
    columns = list(plan.dtypes)
    schema = pa.schema([
        (name, {"bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64(),
                "str": pa.string()}[dtype])
        for name, dtype in plan.dtypes.items()
    ])
    schema = with_string_sizes(schema, plan.string_sizes)

    def batches() -> Iterator[pa.RecordBatch]:
        for chunk in pd.read_csv(path, chunksize=plan.chunk_size, dtype=plan.dtypes):
            yield pa.RecordBatch.from_pandas(chunk[columns], schema=schema, preserve_index=False)

    return UploadSource(schema, plan.rows, batches())


def parquet_source(path: str | os.PathLike[str], chunk_size: int | None = None) -> UploadSource:
    """A Parquet file, read ``chunk_size`` rows at a time."""
    path = Path(path)
    if not path.is_file():
        raise errors.InvalidRequest(f"could not find file {str(path)!r}")
    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow.remove_metadata()
    pandas_index = [n for n in schema.names if n.startswith("__index_level_")]
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
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size <= 0):
        raise errors.InvalidRequest(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if isinstance(source, pd.DataFrame):
        return dataframe_source(source, chunk_size)
    if isinstance(source, pa.Table):
        return _arrow_source(source, chunk_size)
    if isinstance(source, str | os.PathLike):
        suffix = Path(source).suffix.lower()
        if suffix in (".parquet", ".pq"):
            return parquet_source(source, chunk_size)
        return csv_source(source, chunk_size)
    raise errors.InvalidRequest(
        "source must be a pandas DataFrame, a pyarrow Table or the path of a CSV or "
        f"Parquet file, got {type(source).__name__}"
    )


# -- the upload --------------------------------------------------------------------------------
def send_table(conn: Any, descriptor: UploadDescriptor, source: UploadSource,
               progress: bool | None = None) -> dict[str, Any]:
    """Stream a source to the bridge with ``do_put``; returns the bridge's JSON result."""
    transport = conn.transport
    writer, reader = transport.put(descriptor.encode(), source.schema)
    progress_bar = bar("Uploading table", source.total_rows, "rows", progress)
    try:
        with translate_errors(transport.location):
            for batch in source.batches:
                writer.write_batch(batch)
                progress_bar.update(batch.num_rows)
            writer.done_writing()
            message = reader.read()
            writer.close()
    except BaseException:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the first error is the one to report
            LOGGER.debug("error closing an aborted upload", exc_info=True)
        raise
    finally:
        progress_bar.close()
    if message is None:
        raise errors.ServerError("the bridge did not confirm the upload")
    try:
        result = json.loads(message.to_pybytes())
    except ValueError:
        raise errors.ServerError("the bridge's upload confirmation is not JSON") from None
    LOGGER.info("uploaded %s rows as annotation %s (file %s)", result.get("rows"),
                result.get("annotation_id"), result.get("file_id"))
    return result


def upload_table(
    source: pd.DataFrame | str | os.PathLike[str] | pa.Table,
    table_name: str,
    parent_id: int | None = None,
    parent_type: str = "Image",
    links: Iterable[tuple[str, int]] | None = None,
    chunk_size: int | None = None,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    local_path: str | os.PathLike[str] | None = None,
    remote_path: str | os.PathLike[str] | None = None,
    prefix: str = "",
    *,
    description: str = "",
    progress: bool | None = None,
) -> int:
    """Upload a DataFrame, Arrow table, or CSV/Parquet file as a new table; returns its
    annotation id.

    The table is linked to ``parent_type``/``parent_id`` and every ``(type, id)``
    in ``links``. ``chunk_size`` is rows per batch (default: about two million
    cells, at most 50,000 rows); a CSV path is read that many rows at a time.

    With ``local_path`` (``tiledb`` extra, OMERO Plus only) the table is not
    sent to the bridge: it is written to a TileDB array at ``local_path`` and
    registered in place with OMERO Plus, which sees it at ``remote_path``
    (default: the local path; a Windows path needs one); ``prefix`` is the
    OMERO.web API prefix. See :mod:`flight_client.remote`: the OMERO.web
    address comes from ``OMERO_FLIGHT_WEB_URL`` (HTTPS; a private CA through
    ``SSL_CERT_FILE``), the OMERO session key from ``omero_connector`` (a
    connection logged in as ``__session__``, or an omero-py client) or from
    ``username="__session__"``, ``password=<session key>``.
    """
    if not isinstance(table_name, str) or not table_name.strip():
        raise errors.InvalidRequest(f"invalid table name: {table_name!r}")
    normalized = upload_links(links, parent_id, parent_type)
    if local_path is not None or remote_path is not None:
        if local_path is None:
            raise errors.InvalidRequest(
                "remote_path needs local_path: where this machine writes the TileDB array")
        from flight_client.remote import create_remote_table

        if description:
            LOGGER.warning("OMERO Plus registration takes no description; it is not stored")
        own = omero_connector is None  # only used if the bridge must register for us
        connector = Connection(server, port, username, password) if own else omero_connector
        try:
            return create_remote_table(source, table_name, local_path, remote_path, normalized,
                                       chunk_size, connector, prefix, progress=progress)
        finally:
            if own:
                connector.shutdown()
    if all(kind == "Roi" for kind, _ in normalized):
        LOGGER.warning("the table is only linked to ROIs; OMERO.web may not show it")
    try:
        descriptor = UploadDescriptor(table_name, normalized, description)
    except ProtocolError as exc:
        raise errors.InvalidRequest(str(exc)) from None
    data = upload_source(source, chunk_size)
    with use_connection(omero_connector, server, port, username, password) as conn:
        result = send_table(conn, descriptor, data, progress)
    return int(result["annotation_id"])
