"""The embedded store: a folder with a SQLite catalog, OMERO.tables HDF5 files and plain files."""

from flight_server.backends.local.store import LocalStore

__all__ = ["LocalStore"]
