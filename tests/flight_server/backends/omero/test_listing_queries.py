"""Listings filter and page in OMERO's own query: the stand-in records the HQL it was sent.

Each listing page is one query with the OMERO.tables mimetype, the link kind
(and object) and a page limit in it; the follow-up queries name at most a
page of ids. Links to other annotations (CSV attachments here) never make a
page longer or reach the bridge.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.flight as flight
import pytest

pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

import flight_client  # noqa: E402
from flight_protocol.messages import encode_body  # noqa: E402

pytestmark = pytest.mark.omero

PAGE = 2


@pytest.fixture(scope="module")
def image_with_tables(omero_bridge):
    """An Image of alice's with five tables and three CSV attachments linked to it."""
    seed, group = omero_bridge.standin.seed, omero_bridge.world.shared_group
    image = seed.image("alice", group, "listing image")
    frame = pd.DataFrame({"x": [1, 2]})
    tables = [seed.table("alice", group, frame, f"listed {i}", links=[("Image", image)])
              for i in range(5)]
    for i in range(3):
        seed.csv("alice", group, frame, f"not a table {i}.csv", links=[("Image", image)])
    return image, {t.annotation_id for t in tables}


def _queries_since(standin, mark: int) -> list[dict]:
    return standin.queries()[mark:]


def _list_params(queries: list[dict]) -> list[int]:
    return [p["list"] for q in queries for p in q["params"].values() if isinstance(p, dict)]


def test_pages_filter_and_link_in_the_query(omero_bridge, sign_in, image_with_tables):
    image, tables = image_with_tables
    bob = sign_in("bob")
    standin = omero_bridge.standin
    mark = len(standin.queries())
    pages, token = [], None
    while True:
        body = {"object_type": "Image", "object_id": image, "page_size": PAGE}
        result = bob.transport.action("list_tables", **body,
                                      **({"page_token": token} if token else {}))
        pages.append([t["annotation_id"] for t in result["tables"]])
        token = result["next_page_token"]
        if token is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert {a for p in pages for a in p} == tables
    sent = _queries_since(standin, mark)
    listing = [q for q in sent if q["hql"].startswith("select fa from FileAnnotation")]
    assert len(listing) == len(pages)
    for query in listing:
        assert "f.mimetype = :mimetype" in query["hql"]
        assert query["params"]["mimetype"] == "OMERO.tables"
        assert "in (select l.child.id from ImageAnnotationLink l where l.parent.id = :id)" \
            in query["hql"]
        assert query["params"]["id"] == image
        assert query["limit"] == PAGE
    assert [q["params"]["after"] for q in listing][0] == -1
    assert max(_list_params(sent)) <= PAGE  # no id list longer than a page
    assert not [q for q in sent if q["hql"].startswith("select l.child.id")]  # no link dump


def test_listing_by_kind_and_everything_page_in_the_query(omero_bridge, sign_in,
                                                          image_with_tables):
    _, tables = image_with_tables
    alice = sign_in("alice")
    standin = omero_bridge.standin
    mark = len(standin.queries())
    everything = {t["annotation_id"] for t in flight_client.list_tables(omero_connector=alice)}
    kind = alice.transport.action("list_tables", object_type="Image", page_size=PAGE)
    assert len(kind["tables"]) == PAGE and kind["next_page_token"]
    assert tables <= everything
    sent = _queries_since(standin, mark)
    listing = [q for q in sent if q["hql"].startswith("select fa from FileAnnotation")]
    assert listing and all("f.mimetype = :mimetype" in q["hql"] and q["limit"] for q in listing)
    assert any("in (select l.child.id from ImageAnnotationLink l)" in q["hql"] for q in listing)
    assert max(_list_params(sent)) <= 5_000


def test_list_flights_pages_with_a_token(omero_bridge, sign_in, image_with_tables):
    image, tables = image_with_tables
    bob = sign_in("bob")
    client, options = bob.transport._client(), bob.transport.options()
    seen, token, pages = [], None, 0
    while True:
        criteria = {"object_type": "Image", "object_id": image, "page_size": PAGE}
        if token:
            criteria["page_token"] = token
        infos = list(client.list_flights(encode_body(**criteria), options))
        pages += 1
        assert len(infos) <= PAGE
        seen += [json.loads(i.descriptor.command)["file_id"] for i in infos]
        last = infos[-1].app_metadata if infos else b""
        token = json.loads(last)["next_page_token"] if last else None
        if token is None:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == len(tables)
    with pytest.raises(flight.FlightServerError, match="page_token"):
        list(client.list_flights(encode_body(page_token="not-a-token"), options))
