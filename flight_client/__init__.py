"""omero-flight client: the omero2pandas API over Apache Arrow Flight.

``import flight_client as omero2pandas`` keeps an omero2pandas script working
once it points at a bridge (``server=``, or ``OMERO_FLIGHT_URL``)::

    import flight_client as omero2pandas
    df = omero2pandas.read_table(file_id=402, server="grpc://bridge:8815",
                                 username="me", password="secret")

Every function is a thin wrapper over :class:`Connection`, which does the work
(``conn.read(file_id=1).to_pandas()``; a read is a :class:`ReadResult`).

Beyond omero2pandas: :func:`read_arrow` (optionally streaming),
:func:`read_polars`, the lazy :func:`scan_polars`, :func:`read_duckdb` (optionally
streaming), Parquet downloads, :func:`list_tables` and plain files with
:func:`upload_file`. TileDB tables for OMERO Plus (``tiledb`` extra):
:func:`create_tiledb` and :func:`register_table`. Errors are in :mod:`flight_client.errors`.
"""

from flight_client.api import (
    download_csv,
    download_table,
    get_table_columns,
    get_table_size,
    list_tables,
    read_arrow,
    read_csv,
    read_duckdb,
    read_polars,
    read_table,
    scan_polars,
    upload_file,
    upload_table,
)
from flight_client.connection import Connection, OMEROConnection, connect_to_omero
from flight_client.errors import (
    AlreadyExists,
    AuthenticationFailed,
    ConnectionClosed,
    ConnectionFailed,
    InvalidRequest,
    MissingConnectionDetails,
    MissingDependency,
    NotFound,
    NotSupported,
    OmeroFlightError,
    PermissionDenied,
    ServerBusy,
    ServerError,
)
from flight_client.remote import create_tiledb, register_table
from flight_client.results import ReadResult

__all__ = [
    "AlreadyExists",
    "AuthenticationFailed",
    "Connection",
    "ConnectionClosed",
    "ConnectionFailed",
    "InvalidRequest",
    "MissingConnectionDetails",
    "MissingDependency",
    "NotFound",
    "NotSupported",
    "OMEROConnection",
    "OmeroFlightError",
    "PermissionDenied",
    "ReadResult",
    "ServerBusy",
    "ServerError",
    "connect_to_omero",
    "create_tiledb",
    "download_csv",
    "download_table",
    "get_table_columns",
    "get_table_size",
    "list_tables",
    "read_arrow",
    "read_csv",
    "read_duckdb",
    "read_polars",
    "read_table",
    "register_table",
    "scan_polars",
    "upload_file",
    "upload_table",
]
