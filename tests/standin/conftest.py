"""The stand-in's own tests use its fixtures (the lead exposes them repo-wide later)."""

from tests.standin.fixtures import omero_login, omero_standin, omero_world  # noqa: F401
