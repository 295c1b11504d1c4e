"""Reading a planned table: its endpoints fetched in parallel, in order, failing over.

:func:`ordered_batches` yields the batches of a read's endpoints in endpoint
order, fetching up to :data:`MAX_PARALLEL_ENDPOINTS` of them at once with a
small thread pool; :func:`failover_batches` reads one endpoint from the first of
its replicas that serves it, resuming a row range on the next one after a
failure. Both only hand tickets to the :class:`~flight_client.transport.Transport`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from flight_client import errors
from flight_client.transport import Transport
from flight_protocol.messages import RowRange, TableTicket, decode

LOGGER = logging.getLogger(__name__)

#: Endpoints fetched at the same time for in-memory reads, and batches buffered per
#: endpoint. Every open stream also holds gRPC buffers (tens of MiB for a fast
#: server), so streaming reads and downloads fetch one endpoint at a time and keep
#: memory flat; in-memory reads, which hold their result anyway, overlap two.
MAX_PARALLEL_ENDPOINTS = int(os.environ.get("OMERO_FLIGHT_PARALLEL_ENDPOINTS", "2"))
PREFETCH_BATCHES = 2


def endpoint_locations(endpoint: flight.FlightEndpoint) -> list[str | None]:
    """An endpoint's locations in the bridge's order (``[None]``: the server asked)."""
    return [loc.uri.decode() for loc in endpoint.locations] or [None]


def resume_ticket(ticket: bytes, received: int) -> bytes | None:
    """The ticket for what is left of a read after ``received`` rows, None if it cannot resume.

    A row range resumes after the rows received; any read resumes from the start when
    nothing was received yet.
    """
    if received == 0:
        return ticket
    request = decode(ticket, "ticket")
    if not isinstance(request, TableTicket) or not isinstance(request.rows, RowRange):
        return None
    return replace(request, rows=RowRange(request.rows.start + received,
                                          request.rows.stop)).encode()


def _unavailable(err: errors.OmeroFlightError) -> bool:
    """A replica that cannot serve now (down, unreachable, stopping, cut off): try another."""
    return isinstance(err, errors.ConnectionFailed | errors.ServerBusy) or (
        type(err) is errors.ServerError and err.code is None)


def failover_batches(transport: Transport, ticket: bytes, locations: list[str | None],
                     avoid: set[str] | None = None) -> Generator[pa.RecordBatch, None, None]:
    """One endpoint's batches, trying its locations in order (as ADBC does).

    A location that is unavailable, when the stream opens or in its middle, hands
    the read to the next one; a row range resumes after the rows already received.
    ``avoid`` (shared by one read's endpoints) moves locations that failed to the end.
    """
    avoid = set() if avoid is None else avoid
    ordered = sorted(locations, key=lambda loc: transport.resolve(loc) in avoid)
    remaining: bytes = ticket
    received = 0
    for i, location in enumerate(ordered):
        last = i == len(ordered) - 1
        try:  # while other replicas remain, an unavailable one hands over at once
            for batch in transport.stream(remaining, location, None if last else 0):
                received += batch.num_rows
                yield batch
            return
        except errors.OmeroFlightError as err:
            if not _unavailable(err) or last:
                raise
            resumed = resume_ticket(ticket, received)
            if resumed is None:
                raise
            remaining = resumed
            avoid.add(transport.resolve(location))
            LOGGER.warning("replica %s failed after %d rows (%s); reading on from %s",
                           transport.resolve(location), received, err,
                           transport.resolve(ordered[i + 1]))


def _endpoint_batches(transport: Transport, endpoint: flight.FlightEndpoint,
                      avoid: set[str] | None = None) -> Generator[pa.RecordBatch, None, None]:
    return failover_batches(transport, endpoint.ticket.ticket, endpoint_locations(endpoint),
                            avoid)


def _put(q: queue.Queue, item: tuple[str, Any], stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _fetch_into(transport: Transport, endpoint: flight.FlightEndpoint, q: queue.Queue,
                stop: threading.Event, avoid: set[str]) -> None:
    if stop.is_set():
        return
    stream = _endpoint_batches(transport, endpoint, avoid)
    try:
        for batch in stream:
            if not _put(q, ("batch", batch), stop):
                return
        _put(q, ("done", None), stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
        _put(q, ("error", exc), stop)
    finally:
        stream.close()


def ordered_batches(transport: Transport, endpoints: list[flight.FlightEndpoint],
                    parallel: int = MAX_PARALLEL_ENDPOINTS) -> Iterator[pa.RecordBatch]:
    """Batches of all endpoints in endpoint order; up to ``parallel`` endpoints at once."""
    avoid: set[str] = set()
    if len(endpoints) <= 1 or parallel <= 1:
        for endpoint in endpoints:
            yield from _endpoint_batches(transport, endpoint, avoid)
        return
    stop = threading.Event()
    queues: list[queue.Queue] = [queue.Queue(maxsize=PREFETCH_BATCHES) for _ in endpoints]
    workers = min(parallel, len(endpoints))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="omero-flight-get") as pool:
        futures = [pool.submit(_fetch_into, transport, ep, q, stop, avoid)
                   for ep, q in zip(endpoints, queues, strict=True)]
        try:
            for q in queues:
                while True:
                    kind, item = q.get()
                    if kind == "done":
                        break
                    if kind == "error":
                        raise item
                    yield item
        finally:
            stop.set()
            for future in futures:
                future.cancel()
