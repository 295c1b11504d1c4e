"""Signed, expiring range tickets: a read one replica planned, served by any replica.

The replica that plans a read (``get_flight_info``) has opened the table as the
caller, so it knows the caller may read it. It gives every endpoint's ticket a
``grant`` saying what may be read with it, by whom and until when, signed with
the replicas' shared key::

    "grant": {"user": 7, "file_id": 42, "columns": ["a", "b"] | null,
              "rows": [0, 1000000] | null, "select": "<sha256>" | null,
              "expires": 1767225600, "key": "<key id>", "sig": "<HMAC-SHA256>"}

``sig`` is HMAC-SHA256 over the canonical JSON of the other fields (sorted keys,
no spaces, ASCII), with a key derived from the token secret for tickets only
(so a token's signature never passes as a ticket's). ``key`` names that key (a
hash of it, not the key), so a ticket from a bridge with another key is told
apart from an edited one. ``rows`` is the endpoint's row range; a row list or a
query is one endpoint whose ``select`` is the SHA-256 of its rows, query and
variables.

:func:`redeem` (``do_get``, on any replica) checks, each with its own typed
refusal: the grant is well formed (``invalid_argument``), made with this key and
not expired (``unauthenticated``), unchanged since it was signed, issued to
this caller's user, and that the ticket reads only what it grants: the same
table, a subset of the columns, rows within the range (a client resuming a
read after a failover, or a Dask column projection, narrows a ticket; that
stays allowed) or exactly the signed row list or query (``permission_denied``).
A ticket without a grant (one a client built itself, omero2pandas-style) is
read as the caller, as before. With a valid grant the backend opens the table
through :meth:`Backend.open_for_grant`: the embedded store checks the caller's
permission again; an OMERO replica without the caller's session reads the HDF5
file from OMERO's data directory, trusting the signature and expiry (the file
still passes :mod:`flight_server.backends.formats.hdf5_check`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from flight_protocol.messages import RowRange, TableTicket, echo
from flight_server.backends.base import Backend, Caller
from flight_server.errors import InvalidArgument, PermissionDenied, Unauthenticated
from flight_server.streaming import TableRead, plan_read

#: Derives the ticket key from the shared token secret (domain separation).
TICKET_KEY_LABEL = b"omero-flight range tickets v1"
GRANT_FIELDS = ("user", "file_id", "columns", "rows", "select", "expires", "key", "sig")


def key_id(key: bytes) -> str:
    """A short public name of a key: replicas with the same key give the same name."""
    return hashlib.sha256(b"key id\0" + key).hexdigest()[:16]


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def selection_digest(ticket: TableTicket) -> str | None:
    """SHA-256 of a row list or a query with its variables; None for a row range."""
    if isinstance(ticket.rows, RowRange):
        return None
    rows = None if ticket.rows is None else list(ticket.rows)
    return hashlib.sha256(_canonical({"rows": rows, "query": ticket.query,
                                      "variables": dict(ticket.variables)})).hexdigest()


def _when(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class TicketSigner:
    """Signs endpoint tickets and checks them, with a key derived from the token secret."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, TICKET_KEY_LABEL, hashlib.sha256).digest()
        self.key_id = key_id(self._key)

    def _sign(self, claims: dict[str, Any]) -> str:
        digest = hmac.new(self._key, _canonical(claims), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, ticket: TableTicket, caller: Caller, file_id: int,
              expires: float) -> TableTicket:
        """``ticket`` (one endpoint of a read the caller may make) with its signed grant."""
        ticket = replace(ticket, file_id=file_id, annotation_id=None, grant=None)
        rows = ticket.rows
        claims: dict[str, Any] = {
            "user": caller.user_id,
            "file_id": file_id,
            "columns": None if ticket.columns is None else list(ticket.columns),
            "rows": [rows.start, rows.stop] if isinstance(rows, RowRange) else None,
            "select": selection_digest(ticket),
            "expires": int(expires),
            "key": self.key_id,
        }
        if isinstance(rows, RowRange) and rows.stop is None:
            raise ValueError("an endpoint's row range must have a stop")
        return replace(ticket, grant={**claims, "sig": self._sign(claims)})

    def verify(self, ticket: TableTicket, caller: Caller, now: float | None = None) -> None:
        """Refuse, typed and naming what is wrong, a ticket its grant does not allow."""
        grant = ticket.grant
        assert grant is not None
        claims = _well_formed(grant)
        if claims["key"] != self.key_id:
            raise Unauthenticated(
                f"this ticket was signed with another key (key {echo(claims['key'], 40)}, this "
                f"bridge's is {self.key_id!r}): it comes from a bridge that is not a replica "
                "of this one (replicas share token_secret_file)")
        if not hmac.compare_digest(self._sign(claims).encode(), str(grant["sig"]).encode()):
            raise PermissionDenied("this ticket's grant was changed after the bridge signed it "
                                   "(its signature does not match): use the tickets "
                                   "get_flight_info returns as they are")
        now = time.time() if now is None else now
        if now >= claims["expires"]:
            raise Unauthenticated(f"this ticket expired at {_when(claims['expires'])}: plan "
                                  "the read again (get_flight_info) for new tickets")
        if claims["user"] != caller.user_id:
            raise PermissionDenied(f"this ticket was issued to user id {claims['user']}, not to "
                                   f"{echo(caller.username, 100)} (user id {caller.user_id}): "
                                   "plan your own read")
        _within(ticket, claims)


