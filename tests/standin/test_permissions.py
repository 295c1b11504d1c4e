"""OMERO group permissions on the stand-in: private, read-only, and writes by others."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.standin.fixtures import SKIP_REASON  # noqa: E402

omero = pytest.importorskip("omero", reason=SKIP_REASON)

pytestmark = pytest.mark.omero
ALL_GROUPS = {"omero.group": "-1"}


@pytest.fixture(scope="module")
def tables(omero_standin, omero_world):
    """One table of alice's in each group, linked to her image there."""
    frame = pd.DataFrame({"id": np.arange(10, dtype=np.int64), "value": np.arange(10) * 0.5})
    return {
        group: omero_standin.seed.table("alice", group, frame, f"table in {group}",
                                        links=[("Image", omero_world.images[group])])
        for group in (omero_world.private_group, omero_world.shared_group)
    }


def _open(client, file_id):
    return client.sf.sharedResources().openTable(omero.model.OriginalFileI(file_id, False),
                                                 ALL_GROUPS)


def test_other_user_cannot_see_or_open_private_table(omero_login, omero_world, tables):
    seeded = tables[omero_world.private_group]
    bob = omero_login("bob")
    query = bob.sf.getQueryService()
    params = omero.sys.ParametersI().addId(seeded.annotation_id)
    assert query.findByQuery("SELECT fa.file from FileAnnotation fa where fa.id = :id",
                             params, ALL_GROUPS) is None
    assert query.find("OriginalFile", seeded.file_id, ALL_GROUPS) is None
    assert query.find("Image", omero_world.images[omero_world.private_group], ALL_GROUPS) is None
    with pytest.raises(omero.SecurityViolation, match="cannot read OriginalFile"):
        _open(bob, seeded.file_id)
    store = bob.sf.createRawFileStore()
    try:
        with pytest.raises(omero.SecurityViolation):
            store.setFileId(seeded.file_id, ALL_GROUPS)
    finally:
        store.close()


def test_owner_opens_private_table(omero_login, omero_world, tables):
    seeded = tables[omero_world.private_group]
    table = _open(omero_login("alice"), seeded.file_id)
    try:
        assert table.getNumberOfRows() == 10
    finally:
        table.close()


def test_other_user_reads_read_only_group_table(omero_login, omero_world, tables):
    seeded = tables[omero_world.shared_group]
    bob = omero_login("bob")
    ofile = bob.sf.getQueryService().findByQuery(
        "SELECT fa.file from FileAnnotation fa where fa.id = :id",
        omero.sys.ParametersI().addId(seeded.annotation_id), ALL_GROUPS)
    assert ofile.id.val == seeded.file_id
    assert ofile.details.owner.omeName.val == "alice"
    assert str(ofile.details.permissions) == "rwr---"
    table = _open(bob, seeded.file_id)
    try:
        data = table.read([0, 1], 0, 10)
        assert data.columns[0].values == list(range(10))
        assert data.columns[1].values == [i * 0.5 for i in range(10)]
    finally:
        table.close()


def test_other_user_cannot_write_read_only_group_table(omero_login, omero_world, tables):
    seeded = tables[omero_world.shared_group]
    bob = omero_login("bob")
    table = _open(bob, seeded.file_id)
    try:
        columns = table.getHeaders()
        columns[0].values = [99]
        columns[1].values = [9.5]
        with pytest.raises(omero.SecurityViolation, match="cannot write"):
            table.addData(columns)
        with pytest.raises(omero.SecurityViolation):
            table.setAllMetadata({"x": omero.rtypes.rstring("y")})
        with pytest.raises(omero.SecurityViolation):
            table.delete()
        assert table.getNumberOfRows() == 10
    finally:
        table.close()


def test_other_user_cannot_change_or_annotate_in_read_only_group(omero_login, omero_world,
                                                                 tables):
    group = omero_world.shared_group
    seeded = tables[group]
    bob = omero_login("bob")
    ctx = {"omero.group": str(omero_standin_group_id(bob, group))}
    update = bob.sf.getUpdateService()
    ann = bob.sf.getQueryService().get("FileAnnotation", seeded.annotation_id, ALL_GROUPS)
    ann.description = omero.rtypes.rstring("bob was here")
    with pytest.raises(omero.SecurityViolation, match="cannot write"):
        update.saveObject(ann, ctx)
    link = omero.model.ImageAnnotationLinkI()
    link.link(omero.model.ImageI(omero_world.images[group], False),
              omero.model.FileAnnotationI(seeded.annotation_id, False))
    with pytest.raises(omero.SecurityViolation, match="cannot link"):
        update.saveObject(link, ctx)
    store = bob.sf.createRawFileStore()
    try:
        store.setFileId(seeded.file_id, ALL_GROUPS)
        assert store.size() > 0
        with pytest.raises(omero.SecurityViolation):
            store.write(b"junk", 0, 4)
    finally:
        store.close()


def test_owner_can_write_own_table(omero_login, omero_world, tables):
    seeded = tables[omero_world.shared_group]
    table = _open(omero_login("alice"), seeded.file_id)
    try:
        table.setAllMetadata({"origin": omero.rtypes.rstring("test")})
        assert table.getAllMetadata()["origin"].val == "test"
    finally:
        table.close()


def omero_standin_group_id(client, name: str) -> int:
    return client.sf.getAdminService().lookupGroup(name).id.val


def test_owner_deletes_table(omero_standin, omero_login, omero_world):
    from flight_server.repository import original_file_path

    group = omero_world.shared_group
    seeded = omero_standin.seed.table("alice", group, pd.DataFrame({"x": [1.0]}), "doomed",
                                      links=[("Image", omero_world.images[group])])
    path = original_file_path(omero_standin.data_dir, seeded.file_id)
    assert path.exists()
    alice = omero_login("alice")
    _open(alice, seeded.file_id).delete()
    query = alice.sf.getQueryService()
    assert query.find("OriginalFile", seeded.file_id, ALL_GROUPS) is None
    assert query.find("FileAnnotation", seeded.annotation_id, ALL_GROUPS) is None
    assert not path.exists()
    assert seeded.file_id not in [t["file_id"] for t in omero_standin.open_tables()]
