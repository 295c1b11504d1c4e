"""A local HTTPS stand-in for OMERO Plus's table registration endpoints (see ``server.py``)."""