def _well_formed(grant: Any) -> dict[str, Any]:
    """The grant's claims (all but ``sig``), with every field of the right type."""
    def bad(what: str) -> InvalidArgument:
        return InvalidArgument(f"malformed ticket grant: {what} (use the tickets "
                               "get_flight_info returns as they are)")

    if set(grant) != set(GRANT_FIELDS):
        raise bad(f"its fields must be {', '.join(GRANT_FIELDS)}, got "
                  f"{echo(', '.join(sorted(map(str, grant))), 120)}")
    claims = {k: grant[k] for k in GRANT_FIELDS if k != "sig"}

    def integer(value: Any) -> bool:
        return type(value) is int

    if not integer(claims["user"]) or not integer(claims["file_id"]) \
            or not integer(claims["expires"]):
        raise bad("user, file_id and expires must be integers")
    columns = claims["columns"]
    if columns is not None and not (isinstance(columns, list)
                                    and all(isinstance(c, str) for c in columns)):
        raise bad("columns must be a list of names or null")
    rows = claims["rows"]
    if rows is not None and not (isinstance(rows, list) and len(rows) == 2
                                 and all(integer(r) for r in rows)):
        raise bad("rows must be [start, stop] or null")
    if (rows is None) == (claims["select"] is None):
        raise bad("exactly one of rows and select must be set")
    if claims["select"] is not None and not isinstance(claims["select"], str):
        raise bad("select must be a string")
    if not isinstance(claims["key"], str) or not isinstance(grant["sig"], str):
        raise bad("key and sig must be strings")
    return claims


def _within(ticket: TableTicket, claims: dict[str, Any]) -> None:
    """The ticket reads no other table, columns or rows than its grant names."""
    if ticket.file_id != claims["file_id"]:
        named = (f"OriginalFile {ticket.file_id}" if ticket.file_id is not None
                 else f"FileAnnotation {ticket.annotation_id}")
        raise PermissionDenied(f"this ticket names {named} but its grant is for OriginalFile "
                               f"{claims['file_id']}: a ticket reads only its own table")
    granted = claims["columns"]
    if granted is not None:
        if ticket.columns is None:
            raise PermissionDenied("this ticket asks for every column but its grant names "
                                   f"only {echo(granted)}")
        allowed = set(granted)
        extra = [c for c in ticket.columns if c not in allowed]
        if extra:
            raise PermissionDenied(f"column(s) {echo(extra)} are not among the columns this "
                                   f"ticket's grant names ({echo(granted)})")
    if claims["rows"] is not None:
        start, stop = claims["rows"]
        rows = ticket.rows
        if not isinstance(rows, RowRange) or rows.stop is None \
                or not start <= rows.start <= rows.stop <= stop:
            asked = (f"rows {rows.start}..{rows.stop}" if isinstance(rows, RowRange)
                     else "other rows")
            raise PermissionDenied(f"this ticket asks for {asked} but its grant covers rows "
                                   f"{start}..{stop} only")
    elif selection_digest(ticket) != claims["select"]:
        raise PermissionDenied("this ticket's row list or query is not the one its grant "
                               "was signed for")


def is_signed(request: object) -> bool:
    """A table ticket with a grant (which a caller from another replica may redeem)."""
    return isinstance(request, TableTicket) and request.grant is not None


def redeem(backend: Backend, caller: Caller, ticket: TableTicket,
           signer: TicketSigner) -> TableRead:
    """A ``do_get`` table ticket as a validated read: checked against its grant if it has
    one, else read as the caller (a ticket the client built itself)."""
    if ticket.grant is None:
        return plan_read(backend, caller, ticket)
    signer.verify(ticket, caller)
    assert ticket.file_id is not None
    return plan_read(backend, caller, ticket, backend.open_for_grant(caller, ticket.file_id))
