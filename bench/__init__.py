"""Benchmarks for omero-flight: side-by-side measurements, printed and saved as JSON."""
