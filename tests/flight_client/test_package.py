"""What ``flight_client`` exports, and what it must not import."""

from __future__ import annotations

import subprocess
import sys

import flight_client


def test_all_is_sorted_and_complete():
    assert flight_client.__all__ == sorted(flight_client.__all__)
    for name in flight_client.__all__:
        assert getattr(flight_client, name) is not None
    omero2pandas_api = {"connect_to_omero", "download_csv", "download_table",
                        "get_table_columns", "get_table_size", "read_csv", "read_table",
                        "upload_table"}
    assert omero2pandas_api <= set(flight_client.__all__)
    assert {"create_tiledb", "register_table"} <= set(flight_client.__all__)  # omero2pandas.remote


def test_import_needs_neither_omero_nor_ice_nor_the_server():
    code = ("import sys, flight_client; "
            "bad = sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('omero', 'Ice', 'flight_server', 'omero_user_token')); "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"
