"""A bridge per backend with two tables to query over Flight SQL, and ADBC connections to it.

``sql_site`` is parametrized over ``"embedded"`` (a LocalStore) and ``"omero"``
(the OMERO backend against the OMERO stand-in over real Ice; skipped with the
reason when omero-py is missing). On each, ``alice`` owns ``cells`` (one row per
cell: well, image, area, label, flag) and ``wells`` (one row per well:
treatment, dose) in a group her peers can read; ``carol`` owns a table in her
private group. ``adbc(role)`` opens a real ``adbc_driver_flightsql`` DB-API
connection with user name and password.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import flight_client
from flight_server.service import FlightService
from flight_server.sql import face
from flight_server.sql.handlers import SqlFace
from tests.conftest import start_bridge
from tests.standin.fixtures import omero_standin  # noqa: F401 - session fixture, used below

fsql = pytest.importorskip("adbc_driver_flightsql.dbapi")

CELLS = 3_000
WELLS = 24


def cells_frame(rows: int = CELLS, seed: int = 17) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "well": rng.integers(1, WELLS + 1, rows).astype(np.int64),
        "image": rng.integers(100, 140, rows).astype(np.int64),
        "area": np.round(rng.gamma(4.0, 25.0, rows), 3),
        "label": rng.choice(["nucleus", "cytoplasm", "membrane"], rows),
        "flag": rng.random(rows) < 0.3,
    })  # fmt: skip


def wells_frame() -> pd.DataFrame:
    wells = np.arange(1, WELLS + 1, dtype=np.int64)
    return pd.DataFrame({
        "well": wells,
        "treatment": np.where(wells % 3 == 0, "control", np.where(wells % 3 == 1, "drug-a",
                                                                   "drug-b")),
        "dose": (wells % 5) * 0.25,
    })  # fmt: skip


@dataclass
class Table:
    name: str  # the file name given at upload
    annotation_id: int
    file_id: int
    frame: pd.DataFrame


@dataclass
class SqlSite:
    kind: str
    url: str
    users: dict[str, tuple[str, str]]  # role -> (user name, password)
    server: FlightService
    tables: dict[str, Table] = field(default_factory=dict)

    @property
    def face(self) -> SqlFace:
        return face(self.server)

    def adbc(self, role: str = "owner") -> Any:
        username, password = self.users[role]
        return fsql.connect(self.url, db_kwargs={"username": username, "password": password},
                            autocommit=True)

    def client(self, role: str = "owner") -> flight_client.Connection:
        username, password = self.users[role]
        host, port = self.url.removeprefix("grpc://").rsplit(":", 1)
        return flight_client.connect_to_omero(server=host, port=int(port), username=username,
                                              password=password, interactive=False,
                                              keep_alive=False)


def _upload(conn: flight_client.Connection, frame: pd.DataFrame, name: str,
            parent: int) -> Table:
    ann = flight_client.upload_table(frame, name, parent_id=parent, omero_connector=conn,
                                     progress=False)
    entry = next(t for t in flight_client.list_tables(omero_connector=conn)
                 if t["annotation_id"] == ann)
    return Table(name, ann, entry["file_id"], frame)


def _seed_tables(site: SqlSite, owner_image: int, outsider_image: int) -> None:
    tag = uuid.uuid4().hex[:6]
    with site.client("owner") as conn:
        site.tables["cells"] = _upload(conn, cells_frame(), f"sql cells {tag}.h5", owner_image)
        site.tables["wells"] = _upload(conn, wells_frame(), f"sql wells {tag}", owner_image)
    with site.client("outsider") as conn:
        site.tables["secret"] = _upload(conn, cells_frame(50, seed=3), f"secret {tag}",
                                        outsider_image)


def _embedded(tmp: Path) -> Iterator[SqlSite]:
    bridge = start_bridge(tmp / "store")
    users = {role: (name, bridge.passwords[name])
             for role, name in (("owner", "alice"), ("peer", "bob"), ("outsider", "carol"))}
    site = SqlSite("embedded", bridge.url, users, bridge.server)
    _seed_tables(site, 11, 12)
    yield site
    bridge.server.shutdown()


def _omero(standin: Any) -> Iterator[SqlSite]:
    from flight_server.backends.omero import OmeroBackend

    seed = standin.seed
    shared, private = "sql-lab", "sql-secret"
    seed.group(shared, "rwr---")
    seed.group(private, "rw----")
    names = {"owner": "sql-alice", "peer": "sql-bob", "outsider": "sql-carol"}
    seed.user(names["owner"], "sql-alice-pw", [shared])
    seed.user(names["peer"], "sql-bob-pw", [shared])
    seed.user(names["outsider"], "sql-carol-pw", [private])
    owner_image = seed.image(names["owner"], shared, "sql image")
    outsider_image = seed.image(names["outsider"], private, "sql secret image")
    backend = OmeroBackend(standin.host, standin.port)
    server = FlightService(backend, "grpc://127.0.0.1:0")
    users = {role: (name, seed.passwords[name]) for role, name in names.items()}
    site = SqlSite("omero", f"grpc://127.0.0.1:{server.port}", users, server)
    _seed_tables(site, owner_image, outsider_image)
    yield site
    server.shutdown()
    backend.close()


@pytest.fixture(scope="session",
                params=["embedded", pytest.param("omero", marks=pytest.mark.omero)])
def sql_site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[SqlSite]:
    if request.param == "embedded":
        yield from _embedded(tmp_path_factory.mktemp("sql-embedded"))
    else:
        yield from _omero(request.getfixturevalue("omero_standin"))


@pytest.fixture(scope="session")
def owner_sql(sql_site: SqlSite) -> Iterator[Any]:
    conn = sql_site.adbc("owner")
    yield conn
    conn.close()


@pytest.fixture
def query(owner_sql: Any) -> Callable[[str], pd.DataFrame]:
    def run(sql: str) -> pd.DataFrame:
        with owner_sql.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_df()
    return run
