"""The omero2pandas-named functions: each opens a connection in a ``with`` block and
delegates to :class:`~flight_client.connection.Connection` (as httpx's top-level
functions do with a ``Client``).

Connection arguments (``omero_connector``, ``server``, ``port``, ``username``,
``password``) are :class:`~flight_client.details.Login`; an ``omero_connector``
that is a :class:`Connection` is used and left open, anything else opens a
connection for the call only. The read functions share one set of selection
parameters, :class:`~flight_client.selection.Selection`, taken by keyword or, as
omero2pandas takes them, positionally in :data:`~flight_client.selection.READ_ORDER`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from typing import Any, Unpack

import pandas as pd
import pyarrow as pa

from flight_client import files, outputs
from flight_client.connection import use_connection
from flight_client.details import LOGIN_ORDER, Login
from flight_client.partitions import ReadPlan
from flight_client.selection import (
    TABLE_ORDER,
    ReadArguments,
    Selection,
    TableArguments,
    column_selection,
    selection_ticket,
    split_arguments,
    takes_read_arguments,
)
from flight_protocol.messages import ROW_NUMBER_COLUMN

__all__ = [
    "download_csv",
    "download_table",
    "get_table_columns",
    "get_table_size",
    "list_tables",
    "plan_read",
    "read_arrow",
    "read_csv",
    "read_duckdb",
    "read_polars",
    "read_table",
    "scan_polars",
    "upload_file",
    "upload_table",
]


def _reader(selection: Selection, login: Login, row_numbers: bool,
            progress: bool | None) -> pa.RecordBatchReader:
    """A streaming reader that keeps its connection open until it is exhausted or closed."""
    stack = ExitStack()
    try:
        conn = stack.enter_context(use_connection(**login))
        reader = conn.read(row_numbers=row_numbers, progress=progress, **selection).to_reader()
    except BaseException:
        stack.close()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        with stack:
            yield from reader

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


# -- reads -------------------------------------------------------------------------------------
@takes_read_arguments()
def read_table(*args: Any, progress: bool | None = None,
               **kwargs: Unpack[ReadArguments]) -> pd.DataFrame:
    """Read a table (or the selected columns and rows) into a DataFrame.

    The index holds the table's own row numbers. Selection parameters: see
    :class:`~flight_client.selection.Selection`; ``progress`` shows a bar.
    """
    selection, login = split_arguments(args, kwargs)
    with use_connection(**login) as conn:
        return conn.read(progress=progress, **selection).to_pandas()


@takes_read_arguments()
def read_arrow(*args: Any, stream: bool = False, row_numbers: bool = False,
               progress: bool | None = None,
               **kwargs: Unpack[ReadArguments]) -> pa.Table | pa.RecordBatchReader:
    """Read a table as a ``pyarrow.Table``, or a ``RecordBatchReader`` with ``stream=True``.

    ``row_numbers=True`` adds the table's row numbers as the first column,
    ``__row__``. A streaming reader keeps its connection open until it is
    exhausted or closed.
    """
    selection, login = split_arguments(args, kwargs)
    if stream:
        return _reader(selection, login, row_numbers, progress)
    with use_connection(**login) as conn:
        return conn.read(row_numbers=row_numbers, progress=progress, **selection).to_arrow()


@takes_read_arguments()
def read_polars(*args: Any, row_numbers: bool = False, progress: bool | None = None,
                **kwargs: Unpack[ReadArguments]) -> Any:
    """Read a table into a ``polars.DataFrame`` (needs the ``polars`` extra)."""
    outputs.require_module("polars", "polars")
    selection, login = split_arguments(args, kwargs)
    with use_connection(**login) as conn:
        return conn.read(row_numbers=row_numbers, progress=progress, **selection).to_polars()


@takes_read_arguments()
def read_duckdb(*args: Any, connection: Any = None, row_numbers: bool = False,
                stream: bool = False, progress: bool | None = None,
                **kwargs: Unpack[ReadArguments]) -> Any:
    """Read a table into a DuckDB relation (needs the ``duckdb`` extra).

    ``connection`` is the DuckDB connection to create it on (default: DuckDB's
    default connection). By default the table is read into memory (Arrow) and
    the relation can be queried any number of times. ``stream=True`` gives a
    relation over the streaming read instead: DuckDB consumes batches as they
    arrive, so memory stays bounded, but the relation can be scanned only once.
    """
    outputs.require_module("duckdb", "duckdb")
    selection, login = split_arguments(args, kwargs)
    if stream:
        return outputs.to_duckdb(_reader(selection, login, row_numbers, progress), connection)
    with use_connection(**login) as conn:
        return conn.read(row_numbers=row_numbers, progress=progress,
                         **selection).to_duckdb(connection)


@takes_read_arguments()
def scan_polars(*args: Any, row_numbers: bool = False, progress: bool | None = None,
                **kwargs: Unpack[ReadArguments]) -> Any:
    """A lazy ``polars.LazyFrame`` over a table (needs the ``polars`` extra).

    Only the schema is fetched now (a missing table, column or permission
    raises here, typed); rows are read at ``collect()`` (or ``sink_*``). Each
    collect streams the table again, asking the bridge only for the columns
    the query uses, filtering each batch as it arrives and stopping after
    ``head(n)``. Memory then holds one batch plus what the query keeps (e.g.
    an aggregate). An error during a collect reaches you as Polars wraps it
    (``polars.exceptions.ComputeError`` with the original message).
    """
    outputs.require_module("polars", "polars")
    selection, login = split_arguments(args, kwargs)
    selected = list(column_selection(selection.get("column_names", ())) or ())
    rows = selection.get("rows")
    if rows is not None and not isinstance(rows, range):
        rows = list(rows)  # read again at every collect
    base: Selection = {**selection, "column_names": selected, "rows": rows}
    ticket = selection_ticket(base, row_numbers)  # checked before anything is sent

    # The schema is asked for now (no rows are read), so that a missing table, column or
    # permission is a typed error here: Polars would wrap it in a ComputeError at collect.
    with use_connection(**login) as conn:
        schema = conn.read(row_numbers=row_numbers, file_id=ticket.file_id,
                           annotation_id=ticket.annotation_id, column_names=selected).schema

    def open_reader(columns: list[str] | None) -> pa.RecordBatchReader:
        wanted = selected if columns is None else [c for c in columns
                                                   if c != ROW_NUMBER_COLUMN] or selected
        return _reader({**base, "column_names": wanted}, login, row_numbers, progress)

    return outputs.lazy_polars(lambda: schema, open_reader, "omero-flight table")


@takes_read_arguments(before=("target_path",))
def download_table(target_path: str | os.PathLike[str], *args: Any, format: str | None = None,
                   progress: bool | None = None, **kwargs: Unpack[ReadArguments]) -> int:
    """Write a table to a new CSV, Parquet or TileDB target, batch by batch; returns the row count.

    CSV (the default) is byte for byte the file omero2pandas writes (header,
    row numbers as first, unnamed column, pandas' float, boolean and NaN
    formatting and quoting). Parquet is chosen by ``format="parquet"`` or a
    ``.parquet`` suffix; it keeps each column's OMERO type (``omero.column_type``
    field metadata), and pandas reads the row numbers back as the index (a
    selection stores them in a ``__row__`` column; a whole table stores none). ``format="tiledb"``
    or a ``.tiledb`` suffix writes a TileDB array in OMERO Plus's layout
    (``tiledb`` extra; rows renumbered from 0, see
    :func:`flight_client.remote.write_tiledb`). An existing target raises
    ``FileExistsError`` before anything is read.
    """
    selection, login = split_arguments(args, kwargs)
    with use_connection(**login) as conn:
        return conn.read(progress=progress, **selection).to_file(target_path, format)


#: The positional order of ``read_dask`` and ``read_ray`` (``columns`` for ``column_names``).
ENGINE_ORDER: tuple[str, ...] = ("file_id", "annotation_id", "column_names", "rows", "query",
                                 "variables", "chunk_size", *LOGIN_ORDER)


def plan_read(*args: Any, **kwargs: Any) -> ReadPlan:
    """A read's partitions for a lazy engine (Dask, Ray), on the caller's connection or a
    new sign-in; arguments as :func:`flight_client.dask.read_dask` takes them.

    A new sign-in is left open until its token expires: the engine's workers use the
    token after this returns. With ``omero_connector``, keep that connection open
    until the computation ends.
    """
    selection, login = split_arguments(args, kwargs, ENGINE_ORDER, {"columns": "column_names"})
    with use_connection(**login) as conn:
        planned = conn.read(row_numbers=True, **selection).plan
        if conn is not login.get("omero_connector"):
            conn.keep_sign_in()  # only once planned: a failed plan logs out
        return planned


# -- table-level calls -------------------------------------------------------------------------
@takes_read_arguments(TABLE_ORDER)
def get_table_columns(*args: Any, **kwargs: Unpack[TableArguments]) -> list[str]:
    """The table's column names, in order."""
    table, login = split_arguments(args, kwargs, TABLE_ORDER)
    with use_connection(**login) as conn:
        return conn.table_columns(table.get("file_id"), table.get("annotation_id"))


