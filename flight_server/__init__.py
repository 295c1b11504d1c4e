"""omero-flight server: OMERO.tables over Apache Arrow Flight, with an embedded store.

Importing the package changes no process-wide setting: the HDF5 file-locking setting
lives with the HDF5 code (``flight_server.backends.formats.hdf5``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("omero-flight")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
