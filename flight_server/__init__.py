"""omero-flight server: OMERO.tables over Apache Arrow Flight, with an embedded store."""

import os
from importlib.metadata import PackageNotFoundError, version

# HDF5's own file locks (flock) are off in the bridge unless HDF5_USE_FILE_LOCKING
# says otherwise: OMERO.tables keeps the tables it has open locked for writing,
# which would stop direct reads beside OMERO, and libhdf5 reads this setting once,
# when PyTables (or omero-py's columns) first loads it, so it is set here, before
# any server module can import them. The bridge writes each HDF5 file once, to a
# private temporary path, under its own lock (flight_server.hdf5_layout.HDF5_LOCK).
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

try:
    __version__ = version("omero-flight")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
