"""Tables only from trusted bytes (issue 10, finding 0), through a real Flight server.

(a) A file a user uploads as a plain file is data: it can never become a table,
whatever its mimetype or content, in a new store or in one from before the
catalog recorded which files the bridge wrote as tables.

(b) Every HDF5 file is checked before any read: external storage aimed at a
file outside the store and at the store's own token-signing key, external and
soft links, virtual datasets and pickled attributes are refused with
``invalid_argument``, and nothing of their target comes back. The crafted
files replace the bytes of a table the bridge wrote (as a damaged or tampered
store would hold them), so the check is what stops them, not the catalog.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_protocol.messages import FileTicket, FileUploadDescriptor, TableTicket
from flight_server.backends.formats.hdf5 import H5Reader
from flight_server.backends.local import LocalStore
from flight_server.errors import InvalidArgument
from flight_server.repository import original_file_path
from tests.conftest import Bridge, connect_to, start_bridge
from tests.flight_server import hostile_hdf5 as hostile
from tests.flight_server.wire import error_code, upload

CANARY_TEXT = b"root:x:0:0:CANARY-PASSWD-LINE-7f3a:/root:/bin/bash\n" * 8


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    b = start_bridge(tmp_path_factory.mktemp("trusted") / "store")
    yield b
    assert b.server is not None
    b.server.shutdown()


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A /etc/passwd-like file outside the store."""
    path = tmp_path_factory.mktemp("outside") / "passwd"
    path.write_bytes(CANARY_TEXT)
    return path


def _put_file(client: flight.FlightClient, options: flight.FlightCallOptions, name: str,
              payload: bytes, mimetype: str) -> dict:
    descriptor = flight.FlightDescriptor.for_command(
        FileUploadDescriptor(name, mimetype=mimetype).encode())
    schema = pa.schema([("data", pa.binary())])
    writer, reader = client.do_put(descriptor, schema, options=options)
    with writer:
        writer.write_batch(pa.record_batch([pa.array([payload])], schema=schema))
        writer.done_writing()
        return json.loads(reader.read().to_pybytes())


def _table(client: flight.FlightClient, options: flight.FlightCallOptions, name: str) -> int:
    data = pa.table({"s": ["private row 1", "private row 2"], "n": [1, 2]})
    return upload(client, options, data, name)["file_id"]


def _refusals(client: flight.FlightClient, options: flight.FlightCallOptions,
              file_id: int) -> list[flight.FlightError]:
    """Every way to read a table: each must be refused."""
    ticket = TableTicket(file_id=file_id).encode()
    calls: list[Callable[[], object]] = [
        lambda: client.do_get(flight.Ticket(ticket), options=options).read_all(),
        lambda: client.get_flight_info(flight.FlightDescriptor.for_command(ticket),
                                       options=options),
        lambda: list(client.do_action(flight.Action("table_size", ticket), options=options)),
    ]
    errors = []
    for call in calls:
        with pytest.raises(flight.FlightError) as info:
            call()
        errors.append(info.value)
    return errors


def _assert_refused(errors: list[flight.FlightError], secrets: list[bytes],
                    why: str) -> None:
    for exc in errors:
        assert error_code(exc) == "invalid_argument", exc
        message = json.loads(exc.extra_info)["message"]
        assert why in message
        for secret in secrets:
            for piece in (secret[:12], secret[-12:]):
                assert piece not in message.encode() and piece.hex() not in message


# -- (a) uploaded files are data -------------------------------------------------------------

def test_plain_file_cannot_claim_the_table_mimetype(bridge, tmp_path):
    client, options = connect_to(bridge, "alice")
    payload = hostile.template(tmp_path / "valid.h5").read_bytes()
    before = [t.file.file_id for t in bridge.store.list_tables(bridge.store.lookup_caller("root"))]
    with pytest.raises(flight.FlightError) as info:
        _put_file(client, options, "table.h5", payload, "OMERO.tables")
    assert error_code(info.value) == "invalid_argument"
    assert "OMERO.tables" in str(info.value) and "upload_table" in str(info.value)
    after = [t.file.file_id for t in bridge.store.list_tables(bridge.store.lookup_caller("root"))]
    assert after == before
    assert list(bridge.store.tmp.iterdir()) == []


