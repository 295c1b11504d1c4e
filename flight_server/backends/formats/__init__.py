"""The storage formats backends keep tables in.

- ``hdf5``: OMERO.tables' own HDF5 layout (reader and writer, the process-wide
  ``HDF5_LOCK`` and the HDF5 file-locking setting); ``hdf5_check`` checks a file's
  storage before PyTables opens it.
- ``tiledb``: TileDB arrays in OMERO Plus's layout (the reader; the layout constants
  and writer are ``flight_protocol.tiledb``, which clients use too).

Formats implement ``backends.handles.TableHandle`` and never import ``backends.base``.
"""
