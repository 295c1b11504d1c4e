"""Two ``omero-flight serve`` replicas in front of the OMERO stand-in, reading its data directory.

The replica that plans a read authorizes it through the caller's OMERO session and
signs every endpoint's ticket; the other replica holds no session for the caller and
serves those tickets from the HDF5 files in OMERO's data directory. Real processes on
loopback, real omero-py over Ice, Dask's distributed scheduler with worker processes
and Ray Data.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow.flight as flight
import pytest

pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

import flight_client  # noqa: E402
from flight_protocol.messages import RowRange, TableTicket, decode  # noqa: E402
from flight_server.streaming import MAX_ENDPOINTS  # noqa: E402
from tests.processes import CLI, free_port, wait_signed_in  # noqa: E402
from tests.scaleout.replicas import Replicas, write_key  # noqa: E402

pytestmark = pytest.mark.omero

#: The issue's 2,000,000 rows; OMERO_FLIGHT_OMERO_SCALEOUT_ROWS lowers it on a slow machine.
ROWS = int(os.environ.get("OMERO_FLIGHT_OMERO_SCALEOUT_ROWS", "2000000"))
SPLIT = -(-ROWS // MAX_ENDPOINTS)  # 16 endpoints


def frame() -> pd.DataFrame:
    idx = np.arange(ROWS, dtype="int64")
    return pd.DataFrame({"idx": idx, "val": idx * 0.25, "grp": idx % 7})


@pytest.fixture(scope="module")
def replicas(omero_standin, omero_world, tmp_path_factory) -> Iterator[Replicas]:
    folder = tmp_path_factory.mktemp("omero-replicas")
    key = write_key(folder / "token.key")
    ports = [free_port() for _ in range(2)]
    urls = [f"grpc://127.0.0.1:{p}" for p in ports]
    reps = Replicas(folder, urls)
    try:
        for i, port in enumerate(ports):
            reps.processes.append(subprocess.Popen(
                CLI + ["serve", "--port", str(port), "--omero-host", omero_standin.host,
                       "--omero-port", str(omero_standin.port),
                       "--omero-data-dir", str(omero_standin.data_dir),
                       "--token-secret-file", str(key), "--advertise", urls[i],
                       "--peers", urls[1 - i], "--split-rows", str(SPLIT)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for url, proc in zip(urls, reps.processes, strict=True):
            wait_signed_in(url, proc, "alice", omero_standin.passwords["alice"], 120)
        yield reps
    finally:
        reps.close()


@pytest.fixture(scope="module")
def login(omero_standin) -> dict[str, str]:
    return {"username": "alice", "password": omero_standin.passwords["alice"]}


@pytest.fixture(scope="module")
def table(replicas: Replicas, omero_world, login) -> int:
    """alice's 2-million-row table, uploaded through replica 1 into OMERO: its file id."""
    image = omero_world.images[omero_world.private_group]
    ann = flight_client.upload_table(frame(), "omero-scaleout", parent_id=image,
                                     server=replicas.urls[1], progress=False, **login)
    tables = flight_client.list_tables(server=replicas.urls[1], **login)
    return next(t["file_id"] for t in tables if t["annotation_id"] == ann)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def sign_in(url: str, login: dict[str, str]) -> tuple[flight.FlightClient,
                                                        flight.FlightCallOptions]:
    client = flight.FlightClient(url)
    header = client.authenticate_basic_token(login["username"], login["password"])
    return client, flight.FlightCallOptions(headers=[header], timeout=120)


def test_endpoints_name_both_replicas_and_the_other_serves_them_without_a_session(
        replicas: Replicas, table: int, login) -> None:
    client, options = sign_in(replicas.urls[0], login)
    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(TableTicket(file_id=table).encode()), options)
    me = json.loads(next(iter(client.do_action(("whoami", b"{}"), options))).body.to_pybytes())
    assert info.total_records == ROWS and len(info.endpoints) == MAX_ENDPOINTS
    for i, endpoint in enumerate(info.endpoints):
        locations = [loc.uri.decode() for loc in endpoint.locations]
        assert locations == (replicas.urls if i % 2 == 0 else replicas.urls[::-1])
        assert decode(endpoint.ticket.ticket).grant["user"] == me["user_id"]
    other = flight.FlightClient(replicas.urls[1])
    # replica 1 holds no OMERO session for this token: it serves signed tickets only
    last = info.endpoints[-1]
    got = other.do_get(last.ticket, options).read_all()
    start = (MAX_ENDPOINTS - 1) * SPLIT
    assert got.column("__row__").to_pylist() == list(range(start, ROWS))
    assert got.column("val").to_pylist() == [r * 0.25 for r in range(start, ROWS)]
    plain = TableTicket(file_id=table, rows=RowRange(0, 10))
    held = "sign-in is not held by this replica"
    with pytest.raises(flight.FlightUnauthenticatedError, match=held):
        other.do_get(flight.Ticket(plain.encode()), options).read_all()
    with pytest.raises(flight.FlightUnauthenticatedError, match=held):
        other.get_flight_info(flight.FlightDescriptor.for_command(plain.encode()), options)
    for action in ("whoami", "list_tables"):
        with pytest.raises(flight.FlightUnauthenticatedError, match=held):
            next(iter(other.do_action((action, b"{}"), options)))
    # signed in on replica 1 itself, a plain ticket is read through the caller's own session
    mine = sign_in(replicas.urls[1], login)[1]
    assert other.do_get(flight.Ticket(plain.encode()), mine).read_all().num_rows == 10
    other.close()
    client.close()


