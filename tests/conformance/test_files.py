"""Plain files (CSV, CSV.gz, others) through the client, identical on both backends."""

from __future__ import annotations

import gzip
import io

import pandas as pd
import pytest

import flight_client
from tests.conformance.test_tables import measurements

ROWS = 3000  # several 1 KiB chunks below


@pytest.fixture(scope="session")
def csv_text() -> str:
    return measurements(ROWS).to_csv(index=False)


@pytest.fixture(scope="session")
def files(site, csv_text):
    """The owner's CSV, the same gzipped, and a text file: name -> (annotation id, file id)."""
    owner = site.users["owner"][0]
    image = [("Image", site.targets["Image"])]
    return {
        "csv": site.add_file(owner, csv_text.encode(), "cells.csv", "text/csv", image),
        "gz": site.add_file(owner, gzip.compress(csv_text.encode()), "cells.csv.gz",
                            "application/x-gzip", image),
        "txt": site.add_file(owner, b"not a table\n", "notes.txt", "text/plain", image),
    }


def test_read_csv_and_csv_gz(owner, files, csv_text):
    expected = pd.read_csv(io.StringIO(csv_text))
    for name in ("csv", "gz"):
        ann, file_id = files[name]
        pd.testing.assert_frame_equal(
            flight_client.read_csv(annotation_id=ann, chunk_size=1024, omero_connector=owner),
            expected)
        subset = flight_client.read_csv(file_id=file_id, column_names=["id", "label"],
                                        omero_connector=owner)
        pd.testing.assert_frame_equal(subset, expected[["id", "label"]])


def test_download_csv_keeps_the_bytes(owner, files, csv_text, tmp_path):
    plain, packed = tmp_path / "out.csv", tmp_path / "out.csv.gz"
    flight_client.download_csv(plain, file_id=files["csv"][1], omero_connector=owner)
    assert plain.read_text() == csv_text
    flight_client.download_csv(packed, annotation_id=files["gz"][0], chunk_size=1000,
                               omero_connector=owner)
    assert gzip.decompress(packed.read_bytes()).decode() == csv_text


def test_check_type(owner, files, tmp_path):
    target = tmp_path / "notes.txt"
    with pytest.raises(ValueError, match="not a CSV"):
        flight_client.download_csv(target, file_id=files["txt"][1], omero_connector=owner)
    assert not target.exists()
    flight_client.download_csv(target, file_id=files["txt"][1], check_type=False,
                               omero_connector=owner)
    assert target.read_bytes() == b"not a table\n"


def test_a_plain_file_is_not_a_table_and_a_table_not_a_file(site, owner, files, tmp_path):
    with pytest.raises(flight_client.InvalidRequest, match="not an OMERO.table"):
        flight_client.read_table(file_id=files["csv"][1], omero_connector=owner)
    ann = flight_client.upload_table(measurements(5), "small", parent_id=site.targets["Image"],
                                     omero_connector=owner, progress=False)
    with pytest.raises(flight_client.InvalidRequest, match="is an OMERO.table"):
        flight_client.download_csv(tmp_path / "t.csv", annotation_id=ann, check_type=False,
                                   omero_connector=owner)
