"""Pieces of the OMERO backend on their own: error mapping, query arguments, the gate, config."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest

omero = pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

import Ice  # noqa: E402

from flight_server import errors  # noqa: E402
from flight_server.backends.omero import tables  # noqa: E402
from flight_server.backends.omero.calls import CallGate  # noqa: E402
from flight_server.backends.omero.errors import SessionGone, translate  # noqa: E402
from flight_server.backends.omero.tables import (  # noqa: E402
    bytes_literal,
    read_rows_per_call,
    where_arguments,
)
from flight_server.backends.omero.writer import rows_per_call  # noqa: E402
from flight_server.config import ConfigError, load_settings  # noqa: E402
from flight_server.query import check_query  # noqa: E402

pytestmark = pytest.mark.omero


@pytest.mark.parametrize(("exc", "expected"), [
    (omero.SecurityViolation(None, None, "not yours"), errors.PermissionDenied),
    (omero.GroupSecurityViolation(None, None, "wrong group"), errors.PermissionDenied),
    (omero.LockTimeout(None, None, "locked", 5000, 5), errors.Unavailable),
    (omero.OptimisticLockException(None, None, "changed"), errors.Unavailable),
    (omero.TryAgain(None, None, "busy", 2000), errors.Unavailable),
    (omero.ValidationException(None, None, "No row with the given identifier"), errors.NotFound),
    (omero.ValidationException(None, None, "bad value"), errors.InvalidArgument),
    (omero.ApiUsageException(None, None, "Bad condition"), errors.InvalidArgument),
    (omero.SessionTimeoutException(None, None, "expired"), errors.Unauthenticated),
    (omero.RemovedSessionException(None, None, "closed"), errors.Unauthenticated),
    (Ice.ConnectionRefusedException(), errors.Unavailable),
])
def test_omero_errors_map_to_bridge_errors(exc, expected):
    error = translate(exc, "doing things")
    assert type(error) is expected or isinstance(error, expected)
    assert str(error).startswith("doing things")
    message = getattr(exc, "message", "")
    assert message in str(error)
    if expected is errors.Unavailable:
        assert "retry" in str(error)


def test_session_errors_say_sign_in_again():
    error = translate(omero.RemovedSessionException(None, None, "gone"), "reading")
    assert isinstance(error, SessionGone) and "sign in again" in str(error)


def test_where_arguments_keep_strings_out_of_variables():
    columns = {"label": "::omero::grid::StringColumn", "area": "::omero::grid::DoubleColumn",
               "n": "::omero::grid::LongColumn", "ok": "::omero::grid::BoolColumn"}
    checked = check_query("(label == \"it's ü. x\") & (area > lo) & (n == k) & (ok == t)",
                          columns, {"lo": 1.5, "k": 3, "t": True})
    condition, variables = where_arguments(checked)
    assert "it" not in condition.replace("b'it", "")  # the text is escaped, not interpolated
    assert bytes_literal("it's ü. x".encode()) in condition
    kinds = {k: type(v).__name__ for k, v in variables.items()}
    assert sorted(kinds.values()) == ["RBoolI", "RDoubleI", "RLongI", "RStringI", "RStringI",
                                      "RStringI", "RStringI"]
    assert {v.val for v in variables.values() if type(v).__name__ == "RStringI"} == set(columns)


def test_bytes_literal_has_nothing_numexpr_would_refuse():
    text = bytes_literal(b"a.b__c;d:e 'f'\\")
    assert text.startswith("b'") and text.endswith("'")
    body = text[2:-1]
    assert all(c.isalnum() or c == "\\" for c in body)
    assert eval(text) == b"a.b__c;d:e 'f'\\"  # noqa: S307 - checking our own literal


def test_rows_per_call_bounds_rows_and_cells():
    assert rows_per_call(pa.schema([("a", pa.int64())])) == 50_000
    wide = pa.schema([(f"c{i}", pa.float64()) for i in range(100)])
    assert rows_per_call(wide) == 20_000
    arrays = pa.schema([("a", pa.list_(pa.float64(), 1000))])
    assert rows_per_call(arrays) == 2_000


def test_reads_hold_at_most_64_mib_of_whole_rows_in_omero():
    """OMERO.tables reads whole rows: one narrow column of a table with a 4,000-byte string
    column is read in calls of whole rows that fit MAX_CALL_ROW_BYTES (issue 11, fault 5)."""
    ids = pa.schema([("id", pa.int64())])
    wide = pa.schema([("id", pa.int64()),
                      pa.field("text", pa.string(), metadata={
                          b"omero.column_type": b"::omero::grid::StringColumn",
                          b"omero.string_size": b"4000"})])
    assert read_rows_per_call(ids, ids) == (16 << 20) // 16  # narrow rows: 16 MiB of values
    rows = read_rows_per_call(ids, wide)
    assert rows * 4_000 <= 64 << 20 < (rows + 100) * 4_012
    assert read_rows_per_call(wide, wide) == rows


def test_row_lists_are_read_as_ranges_where_dense_and_in_small_slices_where_scattered(
        monkeypatch):
    monkeypatch.setattr(tables, "SLICE_ROWS", 20)
    dense = np.arange(100, 160)
    half = np.arange(200, 300, 2)  # half the rows of its span: still one range
    scattered = np.arange(1_000, 1_000 + 25 * 50, 25)
    pieces = tables.OmeroTable._pieces(np.concatenate([dense, half, scattered]), 1_000)
    assert pieces[0][1] and int(pieces[0][0][0]) == 100 and len(pieces[0][0]) >= 60
    for piece, is_range in pieces:
        if is_range:  # a range read: at least half of the rows it spans are wanted
            assert int(piece[-1]) < 300 and int(piece[-1] - piece[0]) < 2 * len(piece)
        else:
            assert len(piece) <= 20
    assert all(not d for p, d in pieces if int(p[-1]) >= 1_000)
    assert np.array_equal(np.concatenate([p for p, _ in pieces]),
                          np.concatenate([dense, half, scattered]))
    # a dense run never spans more rows than one call holds
    spans = tables.OmeroTable._pieces(np.arange(0, 10_000), 3_000)
    assert [(int(p[0]), len(p), d) for p, d in spans] == [
        (0, 3_000, True), (3_000, 3_000, True), (6_000, 3_000, True), (9_000, 1_000, True)]


def test_the_gate_bounds_concurrent_calls():
    class Session:
        sf = object()
        session_keys = ()

        def touch(self) -> None:
            pass

    gate = CallGate(sessions=None, max_calls=1, wait=0.2)  # type: ignore[arg-type]
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with gate.call(Session(), "holding"):  # type: ignore[arg-type]
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    inside.wait(5)
    with pytest.raises(errors.Unavailable, match="retry"), gate.call(Session(), "second"):  # type: ignore[arg-type]
        pass
    release.set()
    thread.join()
    with gate.call(Session(), "third"):  # type: ignore[arg-type]
        pass


def test_settings_choose_omero(tmp_path):
    settings = load_settings({"omero_host": "omero.example.org"}, environ={})
    assert settings.uses_omero and settings.omero_port == 4064
    env = load_settings({}, environ={"OMERO_FLIGHT_OMERO_HOST": "h",
                                     "OMERO_FLIGHT_OMERO_PORT": "14064",
                                     "OMERO_FLIGHT_OMERO_MAX_CALLS": "2"})
    assert (env.omero_host, env.omero_port, env.omero_max_calls) == ("h", 14064, 2)
    config = tmp_path / "bridge.toml"
    config.write_text('[server]\nomero_host = "f"\nomero_idle_timeout = 30\n')
    from_file = load_settings({}, config, environ={})
    assert (from_file.omero_host, from_file.omero_idle_timeout) == ("f", 30.0)
    assert load_settings({}, environ={}).uses_omero is False
    with pytest.raises(ConfigError, match="shared account"):
        load_settings({"omero_host": "h", "insecure_no_auth": True}, environ={})
    with pytest.raises(ConfigError, match="omero_max_calls"):
        load_settings({"omero_host": "h", "omero_max_calls": 0}, environ={})
    assert load_settings({}, environ={"OMERO_FLIGHT_OMERO_HOST": "h",
                                      "OMERO_FLIGHT_OMERO_CALL_TIMEOUT": "30"}
                         ).omero_call_timeout == 30.0
    with pytest.raises(ConfigError, match="omero_call_timeout"):
        load_settings({"omero_host": "h", "omero_call_timeout": 0}, environ={})


def test_serve_builds_the_omero_backend(omero_standin):
    from flight_server.backends.omero import OmeroBackend
    from flight_server.cli.serve import make_backend

    settings = load_settings({"omero_host": omero_standin.host,
                              "omero_port": omero_standin.port, "omero_max_calls": 3,
                              "omero_call_timeout": 45},
                             environ={})
    backend = make_backend(settings)
    try:
        assert isinstance(backend, OmeroBackend) and backend.gate.max_calls == 3
        client = backend.sessions.new_client()  # omero-py's own client, with the call timeout
        try:
            assert client.getProperty("Ice.Default.InvocationTimeout") == "45000"
        finally:
            client.closeSession()
    finally:
        backend.close()
