"""The HQL shapes clients send (omero2pandas, the bridge's OMERO backend) and their answers."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.standin.fixtures import SKIP_REASON  # noqa: E402

omero = pytest.importorskip("omero", reason=SKIP_REASON)
from omero.rtypes import rstring, unwrap  # noqa: E402

from flight_server.backends.omero.calls import ALL_GROUPS  # noqa: E402
from flight_server.backends.omero.lookup import query_params as _params  # noqa: E402

pytestmark = pytest.mark.omero
DETAILS = "join fetch f.details.owner join fetch f.details.group"


@pytest.fixture(scope="module")
def seeded(omero_standin, omero_world):
    group = omero_world.shared_group
    image = omero_world.images[group]
    dataset = omero_standin.seed.dataset("alice", group, "query dataset")
    table = omero_standin.seed.table("alice", group, pd.DataFrame({"x": [1, 2]}), "q-table",
                                     links=[("Image", image), ("Dataset", dataset)])
    csv = omero_standin.seed.csv("alice", group, pd.DataFrame({"x": [1]}), "q.csv",
                                 links=[("Image", image)])
    private = omero_standin.seed.table("alice", omero_world.private_group,
                                       pd.DataFrame({"x": [1]}), "hidden",
                                       links=[("Image", omero_world.images["private-lab"])])
    return {"image": image, "dataset": dataset, "table": table, "csv": csv, "private": private}


@pytest.fixture
def bob_query(omero_login, omero_world):
    return omero_login("bob").sf.getQueryService()


def test_file_and_annotation_by_id(bob_query, seeded):
    table = seeded["table"]
    ofile = bob_query.findByQuery(f"select f from OriginalFile f {DETAILS} where f.id = :id",
                                  _params(id=table.file_id), ALL_GROUPS)
    assert (unwrap(ofile.name), unwrap(ofile.details.owner.omeName)) == ("q-table", "alice")
    ann = bob_query.findByQuery(
        f"select fa from FileAnnotation fa join fetch fa.file f {DETAILS} where fa.id = :id",
        _params(id=table.annotation_id), ALL_GROUPS)
    assert unwrap(ann.getFile().mimetype) == "OMERO.tables"
    assert ann.getFile().getDetails().getGroup().id.val > 2
    found = bob_query.findAllByQuery(
        "select fa from FileAnnotation fa where fa.file.id = :id order by fa.id",
        _params(id=table.file_id), ALL_GROUPS)
    assert [a.id.val for a in found] == [table.annotation_id]


def test_listing_tables(bob_query, seeded):
    listed = bob_query.findAllByQuery(
        f"select fa from FileAnnotation fa join fetch fa.file f {DETAILS} "
        "where f.mimetype = :mimetype order by fa.id", _params(mimetype="OMERO.tables"),
        ALL_GROUPS)
    ids = [a.id.val for a in listed]
    assert seeded["table"].annotation_id in ids
    assert seeded["private"].annotation_id not in ids  # alice's private group
    assert seeded["csv"].annotation_id not in ids
    assert ids == sorted(ids)
    rows = bob_query.projection("select l.child.id from ImageAnnotationLink l "
                                "where l.parent.id = :id", _params(id=seeded["image"]),
                                ALL_GROUPS)
    children = {unwrap(r[0]) for r in rows}
    assert {seeded["table"].annotation_id, seeded["csv"].annotation_id} <= children
    some = bob_query.findAllByQuery(
        f"select fa from FileAnnotation fa join fetch fa.file f {DETAILS} "
        "where fa.id in (:ids) and f.mimetype = :mimetype order by fa.id",
        _params(ids=sorted(children), mimetype="OMERO.tables"), ALL_GROUPS)
    assert seeded["table"].annotation_id in [a.id.val for a in some]
    assert seeded["csv"].annotation_id not in [a.id.val for a in some]
    parents = bob_query.projection(
        "select l.parent.id, l.child.id from DatasetAnnotationLink l where l.child.id in (:ids)",
        _params(ids=[seeded["table"].annotation_id]), ALL_GROUPS)
    assert [[unwrap(c) for c in r] for r in parents] == [[seeded["dataset"],
                                                          seeded["table"].annotation_id]]


def test_object_by_id_respects_groups(bob_query, omero_world):
    shared, private = (omero_world.images[omero_world.shared_group],
                       omero_world.images[omero_world.private_group])
    hql = "select o from Image o where o.id = :id"
    assert bob_query.findByQuery(hql, _params(id=shared), ALL_GROUPS).id.val == shared
    assert bob_query.findByQuery(hql, _params(id=private), ALL_GROUPS) is None
    with pytest.raises(omero.ValidationException):
        bob_query.get("Image", private, ALL_GROUPS)


def test_owner_deletes_an_unannotated_file(omero_login, omero_world):
    alice = omero_login("alice")
    ctx = {"omero.group": str(alice.sf.getAdminService().lookupGroup("shared-lab").id.val)}
    ofile = omero.model.OriginalFileI()
    ofile.name = rstring("scratch")
    ofile.mimetype = rstring("text/plain")
    saved = alice.sf.getUpdateService().saveAndReturnObject(ofile, ctx)
    assert saved.details.owner.id.val == alice.sf.getAdminService().getEventContext().userId
    alice.sf.getUpdateService().deleteObject(omero.model.OriginalFileI(saved.id.val, False), ctx)
    assert alice.sf.getQueryService().find("OriginalFile", saved.id.val, ALL_GROUPS) is None
