"""A read's plan as picklable partitions, one per endpoint, for distributed engines.

:func:`plan` asks the bridge for a read's FlightInfo and returns a
:class:`ReadPlan`: the schema, the row count and one :class:`Partition` per
endpoint (its ticket, every replica that can serve it, its row range). A
partition goes to another process (a Dask or Ray worker) with an
:class:`Access` (the bridge's URL and the bearer token, never the password) and
is read there by :func:`read_partition`, which tries its locations in order and
fails over to the next replica (:func:`flight_client.reading.failover_batches`).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import pyarrow as pa
import pyarrow.flight as flight

from flight_client import errors
from flight_client.connection import Connection
from flight_client.reading import endpoint_locations, failover_batches
from flight_client.transport import Transport
from flight_protocol.messages import ROW_NUMBER_COLUMN, RowRange, TableTicket, decode


@dataclass(frozen=True)
class Access:
    """How a worker reaches the bridge: its URL and a bearer token any replica accepts."""

    url: str
    token: tuple[bytes, bytes]
    tls_root_certs: bytes | None = None
    timeout: float | None = None

    def __repr__(self) -> str:  # the token is a credential: never printed
        return f"Access(url={self.url!r})"

    def transport(self) -> Transport:
        transport = Transport(self.url, tls_root_certs=self.tls_root_certs, timeout=self.timeout)
        transport.adopt_token(self.token)
        return transport


@dataclass(frozen=True)
class Partition:
    """One endpoint of a read: its ticket, the replicas serving it (in order), its rows."""

    index: int
    locations: tuple[str, ...]
    ticket: bytes
    start: int | None
    stop: int | None
    schema: pa.Schema

    @property
    def rows(self) -> int | None:
        """Rows in this partition, None if unknown (a query)."""
        return None if self.start is None or self.stop is None else self.stop - self.start

    def with_columns(self, columns: tuple[str, ...] | None) -> Partition:
        """The same rows, only ``columns`` (table order; None: all)."""
        request = decode(self.ticket, "ticket")
        assert isinstance(request, TableTicket)
        request = replace(request, columns=columns)
        keep = set(columns) if columns is not None else None
        fields = [f for f in self.schema
                  if keep is None or f.name in keep or f.name == ROW_NUMBER_COLUMN]
        return replace(self, ticket=request.encode(), schema=pa.schema(fields))


@dataclass(frozen=True)
class ReadPlan:
    schema: pa.Schema
    total_rows: int
    partitions: tuple[Partition, ...]
    access: Access


def _row_range(endpoint: flight.FlightEndpoint, ticket: TableTicket) -> tuple[int | None,
                                                                               int | None]:
    if isinstance(ticket.rows, RowRange) and ticket.rows.stop is not None:
        return ticket.rows.start, ticket.rows.stop
    if endpoint.app_metadata:
        try:
            meta = json.loads(endpoint.app_metadata)
            return int(meta["start"]), int(meta["stop"])
        except (ValueError, KeyError, TypeError):
            pass
    return None, None


def plan(conn: Connection | Transport, ticket: TableTicket,
         tls_root_certs: bytes | None = None) -> ReadPlan:
    """The partitions of a read (rows selected by a query form one partition)."""
    if isinstance(conn, Connection):
        transport, tls_root_certs = conn.transport, conn.details.tls_root_certs
    else:
        transport = conn
    if transport.token is None:
        raise errors.InvalidRequest("a partitioned read needs a signed-in connection (a token)")
    info = transport.flight_info(ticket.encode())
    parts = []
    for i, endpoint in enumerate(info.endpoints):
        request = decode(endpoint.ticket.ticket, "ticket")
        if not isinstance(request, TableTicket):
            raise errors.ServerError("the bridge answered a table read with a non-table ticket")
        start, stop = _row_range(endpoint, request)
        locations = tuple(transport.resolve(loc) for loc in endpoint_locations(endpoint))
        parts.append(Partition(i, locations, endpoint.ticket.ticket, start, stop, info.schema))
    access = Access(transport.location, transport.token, tls_root_certs, transport.timeout)
    return ReadPlan(info.schema, info.total_records, tuple(parts), access)


def plan_with(ticket: TableTicket, omero_connector: Connection | None = None,
              server: str | None = None, port: int | None = None, username: str | None = None,
              password: str | None = None) -> ReadPlan:
    """Plan a read for a lazy engine (Dask, Ray) on the caller's connection or a new sign-in.

    A new sign-in is left open until its token expires: the engine's workers use the
    token after this returns. With ``omero_connector``, keep that connection open
    until the computation ends.
    """
    if isinstance(omero_connector, Connection):
        return plan(omero_connector, ticket)
    if omero_connector is not None:
        raise errors.InvalidRequest("omero_connector must be a flight_client Connection")
    details = Connection(server, port, username, password).details
    if details.missing():
        raise errors.MissingConnectionDetails(
            "cannot connect: missing " + "; ".join(details.missing()))
    transport = Transport(details.url, tls_root_certs=details.tls_root_certs)
    try:
        transport.authenticate(details.username or "", details.password or "")
        read = plan(transport, ticket, details.tls_root_certs)
        transport.keep_sign_in()  # only once planned: a failed plan logs out
        return read
    finally:
        transport.close()


#: Transports a worker process keeps open (by access), so its partitions reuse channels,
#: each with the locations that failed for it (tried last by the process's later reads).
_TRANSPORTS: OrderedDict[Access, tuple[Transport, set[str]]] = OrderedDict()
_TRANSPORTS_LOCK = threading.Lock()
MAX_TRANSPORTS = 4


def _transport(access: Access) -> tuple[Transport, set[str]]:
    with _TRANSPORTS_LOCK:
        cached = _TRANSPORTS.get(access)
        if cached is not None and not cached[0].closed:
            _TRANSPORTS.move_to_end(access)
            return cached
        cached = _TRANSPORTS[access] = (access.transport(), set())
        while len(_TRANSPORTS) > MAX_TRANSPORTS:
            _TRANSPORTS.popitem(last=False)  # not closed: a read may still use it
        return cached


def read_partition(partition: Partition, access: Access) -> pa.Table:
    """One partition's rows, from the first of its replicas that serves them."""
    transport, avoid = _transport(access)
    batches = list(failover_batches(transport, partition.ticket, list(partition.locations),
                                    avoid))
    return pa.Table.from_batches(
        [pa.RecordBatch.from_arrays(b.columns, schema=partition.schema) for b in batches],
        schema=partition.schema)
