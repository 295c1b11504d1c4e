"""Who sees what: the same rules on both backends (OMERO's, decided by OMERO itself there)."""

from __future__ import annotations

import pytest

import flight_client
from tests.conformance.test_tables import measurements


@pytest.fixture(scope="session")
def owners_table(site, owner) -> int:
    return flight_client.upload_table(measurements(20), "owner only?",
                                      parent_id=site.targets["Image"], omero_connector=owner,
                                      progress=False)


def listed(conn) -> set[int]:
    return {t["annotation_id"] for t in flight_client.list_tables(omero_connector=conn)}


def test_a_group_member_reads_a_read_only_groups_table(peer, owners_table, site):
    frame = flight_client.read_table(annotation_id=owners_table, omero_connector=peer)
    assert len(frame) == 20
    assert owners_table in listed(peer)
    linked = flight_client.list_tables("Image", site.targets["Image"], omero_connector=peer)
    assert owners_table in [t["annotation_id"] for t in linked]


def test_an_outsider_neither_reads_nor_lists_it(outsider, owners_table, site):
    with pytest.raises(flight_client.NotFound):  # hidden = absent, as OMERO answers
        flight_client.read_table(annotation_id=owners_table, omero_connector=outsider)
    with pytest.raises(flight_client.NotFound):  # hidden = absent, as OMERO answers
        flight_client.get_table_size(annotation_id=owners_table, omero_connector=outsider)
    assert owners_table not in listed(outsider)
    assert flight_client.list_tables("Image", site.targets["Image"],
                                     omero_connector=outsider) == []


def test_the_outsiders_own_table_is_theirs_alone(outsider, owner, peer, site):
    mine = flight_client.upload_table(measurements(3), "private", parent_id=site.outsider_image,
                                      omero_connector=outsider, progress=False)
    assert mine in listed(outsider)
    assert mine not in listed(owner) and mine not in listed(peer)
    with pytest.raises(flight_client.NotFound):  # hidden = absent, as OMERO answers
        flight_client.read_table(annotation_id=mine, omero_connector=owner)


def test_missing_ids_are_not_found(owner):
    with pytest.raises(flight_client.NotFound):
        flight_client.read_table(annotation_id=987654, omero_connector=owner)
    with pytest.raises(flight_client.NotFound):
        flight_client.read_csv(file_id=987654, omero_connector=owner)
