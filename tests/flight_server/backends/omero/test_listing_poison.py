"""One member's fake table does not break a colleague's list_flights (review finding).

In OMERO anyone may save an OriginalFile with the ``OMERO.tables`` mimetype whose
bytes are not a table. ``list_flights`` plans every listed table; such a file in a
read-only group must not fail every colleague's listing with its error.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

import flight_client  # noqa: E402
from flight_protocol.messages import encode_body  # noqa: E402

pytestmark = pytest.mark.omero


def test_a_fake_table_is_left_out_of_list_flights(omero_bridge, sign_in):
    world, seed = omero_bridge.world, omero_bridge.standin.seed
    image = seed.image("alice", world.shared_group, "image with a fake table")
    alice, bob = sign_in("alice"), sign_in("bob")
    fake = seed.file("alice", world.shared_group, b"not an HDF5 file", "fake.h5",
                     "OMERO.tables", [("Image", image)])
    real = flight_client.upload_table(pd.DataFrame({"x": [1, 2]}), "real", parent_id=image,
                                      omero_connector=alice, progress=False)
    real_file = next(t["file_id"] for t in flight_client.list_tables(omero_connector=bob)
                     if t["annotation_id"] == real)
    client, options = bob.transport._client(), bob.transport.options()
    where = {"object_type": "Image", "object_id": image}
    infos = list(client.list_flights(encode_body(**where), options))
    assert [json.loads(i.descriptor.command)["file_id"] for i in infos] == [real_file]
    # Paged one at a time: the fake table's page is passed over, the token still given.
    listed, token = [], None
    while True:
        extra = {"page_token": token} if token else {}
        page = list(client.list_flights(encode_body(**where, page_size=1, **extra), options))
        listed += [json.loads(i.descriptor.command)["file_id"] for i in page]
        token = json.loads(page[-1].app_metadata)["next_page_token"] if (
            page and page[-1].app_metadata) else None
        if token is None:
            break
    assert listed == [real_file] and fake.file_id not in listed
    assert omero_bridge.standin.open_tables() == []
