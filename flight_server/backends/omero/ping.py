"""Is OMERO up? Its Glacier2 router answers ``ice_ping``, with no user session.

The readiness check of the OMERO backend (``/readyz``). One unauthenticated
``omero.client`` is kept for it (created on first use, rebuilt after a failed
ping) so a probe costs one round trip, bounded by ``timeout_ms``.
"""

from __future__ import annotations

import threading
from typing import Any

from flight_server.backends.omero.errors import omero_errors
from flight_server.backends.omero.sessions import ClientFactory, _client, _destroy

PING_TIMEOUT_MS = 3000


class RouterPing:
    """``ping()`` returns when OMERO's router at ``host:port`` answers, raises otherwise."""

    def __init__(self, host: str, port: int, client_factory: ClientFactory = _client,
                 timeout_ms: int = PING_TIMEOUT_MS) -> None:
        self.host, self.port = host, int(port)
        self.timeout_ms = int(timeout_ms)
        self._factory = client_factory
        self._lock = threading.Lock()
        self._client: Any = None

    def ping(self) -> None:
        with self._lock:
            if self._client is None:
                self._client = self._factory(self.host, self.port)
            try:
                with omero_errors(f"pinging OMERO at {self.host}:{self.port}"):
                    router = self._client.getRouter(self._client.getCommunicator())
                    router = router.ice_timeout(self.timeout_ms)
                    router.ice_invocationTimeout(self.timeout_ms).ice_ping()
            except BaseException:
                self._drop()
                raise

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _destroy(client)
