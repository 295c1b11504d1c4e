"""Listing pages and continuation tokens, the same on both backends (docs/protocol.md)."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.flight as flight
import pytest

import flight_client
from flight_protocol.messages import encode_body


@pytest.fixture(scope="module")
def five_tables(site, owner):
    frame = pd.DataFrame({"x": [1, 2, 3]})
    return {flight_client.upload_table(frame, f"page {i}", parent_id=site.targets["Dataset"],
                                       parent_type="Dataset",
                                       omero_connector=owner, progress=False)
            for i in range(5)}


def _pages(conn, size: int, **where) -> list[list[int]]:
    pages, token = [], None
    while True:
        extra = {"page_token": token} if token else {}
        result = conn.transport.action("list_tables", **where, page_size=size, **extra)
        pages.append([t["annotation_id"] for t in result["tables"]])
        token = result["next_page_token"]
        if token is None:
            return pages


def test_pages_cover_the_listing_once(site, owner, peer, five_tables):
    where = {"object_type": "Dataset", "object_id": site.targets["Dataset"]}
    for conn in (owner, peer):
        pages = _pages(conn, 2, **where)
        assert all(len(p) <= 2 for p in pages) and len(pages) >= 3
        listed = [a for p in pages for a in p]
        assert len(listed) == len(set(listed))
        whole = conn.transport.action("list_tables", **where)
        assert whole["next_page_token"] is None
        assert set(listed) == {t["annotation_id"] for t in whole["tables"]} >= five_tables
    everything = [a for p in _pages(owner, 3) for a in p]
    assert five_tables <= set(everything) and len(everything) == len(set(everything))
    client_listing = flight_client.list_tables("Dataset", site.targets["Dataset"],
                                               omero_connector=owner)
    assert {t["annotation_id"] for t in client_listing} >= five_tables


def test_outsider_pages_nothing_of_others(site, outsider, five_tables):
    pages = _pages(outsider, 2, object_type="Dataset", object_id=site.targets["Dataset"])
    assert pages == [[]]


def test_list_flights_pages(site, owner, five_tables):
    client, options = owner.transport._client(), owner.transport.options()
    criteria = {"object_type": "Dataset", "object_id": site.targets["Dataset"], "page_size": 2}
    first = list(client.list_flights(encode_body(**criteria), options))
    assert len(first) == 2
    token = json.loads(first[-1].app_metadata)["next_page_token"]
    second = list(client.list_flights(encode_body(**criteria, page_token=token), options))
    ids = [json.loads(i.descriptor.command)["file_id"] for i in first + second]
    assert len(set(ids)) == len(ids) == 4
    assert all(i.total_records == 3 for i in first + second)
    assert site.open_tables() == []  # a listing keeps nothing open


@pytest.mark.parametrize(("body", "named"), [
    ({"page_size": 0}, "page_size"), ({"page_size": 5_001}, "page_size"),
    ({"page_size": "10"}, "page_size"), ({"page_token": "x1"}, "page_token"),
    ({"page_token": 12}, "page_token"), ({"page_token": "-1"}, "page_token"),
    ({"page_token": "1\n"}, "page_token"), ({"page_token": "9" * 19}, "page_token"),
])
def test_bad_pages_are_refused_by_name(owner, body, named):
    with pytest.raises(flight_client.InvalidRequest, match=named):
        owner.transport.action("list_tables", **body)
    client, options = owner.transport._client(), owner.transport.options()
    with pytest.raises(flight.FlightServerError, match=named):
        list(client.list_flights(encode_body(**body), options))
