"""A row-by-row result over a large table comes as several endpoints; anything else as one."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_server.sql.messages import SQL, pack
from tests.conftest import connect_to, start_bridge
from tests.flight_server.sql.conftest import cells_frame, fsql
from tests.flight_server.wire import upload


@pytest.fixture(scope="module")
def small_splits(tmp_path_factory):
    bridge = start_bridge(tmp_path_factory.mktemp("sql-split") / "store", split_rows=1_000)
    frame = cells_frame(3_500)
    data = pa.Table.from_pandas(frame, preserve_index=False)
    file_id = upload(*connect_to(bridge, "alice"), data, "split cells")["file_id"]
    yield bridge, file_id, frame
    bridge.server.shutdown()


def endpoints(bridge, sql: str) -> list[flight.FlightEndpoint]:
    client, options = connect_to(bridge, "alice")
    command = pack(SQL["CommandStatementQuery"](query=sql))
    return client.get_flight_info(flight.FlightDescriptor.for_command(command), options).endpoints


def adbc_frame(bridge, sql: str) -> pd.DataFrame:
    conn = fsql.connect(bridge.url, db_kwargs={"username": "alice",
                                               "password": bridge.passwords["alice"]},
                        autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_df()
    finally:
        conn.close()


def test_row_by_row_statement_is_split(small_splits):
    bridge, file_id, frame = small_splits
    sql = f"SELECT well, area * 2 AS twice, upper(label) AS label FROM t_{file_id}"
    assert len(endpoints(bridge, sql)) == 4
    got = adbc_frame(bridge, sql).sort_values(["well", "twice", "label"]).reset_index(drop=True)
    want = pd.DataFrame({"well": frame.well, "twice": frame.area * 2,
                         "label": frame.label.str.upper()})
    want = want.sort_values(["well", "twice", "label"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


@pytest.mark.parametrize("tail", [
    "ORDER BY well", "LIMIT 10", "WHERE well = 3", "GROUP BY well",
])  # fmt: skip
def test_other_statements_are_one_endpoint(small_splits, tail):
    bridge, file_id, _ = small_splits
    assert len(endpoints(bridge, f"SELECT well FROM t_{file_id} {tail}")) == 1
    assert len(endpoints(bridge, f"SELECT count(*) FROM t_{file_id}")) == 1
    assert len(endpoints(bridge, f"SELECT sum(area) OVER () FROM t_{file_id}")) == 1