def test_uploaded_hdf5_file_is_never_a_table(bridge, tmp_path, outside):
    client, options = connect_to(bridge, "alice")
    payload = hostile.external_storage(tmp_path / "evil.h5", outside).read_bytes()
    info = _put_file(client, options, "evil.h5", payload, "application/x-hdf5")
    errors = _refusals(client, options, info["file_id"])
    _assert_refused(errors, [CANARY_TEXT], "is a plain file, not an OMERO.table")
    listed = [t.file.file_id for t in bridge.store.list_tables(bridge.store.lookup_caller("alice"))]
    assert info["file_id"] not in listed
    # It is data, and reads back as the bytes that were uploaded.
    stream = client.do_get(flight.Ticket(FileTicket(file_id=info["file_id"],
                                                    check_type=False).encode()), options=options)
    assert b"".join(v.as_py() for chunk in stream for v in chunk.data.column(0)) == payload


def test_store_from_before_table_marks_keeps_uploads_as_data(tmp_path, outside):
    """Migration: in an old catalog, only OMERO.tables files with a row count are tables."""
    store = LocalStore(tmp_path / "store")
    store.add_group("lab", "read-only")
    store.add_user("alice", "pw-alice-1", ["lab"])
    table = store.add_file("alice", b"placeholder", "old.csv")  # becomes the old table below
    plain = store.add_file("alice", hostile.external_storage(tmp_path / "e.h5", outside),
                           "uploaded.h5", mimetype="application/x-hdf5")
    hostile.template(original_file_path(store.path, table.file_id))
    store.catalog.close()
    store.close()
    with sqlite3.connect(store.path / "catalog.sqlite") as db:  # the catalog as it was
        db.execute("ALTER TABLE original_files DROP COLUMN is_table")
        db.execute("UPDATE original_files SET mimetype = 'OMERO.tables', rows = 2 WHERE id = ?",
                   (table.file_id,))
        db.execute("UPDATE original_files SET mimetype = 'OMERO.tables' WHERE id = ?",
                   (plain.file_id,))
    reopened = LocalStore(store.path)
    caller = reopened.lookup_caller("alice")
    assert [t.file.file_id for t in reopened.list_tables(caller)] == [table.file_id]
    from flight_server.backends.base import TableRef

    with reopened.open_table(caller, TableRef(file_id=table.file_id)) as handle:
        assert handle.read_range(["s"], 0, 2).column(0).to_pylist() == ["row 0", "row 1"]
    with pytest.raises(InvalidArgument, match="uploaded as a plain file"):
        reopened.open_table(caller, TableRef(file_id=plain.file_id))
    LocalStore(store.path).close()  # the migration runs once; opening again changes nothing
    assert [t.file.file_id for t in reopened.list_tables(caller)] == [table.file_id]


# -- (b) every HDF5 file is checked before any read ------------------------------------------

def _tampered(bridge: Bridge, owner: str, name: str, craft: Callable[[Path], Path],
              tmp_path: Path) -> int:
    """A table the bridge wrote, whose bytes are then replaced by a crafted file."""
    client, options = connect_to(bridge, owner)
    file_id = _table(client, options, name)
    crafted = craft(tmp_path / f"{name}.h5")
    shutil.copyfile(crafted, original_file_path(bridge.store_path, file_id))
    return file_id


def test_external_storage_aimed_outside_the_store_is_refused(bridge, tmp_path, outside):
    file_id = _tampered(bridge, "alice", "passwd",
                        lambda p: hostile.external_storage(p, outside), tmp_path)
    errors = _refusals(*connect_to(bridge, "alice"), file_id)
    _assert_refused(errors, [CANARY_TEXT], "keeps its data in external files")


def test_external_storage_aimed_at_the_signing_key_is_refused(bridge, tmp_path):
    key_path = bridge.store_path / "secret.key"
    key = bridge.store.token_secret()
    assert key_path.read_bytes() == key
    file_id = _tampered(bridge, "alice", "key",
                        lambda p: hostile.external_storage(p, key_path), tmp_path)
    errors = _refusals(*connect_to(bridge, "alice"), file_id)
    _assert_refused(errors, [key], "keeps its data in external files")