def test_dask_distributed_read_equals_the_table(replicas: Replicas, table: int, login,
                                                dask_client) -> None:
    from flight_client.dask import read_dask

    df = read_dask(file_id=table, server=replicas.urls[0], **login)
    assert df.npartitions == MAX_ENDPOINTS and df.known_divisions
    pd.testing.assert_frame_equal(df.compute(), frame(), check_index_type=False)


def test_a_ray_dataset_equals_the_table(replicas: Replicas, table: int, login) -> None:
    ray = pytest.importorskip("ray")
    from flight_client.ray import read_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ds = read_ray(file_id=table, server=replicas.urls[1], **login)
        got = ds.to_pandas().sort_values("__row__").set_index("__row__")
    finally:
        ray.shutdown()
    got.index.name = None
    got = got.astype({"idx": "int64", "val": "float64", "grp": "int64"})  # Arrow-backed
    pd.testing.assert_frame_equal(got, frame(), check_index_type=False)


def test_a_signed_ticket_for_a_crafted_file_is_refused_by_the_hdf5_check(
        replicas: Replicas, omero_standin, omero_world, login, tmp_path) -> None:
    """A replica serving a signed ticket without a session trusts the signature, not the
    file: one that reaches outside itself is refused before PyTables reads it."""
    import shutil

    from flight_server.repository import original_file_path
    from tests.flight_server import hostile_hdf5

    outside = tmp_path / "outside-secret"
    outside.write_bytes(b"SECRET-CANARY-" * 64)
    image = omero_world.images[omero_world.private_group]
    ann = flight_client.upload_table(pd.DataFrame({"n": [1, 2]}), "crafted", parent_id=image,
                                     server=replicas.urls[0], progress=False, **login)
    file_id = next(t["file_id"] for t in flight_client.list_tables(server=replicas.urls[0],
                                                                   **login)
                   if t["annotation_id"] == ann)
    client, options = sign_in(replicas.urls[0], login)
    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(TableTicket(file_id=file_id).encode()), options)
    client.close()
    # signed while the file was a real table; then its bytes on OMERO's disk change
    shutil.copyfile(hostile_hdf5.external_storage(tmp_path / "ext.h5", outside),
                    original_file_path(omero_standin.data_dir, file_id))
    other = flight.FlightClient(replicas.urls[1])
    with pytest.raises(flight.FlightServerError) as refused:
        other.do_get(info.endpoints[0].ticket, options).read_all()
    other.close()
    assert json.loads(refused.value.extra_info)["code"] == "invalid_argument"
    assert "SECRET-CANARY" not in str(refused.value)


def test_a_file_read_names_only_the_replica_holding_the_session(
        replicas: Replicas, omero_world, login, tmp_path) -> None:
    from flight_protocol.messages import FileTicket

    csv = tmp_path / "plain.csv"
    csv.write_bytes(b"a,b\n1,2\n")
    image = omero_world.images[omero_world.private_group]
    ann = flight_client.upload_file(csv, parent_id=image, server=replicas.urls[1],
                                    progress=False, **login)
    client, options = sign_in(replicas.urls[1], login)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(
        FileTicket(annotation_id=ann).encode()), options)
    (endpoint,) = info.endpoints
    assert [loc.uri.decode() for loc in endpoint.locations] == [replicas.urls[1]]
    data = client.do_get(endpoint.ticket, options).read_all()
    client.close()
    assert b"".join(data.column("data").to_pylist()) == b"a,b\n1,2\n"


def test_a_dask_read_completes_when_the_planning_replica_is_killed_mid_read(
        replicas: Replicas, table: int, login, dask_client) -> None:
    """Runs last: replica 0, which planned the read and holds the OMERO session, goes away
    once the first partitions are in; replica 1 serves the rest from the data directory."""
    import distributed

    from flight_client.dask import read_dask

    df = read_dask(file_id=table, server=replicas.urls[0], **login)
    futures = dask_client.compute(df.to_delayed())
    done = next(iter(distributed.as_completed(futures)))
    assert done.status == "finished"
    assert sum(f.done() for f in futures) < len(futures)  # the read is under way
    replicas.stop(0)
    got = pd.concat(dask_client.gather(futures))
    pd.testing.assert_frame_equal(got, frame(), check_index_type=False)
