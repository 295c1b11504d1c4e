"""Tests for omero-flight."""
