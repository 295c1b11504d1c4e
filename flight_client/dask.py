"""A table as a Dask DataFrame, one partition per endpoint (the ``dask`` extra).

::

    from flight_client.dask import read_dask
    df = read_dask(file_id=42, server="grpc://bridge-1:8815", username="alice",
                   password="...")
    df.loc[1_000_000:1_999_999, ["area"]].mean().compute()

The index is the table's row numbers; for a plain range read the divisions are
known, so ``.loc`` reads only the partitions it needs. A column selection made
on the DataFrame reaches the tickets (only those columns travel). A ``query``
is evaluated by the bridge (one partition, unknown divisions). Workers read with
the planning connection's bearer token, never the password, from any replica
the bridge lists, failing over to the next one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import pyarrow as pa

from flight_client import outputs
from flight_client.api import ENGINE_ORDER, plan_read
from flight_client.partitions import Access, Partition, ReadPlan, read_partition
from flight_client.selection import takes_read_arguments
from flight_protocol.messages import ROW_NUMBER_COLUMN


def read_frame(partition: Partition, access: Access,
               columns: Iterable[str] | None = None) -> pd.DataFrame:
    """One partition as pandas; Dask passes the columns it needs, and only they travel."""
    if columns is None:
        return outputs.to_pandas(read_partition(partition, access))
    wanted = [c for c in columns if c != ROW_NUMBER_COLUMN]  # none: only the row numbers
    frame = outputs.to_pandas(read_partition(partition.with_columns(tuple(wanted)), access))
    return frame[wanted]  # in the order Dask asked for


def _divisions(read: ReadPlan) -> tuple[int, ...] | None:
    parts = read.partitions
    starts = [p.start for p in parts if p.start is not None and p.rows is not None and p.rows > 0]
    last = parts[-1].stop if parts else None
    if not parts or len(starts) < len(parts) or last is None or starts != sorted(starts):
        return None
    return (*starts, last - 1)


def _meta(schema: pa.Schema) -> pd.DataFrame:
    return outputs.to_pandas(schema.empty_table())


def from_plan(read: ReadPlan, columns: Iterable[str] | None = None) -> Any:
    """A Dask DataFrame over a planned read."""
    outputs.require_module("dask.dataframe", "dask")
    import dask.dataframe as dd
    meta = _meta(read.schema)
    df = dd.from_map(read_frame, list(read.partitions), args=[read.access], meta=meta,
                     divisions=_divisions(read), label="omero-flight", enforce_metadata=False)
    if columns is not None:
        df = df[list(columns)]
    return df


@takes_read_arguments(ENGINE_ORDER)
def read_dask(*args: Any, **kwargs: Any) -> Any:
    """A table as a lazy ``dask.dataframe.DataFrame`` indexed by row number.

    With ``omero_connector`` (a :class:`~flight_client.connection.Connection`), the
    workers use its token: keep it open until the computation ends. Otherwise this
    signs in once and leaves that sign-in open until its token expires (the
    bridge's ``token_lifetime``), as the DataFrame is lazy.
    """
    outputs.require_module("dask.dataframe", "dask")
    return from_plan(plan_read(*args, **kwargs))
