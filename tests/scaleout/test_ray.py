"""Ray Data over three replica processes: one read task per endpoint, the table equal."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import flight_client
from tests.conftest import PASSWORDS
from tests.scaleout.replicas import Replicas, start_replicas

ray = pytest.importorskip("ray")

ROWS = 120_000
SPLIT = 25_000


def frame(rows: int = ROWS) -> pd.DataFrame:
    idx = pd.RangeIndex(rows)
    return pd.DataFrame({"idx": idx.to_numpy(dtype="int64"), "val": idx * 0.5})


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory):
    reps = start_replicas(tmp_path_factory.mktemp("scaleout-ray"), 3, SPLIT)
    yield reps
    reps.close()


@pytest.fixture(scope="module")
def table(replicas: Replicas) -> int:
    ann = flight_client.upload_table(frame(), "ray", parent_id=1, server=replicas.urls[1],
                                     username="alice", password=PASSWORDS["alice"],
                                     progress=False)
    return next(t["file_id"] for t in flight_client.list_tables(
        server=replicas.urls[0], username="alice", password=PASSWORDS["alice"])
        if t["annotation_id"] == ann)


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def test_one_read_task_per_endpoint_with_its_rows(replicas: Replicas, table: int) -> None:
    from flight_client.api import plan_read
    from flight_client.ray import FlightDatasource

    read = plan_read(file_id=table, server=replicas.urls[2], username="alice",
                     password=PASSWORDS["alice"])
    tasks = FlightDatasource(read).get_read_tasks(parallelism=1)
    assert len(tasks) == math.ceil(ROWS / SPLIT)
    assert [t.metadata.num_rows for t in tasks] == [p.rows for p in read.partitions]
    assert sum(t.metadata.num_rows for t in tasks) == ROWS
    assert all(t.metadata.size_bytes == t.metadata.num_rows * 24 for t in tasks)


def test_a_ray_dataset_equals_the_table(replicas: Replicas, table: int, ray_cluster) -> None:
    from flight_client.ray import read_ray

    ds = read_ray(file_id=table, server=replicas.urls[0], username="alice",
                  password=PASSWORDS["alice"])
    assert ds.count() == ROWS
    got = ds.to_pandas().sort_values("__row__").set_index("__row__")
    got.index.name = None
    got = got.astype({"idx": "int64", "val": "float64"})  # Ray hands out Arrow-backed dtypes
    pd.testing.assert_frame_equal(got, frame(), check_index_type=False)
    assert ds.sum("idx") == ROWS * (ROWS - 1) // 2
