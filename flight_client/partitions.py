"""A read's plan as picklable partitions, one per endpoint, for distributed engines.

:func:`plan` asks the bridge for a read's FlightInfo and returns a
:class:`ReadPlan`: the schema, the row count and one :class:`Partition` per
endpoint (its ticket, every replica that can serve it, its row range). A
partition goes to another process (a Dask or Ray worker) with an
:class:`Access` (the bridge's URL and the bearer token, never the password) and
is read there by :func:`read_partition`, which tries its locations in order and
fails over to the next replica (:func:`flight_client.reading.failover_batches`).
A :class:`~flight_client.results.ReadResult` gives its plan as ``result.plan``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from flight_client import errors
from flight_client.reading import endpoint_locations, failover_batches
from flight_client.transport import Transport
from flight_protocol.messages import (
    ROW_NUMBER_COLUMN,
    ProtocolError,
    RowRange,
    TableTicket,
    came_packed,
    decode,
)


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
        if not isinstance(request, TableTicket):
            raise errors.ServerError("a partition's ticket is not a table read")
        request = replace(request, columns=columns)
        keep = set(columns) if columns is not None else None
        fields = [f for f in self.schema
                  if keep is None or f.name in keep or f.name == ROW_NUMBER_COLUMN]
        # In the form it came (a bridge that sent a JSON row list reads only that).
        ticket = request.encode(packed_rows=came_packed(request.rows))
        return replace(self, ticket=ticket, schema=pa.schema(fields))


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


def plan_from_info(info: flight.FlightInfo, transport: Transport,
                   tls_root_certs: bytes | None = None) -> ReadPlan:
    """The partitions of a read the bridge planned (``get_flight_info``)."""
    if transport.token is None:
        raise errors.InvalidRequest("a partitioned read needs a signed-in connection (a token)")
    parts = []
    for i, endpoint in enumerate(info.endpoints):
        try:
            request = decode(endpoint.ticket.ticket, "ticket")
        except ProtocolError as exc:
            raise errors.ServerError(f"the bridge planned a read with a ticket this client "
                                     f"cannot read: {exc}") from None
        if not isinstance(request, TableTicket):
            raise errors.ServerError("the bridge answered a table read with a non-table ticket")
        start, stop = _row_range(endpoint, request)
        locations = tuple(transport.resolve(loc) for loc in endpoint_locations(endpoint))
        parts.append(Partition(i, locations, endpoint.ticket.ticket, start, stop, info.schema))
    access = Access(transport.location, transport.token, tls_root_certs, transport.timeout)
    return ReadPlan(info.schema, info.total_records, tuple(parts), access)


def plan(conn: Any, ticket: TableTicket, tls_root_certs: bytes | None = None) -> ReadPlan:
    """The partitions of a read (rows selected by a query form one partition).

    ``conn`` is a :class:`~flight_client.transport.Transport` or a connection (its
    ``transport`` and ``details.tls_root_certs`` are used).
    """
    if isinstance(conn, Transport):
        transport = conn
    else:
        transport, tls_root_certs = conn.transport, conn.details.tls_root_certs
    if transport.token is None:
        raise errors.InvalidRequest("a partitioned read needs a signed-in connection (a token)")
    return plan_from_info(transport.flight_info(transport.ticket_bytes(ticket)), transport,
                          tls_root_certs)


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
