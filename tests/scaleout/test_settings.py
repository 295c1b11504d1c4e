"""Replica settings, endpoint locations and resumable tickets, without a network."""

from __future__ import annotations

import json

import pytest

from flight_client.reading import resume_ticket
from flight_protocol.messages import RowRange, TableTicket, decode
from flight_server import streaming
from flight_server.config import REUSE_CONNECTION, ConfigError, load_settings


def test_advertise_and_peers_from_the_environment() -> None:
    env = {"OMERO_FLIGHT_ADVERTISE": "grpc+tls://bridge-1:8815",
           "OMERO_FLIGHT_PEERS": "grpc+tls://bridge-2:8815, grpc+tls://bridge-3:8815,"}
    settings = load_settings({}, environ=env)
    assert settings.replica_locations == ["grpc+tls://bridge-1:8815", "grpc+tls://bridge-2:8815",
                                          "grpc+tls://bridge-3:8815"]


def test_arguments_win_and_no_replicas_means_no_locations() -> None:
    assert load_settings({}, environ={}).replica_locations is None
    settings = load_settings({"peers": "grpc://b:1"},
                             environ={"OMERO_FLIGHT_PEERS": "grpc://a:1"})
    # without advertise, this replica is "the server you asked"
    assert settings.replica_locations == [REUSE_CONNECTION, "grpc://b:1"]


def test_one_peer_list_for_every_replica_leaves_out_its_own_address() -> None:
    peers = "grpc://r-0:1,grpc://r-1:1,grpc://r-2:1"
    settings = load_settings({"advertise": "grpc://r-1:1", "peers": peers}, environ={})
    assert settings.replica_locations == ["grpc://r-1:1", "grpc://r-0:1", "grpc://r-2:1"]


def test_peers_as_a_toml_list(tmp_path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text('[server]\nadvertise = "grpc://a:1"\npeers = ["grpc://b:1", "grpc://c:1"]\n')
    settings = load_settings({}, config, environ={})
    assert settings.replica_locations == ["grpc://a:1", "grpc://b:1", "grpc://c:1"]


@pytest.mark.parametrize("given", [{"advertise": "bridge-1:8815"},
                                   {"peers": "grpc://a:1,http://b:2"}])
def test_a_replica_location_must_be_a_flight_url(given: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="must be a grpc:// or grpc\\+tls:// URL"):
        load_settings(given, environ={})


def test_omero_peers_need_the_data_directory_and_a_shared_key(tmp_path) -> None:
    given = {"omero_host": "omero.example.org", "peers": "grpc://b:1"}
    for more in ({}, {"omero_data_dir": str(tmp_path)}, {"token_secret_file": "k"}):
        with pytest.raises(ConfigError, match="need omero_data_dir and token_secret_file"):
            load_settings({**given, **more}, environ={})
    settings = load_settings({**given, "omero_data_dir": str(tmp_path),
                              "token_secret_file": "k", "advertise": "grpc://a:1"}, environ={})
    assert settings.replica_locations == ["grpc://a:1", "grpc://b:1"]


def test_locations_rotate_per_endpoint() -> None:
    replicas = ["a", "b", "c"]
    assert [streaming.rotated(replicas, i)[0] for i in range(5)] == ["a", "b", "c", "a", "b"]
    assert all(sorted(streaming.rotated(replicas, i)) == replicas for i in range(5))
    assert streaming.rotated(None, 3) == []


def test_endpoint_metadata_is_the_row_range() -> None:
    ticket = TableTicket(file_id=1, rows=RowRange(10, 20))
    assert json.loads(streaming.endpoint_metadata(ticket)) == {"start": 10, "stop": 20}
    assert streaming.endpoint_metadata(TableTicket(file_id=1, query="a > 1")) == b""


def test_a_range_resumes_after_the_rows_received() -> None:
    ticket = TableTicket(file_id=1, columns=("a",), rows=RowRange(100, 200)).encode()
    assert resume_ticket(ticket, 0) == ticket
    resumed = decode(resume_ticket(ticket, 30))
    assert resumed == TableTicket(file_id=1, columns=("a",), rows=RowRange(130, 200))
    query = TableTicket(file_id=1, query="a > 1").encode()
    assert resume_ticket(query, 0) == query
    assert resume_ticket(query, 5) is None  # a query cannot resume mid-way: the read fails