@takes_read_arguments(TABLE_ORDER)
def get_table_size(*args: Any, **kwargs: Unpack[TableArguments]) -> tuple[int, int]:
    """``(rows, columns)`` of a table."""
    table, login = split_arguments(args, kwargs, TABLE_ORDER)
    with use_connection(**login) as conn:
        return conn.table_size(table.get("file_id"), table.get("annotation_id"))


def list_tables(object_type: str | None = None, object_id: int | None = None,
                *args: Any, **login: Unpack[Login]) -> list[dict[str, Any]]:
    """Tables linked to an object (e.g. ``"Image", 1``), or with no object all you can read.

    Each entry has ``file_id``, ``annotation_id``, ``name``, ``owner``,
    ``group``, ``links`` and ``rows``.
    """
    _, checked = split_arguments(args, login, LOGIN_ORDER)
    with use_connection(**checked) as conn:
        return conn.list_tables(object_type, object_id)


# -- uploads -----------------------------------------------------------------------------------
def upload_table(
    source: pd.DataFrame | str | os.PathLike[str] | pa.Table | pa.RecordBatchReader,
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
    """Upload a DataFrame, Arrow table or RecordBatchReader, or a CSV/Parquet file, as a new
    table; returns its annotation id.

    The table is stored only if the whole source was sent: an exception in the
    source, Ctrl-C, a killed client or a lost connection leaves no table.

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
    with use_connection(omero_connector, server, port, username, password) as conn:
        return conn.upload(source, table_name, parent_id, parent_type, links, chunk_size,
                           description=description, local_path=local_path,
                           remote_path=remote_path, prefix=prefix, progress=progress)


# -- plain files -------------------------------------------------------------------------------
def read_csv(
    file_id: int | None = None,
    annotation_id: int | None = None,
    column_names: Iterable[str] | None = None,
    chunk_size: int = files.DEFAULT_CHUNK_BYTES,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    *,
    check_type: bool = True,
    progress: bool | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """Read a CSV or CSV.gz file attached to OMERO into a DataFrame.

    ``chunk_size`` is bytes per message. Other keyword arguments go to
    ``pandas.read_csv``; select columns with ``column_names``, not ``usecols``.
    Gzip is detected from the file's mimetype or name unless ``compression``
    is given. ``check_type=False`` reads any plain file (e.g. a ``.txt`` or
    ``.tsv`` with ``sep="\\t"``), not only CSV and CSV.gz.
    """
    with use_connection(omero_connector, server, port, username, password) as conn:
        return conn.read_csv(file_id, annotation_id, column_names, chunk_size,
                             check_type=check_type, progress=progress, **kwargs)


def download_csv(
    target_path: str | os.PathLike[str],
    file_id: int | None = None,
    annotation_id: int | None = None,
    chunk_size: int = files.DEFAULT_CHUNK_BYTES,
    check_type: bool = True,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    *,
    progress: bool | None = None,
) -> int:
    """Download a CSV/CSV.gz file attached to OMERO as it is; returns the bytes written.

    ``check_type=False`` allows any plain file (not OMERO.tables: use
    ``download_table`` for those). An existing target raises ``FileExistsError``.
    """
    with use_connection(omero_connector, server, port, username, password) as conn:
        return conn.download_csv(target_path, file_id, annotation_id, chunk_size, check_type,
                                 progress=progress)


def upload_file(
    source: str | os.PathLike[str],
    parent_id: int | None = None,
    parent_type: str = "Image",
    links: Iterable[tuple[str, int]] | None = None,
    file_name: str | None = None,
    mimetype: str | None = None,
    chunk_size: int = files.DEFAULT_CHUNK_BYTES,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    *,
    progress: bool | None = None,
) -> int:
    """Attach a plain file (a CSV, CSV.gz, ...) to OMERO objects; returns its FileAnnotation id.

    Links follow :func:`~flight_client.upload_table`. The name defaults to the
    file's, the mimetype is guessed by the bridge from the name. The file is sent
    ``chunk_size`` bytes at a time and stored only if all of it was sent.
    """
    with use_connection(omero_connector, server, port, username, password) as conn:
        return conn.upload_file(source, parent_id, parent_type, links, file_name, mimetype,
                                chunk_size, progress=progress)
