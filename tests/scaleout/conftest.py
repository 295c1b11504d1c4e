"""The OMERO stand-in's fixtures, for the replicas in front of it (test_omero_replicas)."""

from tests.standin.fixtures import omero_standin, omero_world  # noqa: F401
