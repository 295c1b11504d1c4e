"""An OMERO stand-in server (real Ice, the OMERO.tables engine of omero-py) for tests."""
