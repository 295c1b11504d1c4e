"""The OMERO backend: OMERO.tables on an OMERO server, through omero-py, as the calling user.

Needs omero-py and zeroc-ice 3.6 (``pip install 'omero-flight[omero]'``).
"""

from __future__ import annotations

try:
    import omero  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the OMERO backend needs omero-py with zeroc-ice 3.6: "
        "pip install 'omero-flight[omero]' (see scripts/ensure-zeroc-ice.sh)"
    ) from exc

from flight_server.backends.omero.backend import OmeroBackend

__all__ = ["OmeroBackend"]
