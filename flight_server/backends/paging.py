"""Listing pages: sizes and continuation tokens, the same for every backend.

A listing page holds at most ``page_size`` tables in a stable order; its
``next_page_token`` (a string, or None on the last page) is passed back
unchanged to get the page after it. A token names the last table a page held
(its position in the backend's order), so pages never repeat or skip a table
however many tables are added meanwhile. It grants nothing: the caller still
sees only what they may read.
"""

from __future__ import annotations

import re

from flight_protocol.messages import echo
from flight_server.errors import InvalidArgument

#: Tables per page when a caller asks for pages without a size.
DEFAULT_PAGE_SIZE = 500
#: The largest page served: every query a page needs stays far below PostgreSQL's
#: 32,767 bind parameters (a page's links are looked up with its ids as parameters).
MAX_PAGE_SIZE = 5_000

_TOKEN = re.compile(r"[0-9]{1,18}")


def page_size_of(value: object) -> int:
    """A requested page size, checked (None: the default)."""
    if value is None:
        return DEFAULT_PAGE_SIZE
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}, "
                              f"not {echo(value)}")
    return value


def position_of(token: object) -> int:
    """The position a continuation token names (-1, before everything, for None)."""
    if token is None:
        return -1
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise InvalidArgument(f"page_token {echo(token)} is not a token this server gave: "
                              "pass back a listing's next_page_token unchanged")
    return int(token)


def token_after(position: int) -> str:
    """The continuation token for the page after the table at ``position``."""
    return str(int(position))
