"""Two users through one bridge see and change exactly what OMERO lets each of them."""

from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

import flight_client  # noqa: E402

pytestmark = pytest.mark.omero

FRAME = pd.DataFrame({"id": [1, 2, 3], "x": [0.5, 1.5, 2.5]})


def ids(conn, *where) -> set[int]:
    return {t["annotation_id"] for t in flight_client.list_tables(*where, omero_connector=conn)}


def test_private_and_read_only_groups(omero_bridge, sign_in, omero_login):
    world = omero_bridge.world
    alice, bob = sign_in("alice"), sign_in("bob")
    private_image = world.images[world.private_group]
    shared_image = world.images[world.shared_group]
    hidden = flight_client.upload_table(FRAME, "private", parent_id=private_image,
                                        omero_connector=alice, progress=False)
    shown = flight_client.upload_table(FRAME, "shared", parent_id=shared_image,
                                       omero_connector=alice, progress=False)
    assert {hidden, shown} <= ids(alice)
    assert shown in ids(bob) and hidden not in ids(bob)
    assert ids(bob, "Image", private_image) == set()
    with pytest.raises(flight_client.NotFound, match="may not read"):
        flight_client.read_table(annotation_id=hidden, omero_connector=bob)
    pd.testing.assert_frame_equal(
        flight_client.read_table(annotation_id=shown, omero_connector=bob), FRAME)
    # What OMERO itself answers each user, asked directly, is what the bridge listed.
    for user, conn in (("alice", alice), ("bob", bob)):
        query = omero_login(user).sf.getQueryService()
        direct = query.findAllByQuery(
            "select fa from FileAnnotation fa join fetch fa.file f "
            "where f.mimetype = 'OMERO.tables'", None, {"omero.group": "-1"})
        assert {a.id.val for a in direct} == ids(conn)


def test_no_links_to_what_one_may_not_annotate(omero_bridge, sign_in):
    world = omero_bridge.world
    bob = sign_in("bob")
    before = ids(bob)
    with pytest.raises(flight_client.PermissionDenied):
        flight_client.upload_table(FRAME, "on alice's image", omero_connector=bob,
                                   parent_id=world.images[world.shared_group], progress=False)
    with pytest.raises(flight_client.NotFound, match="Image .* does not exist or user 'bob'"):
        flight_client.upload_table(FRAME, "on a hidden image", omero_connector=bob,
                                   parent_id=world.images[world.private_group], progress=False)
    assert ids(bob) == before
    assert [t for t in omero_bridge.standin.open_tables() if t["user"] == "bob"] == []


def test_link_targets_must_share_a_group(omero_bridge, sign_in):
    world = omero_bridge.world
    alice = sign_in("alice")
    links = [("Image", world.images[world.private_group]),
             ("Image", world.images[world.shared_group])]
    with pytest.raises(flight_client.InvalidRequest, match="one OMERO group.*Image"):
        flight_client.upload_table(FRAME, "split", links=links, omero_connector=alice,
                                   progress=False)
