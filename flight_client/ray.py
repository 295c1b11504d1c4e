"""A table as a Ray Dataset, one read task per partition (the ``ray`` extra).

::

    import ray
    from flight_client.ray import read_ray
    ds = read_ray(file_id=42, server="grpc://bridge-1:8815", username="alice", password="...")
    ds.sum("area")

Each block is one endpoint's rows as Arrow, with the table's row numbers in the
``__row__`` column (Ray has no index). Tasks know their row count and size before
they run; they read with the planning connection's token from any replica the
bridge lists, failing over to the next one. A ``query`` is one task.
"""

from __future__ import annotations

import functools
from typing import Any

import pyarrow as pa

from flight_client import outputs
from flight_client.api import ENGINE_ORDER, plan_read
from flight_client.partitions import Access, Partition, ReadPlan, read_partition
from flight_client.selection import takes_read_arguments

outputs.require_module("ray", "ray")

from ray.data import Datasource, ReadTask, read_datasource  # noqa: E402
from ray.data.block import BlockMetadata  # noqa: E402


def _row_bytes(schema: pa.Schema) -> int | None:
    """Bytes per row if every column has a fixed width, else None."""
    total = 0
    for f in schema:
        try:
            total += f.type.byte_width
        except ValueError:
            return None
    return total


def _read(partition: Partition, access: Access) -> list[pa.Table]:
    return [read_partition(partition, access)]


class FlightDatasource(Datasource):
    """A planned read (:func:`flight_client.partitions.plan`) as Ray read tasks."""

    def __init__(self, read: ReadPlan) -> None:
        self.read = read
        self._row_bytes = _row_bytes(read.schema)

    def estimate_inmemory_data_size(self) -> int | None:
        if self._row_bytes is None or self.read.total_rows < 0:
            return None
        return self._row_bytes * self.read.total_rows

    def get_read_tasks(self, parallelism: int,  # type: ignore[override] # across Ray versions
                       per_task_row_limit: int | None = None, **kwargs: Any) -> list[ReadTask]:
        """One task per partition whatever ``parallelism`` asks: endpoints are the unit."""
        tasks = []
        for part in self.read.partitions:
            size = (None if part.rows is None or self._row_bytes is None
                    else part.rows * self._row_bytes)
            meta = BlockMetadata(num_rows=part.rows, size_bytes=size, exec_stats=None,
                                 input_files=None)
            tasks.append(ReadTask(functools.partial(_read, part, self.read.access), meta,
                                  schema=part.schema, per_task_row_limit=per_task_row_limit))
        return tasks

    def get_name(self) -> str:
        return "OmeroFlight"


@takes_read_arguments(ENGINE_ORDER)
def read_ray(*args: Any, **kwargs: Any) -> Any:
    """A table as a ``ray.data.Dataset`` (signs in as :func:`flight_client.dask.read_dask`)."""
    return read_datasource(FlightDatasource(plan_read(*args, **kwargs)))
