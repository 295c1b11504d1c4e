"""Make every Slice operation a servant does not implement fail loudly.

slice2py (Ice 3.6) generates each interface's servant base class (e.g.
``omero.api.IQuery``, with an ``_op_<name>`` descriptor per operation) and
defines each operation there as ``pass``.
For an asynchronous (AMD) operation that means the client never gets an
answer and hangs; for a synchronous one it silently returns None. The
``answers_unimplemented`` class decorator replaces every such inherited stub
with one that answers ``omero.ApiUsageException`` naming the operation.
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

import Ice
import omero

T = TypeVar("T", bound=type)
_SKIP = {"ice_ids", "ice_id", "ice_staticId", "ice_isA", "ice_ping", "__init__", "__str__"}


def unsupported(interface: str, operation: str) -> omero.ApiUsageException:
    return omero.ApiUsageException(
        None, None, f"OMERO stand-in does not implement {interface}.{operation}"
    )


def answers_unimplemented(cls: T) -> T:
    """Class decorator: replace the generated ``pass`` stubs of ``cls``'s Slice bases."""
    for base in cls.__mro__:
        if base is Ice.Object or "ice_staticId" not in vars(base):
            continue
        interface = base.__name__
        for name, stub in list(vars(base).items()):
            if name in _SKIP or not inspect.isfunction(stub):
                continue
            if f"_op_{name.removesuffix('_async')}" not in vars(base):
                continue  # not a Slice operation
            if getattr(cls, name) is not stub:
                continue  # implemented somewhere in cls's own hierarchy
            setattr(cls, name, _make_fallback(interface, name))
    return cls


def _make_fallback(interface: str, name: str) -> Any:
    operation = name.removesuffix("_async")
    if name.endswith("_async"):

        def amd(self: Any, cb: Any, *args: Any, **kwargs: Any) -> None:
            cb.ice_exception(unsupported(interface, operation))

        amd.__name__ = name
        return amd

    def sync(self: Any, *args: Any, **kwargs: Any) -> None:
        raise unsupported(interface, operation)

    sync.__name__ = name
    return sync
