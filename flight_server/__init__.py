"""omero-flight server: OMERO.tables over Apache Arrow Flight, with an embedded store."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("omero-flight")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