def test_external_column_types_are_refused(bridge, tmp_path, outside):
    file_id = _tampered(bridge, "alice", "types",
                        lambda p: hostile.external_column_types(p, outside), tmp_path)
    errors = _refusals(*connect_to(bridge, "alice"), file_id)
    _assert_refused(errors, [CANARY_TEXT], "/OME/ColumnTypes keeps its data in external files")


def _private_table_of_carol(bridge: Bridge) -> Path:
    carol = connect_to(bridge, "carol")
    return original_file_path(bridge.store_path, _table(*carol, "carol-private"))


def test_external_link_to_another_users_table_is_refused(bridge, tmp_path):
    target = _private_table_of_carol(bridge)
    file_id = _tampered(bridge, "alice", "extlink",
                        lambda p: hostile.external_link(p, target), tmp_path)
    errors = _refusals(*connect_to(bridge, "alice"), file_id)
    _assert_refused(errors, [b"private row"], "/OME/Measurements is an external link")


def test_soft_link_is_refused(bridge, tmp_path):
    file_id = _tampered(bridge, "alice", "softlink", hostile.soft_link, tmp_path)
    errors = _refusals(*connect_to(bridge, "alice"), file_id)
    _assert_refused(errors, [], "/OME/Measurements is a soft link")


def test_virtual_dataset_over_another_users_table_is_refused(bridge, tmp_path):
    target = _private_table_of_carol(bridge)
    file_id = _tampered(bridge, "alice", "vds", lambda p: hostile.virtual(p, target), tmp_path)
    errors = _refusals(*connect_to(bridge, "alice"), file_id)
    _assert_refused(errors, [b"private row"], "virtual dataset")


def test_pickled_attribute_is_refused_and_never_run(bridge, tmp_path):
    canary = tmp_path / "canary-attribute"
    file_id = _tampered(bridge, "alice", "pickle",
                        lambda p: hostile.pickled_attribute(p, canary), tmp_path)
    errors = _refusals(*connect_to(bridge, "alice"), file_id)
    _assert_refused(errors, [], "is a pickle that runs code")
    assert not canary.exists()


def test_pickled_mask_rows_are_refused_and_never_run(bridge, tmp_path):
    canary = tmp_path / "canary-masks"
    file_id = _tampered(bridge, "alice", "masks",
                        lambda p: hostile.pickled_masks(p, canary), tmp_path)
    errors = _refusals(*connect_to(bridge, "alice"), file_id)
    _assert_refused(errors, [], "Measurements_masks")
    assert not canary.exists()


def test_the_reader_itself_refuses_each_crafted_file(tmp_path, outside):
    """H5Reader, which the OMERO backend's direct reads use too, refuses every kind."""
    other = hostile.template(tmp_path / "other.h5")
    canary = tmp_path / "canary"
    crafted = {
        "external storage": hostile.external_storage(tmp_path / "a.h5", outside),
        "external types": hostile.external_column_types(tmp_path / "b.h5", outside),
        "external link": hostile.external_link(tmp_path / "c.h5", other),
        "soft link": hostile.soft_link(tmp_path / "d.h5"),
        "virtual": hostile.virtual(tmp_path / "e.h5", other),
        "pickled attribute": hostile.pickled_attribute(tmp_path / "f.h5", canary),
        "pickled masks": hostile.pickled_masks(tmp_path / "g.h5", canary),
        "pickled text": hostile.pickled_attribute(tmp_path / "h.h5", canary, variable=True),
        "reference": hostile.reference_attribute(tmp_path / "i.h5"),
    }
    for kind, path in crafted.items():
        with pytest.raises(InvalidArgument, match="not a plain OMERO.tables file"):
            H5Reader(path)
        assert not canary.exists(), kind
    with H5Reader(hostile.template(tmp_path / "plain.h5")) as handle:
        assert handle.read_range(["s", "n"], 0, 2).to_pydict() == {
            "s": ["row 0", "row 1"], "n": [0, 1]}
