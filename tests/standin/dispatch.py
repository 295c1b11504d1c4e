"""Decorators that turn servant method bodies into proper Ice answers.

``amd`` wraps the body of an asynchronous operation (``op_async(self, cb,
*args, current)``): its return value goes to ``cb.ice_response`` and any
error to ``cb.ice_exception``, so the client never hangs. ``sync`` does the
same error translation for plain operations. Errors are translated in one
place: PermissionDenied -> omero.SecurityViolation, UnsupportedQuery ->
omero.ApiUsageException, anything unexpected -> omero.InternalException.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from typing import Any

import Ice
import omero

from tests.standin.catalog import PermissionDenied
from tests.standin.hql import UnsupportedQuery

LOG = logging.getLogger("omero_standin")
VOID = object()


def translate(exc: BaseException) -> Exception:
    """The exception an OMERO server would send for ``exc``."""
    if isinstance(exc, omero.ServerError | Ice.UserException | Ice.LocalException):
        return exc
    if isinstance(exc, PermissionDenied):
        return omero.SecurityViolation(None, None, str(exc))
    if isinstance(exc, UnsupportedQuery):
        return omero.ApiUsageException(None, None, str(exc))
    LOG.exception("unexpected error in the stand-in")
    return omero.InternalException(traceback.format_exc(), type(exc).__name__,
                                   f"OMERO stand-in error: {type(exc).__name__}: {exc}")


def amd(func: Callable[..., Any]) -> Callable[..., None]:
    """Wrap ``func(self, *args, current)``; answer through the AMD callback."""

    @functools.wraps(func)
    def wrapper(self: Any, cb: Any, *args: Any) -> None:
        try:
            result = func(self, *args)
        except Exception as exc:  # noqa: BLE001 - every error must reach the client
            cb.ice_exception(translate(exc))
            return
        if result is VOID:
            cb.ice_response()
        else:
            cb.ice_response(result)

    return wrapper


def sync(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a plain operation so that errors reach the client as OMERO exceptions."""

    @functools.wraps(func)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc) from exc

    return wrapper
