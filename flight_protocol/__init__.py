"""What the omero-flight client and server agree on; pyarrow, numpy and the stdlib only.

* :mod:`flight_protocol.messages`: tickets, descriptors, actions, error codes and limits;
* :mod:`flight_protocol.columns`: the OMERO.tables column types and their Arrow mapping;
* :mod:`flight_protocol.tiledb`: the TileDB array layout OMERO Plus reads, and its writer;
* :mod:`flight_protocol.omero_plus`: the OMERO Plus HTTPS registration client.

Both ``flight_client`` and ``flight_server`` import this package; it imports
neither, and importing it changes no process-wide setting.
"""
