"""omero-flight client: the omero2pandas API over Arrow Flight."""
