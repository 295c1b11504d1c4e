"""Fixtures: tiny servers stopped after each test, and transports closed after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pyarrow.flight as flight
import pytest

from flight_client.transport import Transport

S = TypeVar("S", bound=flight.FlightServerBase)


@pytest.fixture
def serve() -> Iterator[Callable[[S], S]]:
    """Keep a started server until the end of the test: ``serve(Failing(...))``."""
    servers: list[flight.FlightServerBase] = []

    def keep(server: S) -> S:
        servers.append(server)
        return server

    yield keep
    for server in reversed(servers):
        server.shutdown()


@pytest.fixture
def transport() -> Iterator[Callable[..., Transport]]:
    """``transport(url, **options)``: a Transport (fast backoff) closed after the test."""
    made: list[Transport] = []

    def make(url: str, **options: object) -> Transport:
        options.setdefault("backoff", 0.01)
        made.append(Transport(url, **options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for t in made:
        t.close()
