"""A bare pyarrow.flight client written from docs/protocol.md only, for the server tests."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.flight as flight

from flight_protocol.messages import TableTicket, UploadDescriptor


def upload(client: flight.FlightClient, options: flight.FlightCallOptions, data: pa.Table,
           name: str = "t", links: tuple = (), batch_rows: int | None = None) -> dict:
    """do_put a table; returns the server's JSON answer."""
    descriptor = flight.FlightDescriptor.for_command(UploadDescriptor(name, links).encode())
    writer, reader = client.do_put(descriptor, data.schema, options=options)
    with writer:
        for batch in data.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
        writer.done_writing()
        answer = reader.read()
    return json.loads(answer.to_pybytes())


def read(client: flight.FlightClient, options: flight.FlightCallOptions,
         **ticket: object) -> pa.Table:
    """do_get one table ticket."""
    return client.do_get(flight.Ticket(TableTicket(**ticket).encode()), options=options).read_all()


def action(client: flight.FlightClient, options: flight.FlightCallOptions, name: str,
           body: bytes = b"") -> dict:
    results = list(client.do_action(flight.Action(name, body), options=options))
    return json.loads(results[0].body.to_pybytes())


def error_code(exc: flight.FlightError) -> str:
    return json.loads(exc.extra_info)["code"]
