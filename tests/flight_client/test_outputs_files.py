"""Plain files through the client: upload_file, then read_csv / download_csv on what it stored."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

import flight_client
from tests.flight_client.conftest import IMAGE


def test_upload_file_then_read_and_download(conn, tmp_path):
    frame = pd.DataFrame({"id": [1, 2, 3], "label": ["a, b", 'say "hi"', "c"]})
    source = tmp_path / "results.csv.gz"
    source.write_bytes(gzip.compress(frame.to_csv(index=False).encode()))
    ann = flight_client.upload_file(source, parent_id=IMAGE, omero_connector=conn,
                                    progress=False)
    pd.testing.assert_frame_equal(
        flight_client.read_csv(annotation_id=ann, omero_connector=conn), frame)
    target = tmp_path / "copy.csv.gz"
    assert flight_client.download_csv(target, annotation_id=ann, omero_connector=conn,
                                      progress=False) == source.stat().st_size
    assert target.read_bytes() == source.read_bytes()


def test_read_csv_check_type_false_reads_other_plain_files(conn, tmp_path):
    source = tmp_path / "measurements.tsv"
    source.write_text("id\tarea\n1\t2.5\n2\t3.0\n")
    ann = flight_client.upload_file(source, parent_id=IMAGE, omero_connector=conn,
                                    progress=False)
    with pytest.raises(flight_client.InvalidRequest, match="not a CSV"):
        flight_client.read_csv(annotation_id=ann, omero_connector=conn)
    df = flight_client.read_csv(annotation_id=ann, check_type=False, sep="\t",
                                omero_connector=conn)
    assert df.to_dict("list") == {"id": [1, 2], "area": [2.5, 3.0]}
