"""Error hints from the OMERO backend name functions that exist (issue 11, fault 7)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

import flight_client  # noqa: E402

pytestmark = pytest.mark.omero


def test_read_table_on_a_csv_names_the_functions_that_read_it(omero_bridge, sign_in):
    world = omero_bridge.world
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    csv = omero_bridge.standin.seed.csv("alice", world.shared_group, frame, "hint.csv")
    conn = sign_in("alice")
    with pytest.raises(flight_client.InvalidRequest, match="not an OMERO.table") as info:
        flight_client.read_table(file_id=csv.file_id, omero_connector=conn)
    named = set(re.findall(r"\b(read_\w+|download_\w+)\b", str(info.value)))
    assert named and all(callable(getattr(flight_client, name, None)) for name in named)
    pd.testing.assert_frame_equal(flight_client.read_csv(file_id=csv.file_id,
                                                         omero_connector=conn), frame)
