"""Issue 10, findings 3, 4, 5, 8, 9, 10, 11, 14: each as a test through a real Flight server.

No timings are asserted: sign-in work is counted (scrypt calls), backoff runs on an
injected clock.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_protocol import messages as protocol
from flight_protocol.messages import TableTicket, UploadDescriptor, encode_body
from flight_server.auth import SignInThrottle
from flight_server.backends.local import passwords
from flight_server.backends.local.store import LocalStore
from flight_server.errors import INTERNAL_MESSAGE, MAX_MESSAGE_CHARS, Unauthenticated
from flight_server.service import FlightService
from tests.conftest import PASSWORDS, connect_to, start_bridge
from tests.flight_server.wire import action, error_code, read, upload


def refusal(call) -> tuple[str, str]:
    """(code, message) of the Flight error ``call`` raises; it must be typed and bounded."""
    with pytest.raises(flight.FlightError) as info:
        call()
    assert info.value.extra_info, f"untyped error: {info.value}"
    detail = json.loads(info.value.extra_info)
    assert len(detail["message"]) <= MAX_MESSAGE_CHARS
    assert "Traceback" not in str(info.value)
    return detail["code"], detail["message"]


def invalid(call, *words: str) -> str:
    code, message = refusal(call)
    assert code == "invalid_argument", message
    for word in words:
        assert word in message, message
    return message


def raw_get(conn, body: dict | bytes):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    client, options = conn
    return client.do_get(flight.Ticket(raw), options=options).read_all()


@pytest.fixture(scope="module")
def alice(connect):
    return connect("alice")


@pytest.fixture(scope="module")
def table_id(alice):
    return upload(*alice, pa.table({"x": [1, 2, 3]}), "hardening")["file_id"]


@pytest.fixture(autouse=True)
def still_serving(connect):
    yield
    assert action(*connect("root"), "health")["status"] == "ok"


# -- finding 8 and 14: malformed input is invalid_argument, never internal -------------------

def ticket(table_id: int, **fields) -> dict:
    return TableTicket(file_id=table_id).to_json() | fields


@pytest.mark.parametrize("fields, words", [
    ({"file_id": 2**63}, ["file_id", "between 1 and"]),
    ({"file_id": 0}, ["file_id"]),
    ({"file_id": -1}, ["file_id"]),
    ({"file_id": "5"}, ["file_id must be an integer"]),
    ({"file_id": "\u0661\u0662"}, ["file_id must be an integer"]),  # Arabic-Indic digits
    ({"file_id": True}, ["file_id must be an integer"]),
    ({"file_id": 1.0}, ["file_id must be an integer"]),
    ({"v": True}, ["protocol version True"]),
    ({"v": 1.0}, ["protocol version 1.0"]),
    ({"rows": {"start": "5"}}, ["rows.start must be an integer"]),
    ({"rows": {"start": 0, "stop": 2**63}}, ["rows.stop"]),
    ({"rows": [2**63]}, ["row number"]),
    ({"rows": {"int64_le_hex": "01000000000000ffffffffffffff"}}, ["14 bytes", "8-byte"]),
    ({"rows": {"int64_le_hex": "0100000000000"}}, ["not hex"]),  # an odd count of digits
    ({"rows": {"int64_le_hex": "ffffffffffffffff"}}, ["row number", "got -1"]),
    ({"rows": {"int64_le_hex": "0000000000000080"}}, ["row number", "-9223372036854775808"]),
    ({"rows": {"int64_le_hex": "01000000 00000000"}}, ["other than hex digits"]),
    ({"rows": {"int64_le_hex": "0g00000000000000"}}, ["not hex"]),
    ({"rows": {"int64_le_hex": 5}}, ["must be a string of hex digits"]),
    ({"rows": {"int64_le_hex": "", "start": 0}}, ["unknown field", "start"]),
    ({"chunk_size": 10**12}, ["chunk_size", str(protocol.MAX_CHUNK_ROWS)]),
    ({"columns": ["x\ud800"]}, ["lone surrogate"]),
    ({"query": "x > 1\udfff"}, ["lone surrogate"]),
    ({"variables": {"\ud800": 1}}, ["lone surrogate"]),
    ({"variables": {"a": [1]}}, ["must be a number"]),
    ({"columns": "x"}, ["columns must be a list"]),
    ({"extra": 1}, ["unknown field", "extra"]),
])
def test_malformed_ticket_fields(alice, table_id, fields, words):
    invalid(lambda: raw_get(alice, ticket(table_id, **fields)), *words)


def test_json_limits_are_checked_while_parsing(alice, table_id):
    deep = b'{"v":1,"kind":"table","file_id":1,"variables":' + b"[" * 100_000 + b"]" * 100_000 \
        + b"}"
    invalid(lambda: raw_get(alice, deep), "nested deeper")
    huge = b'{"v":1,"kind":"table","file_id":' + b"9" * 5000 + b"}"
    invalid(lambda: raw_get(alice, huge), "digits", str(protocol.MAX_NUMBER_DIGITS))
    invalid(lambda: raw_get(alice, b'{"v":1,"kind":"table","file_id":NaN}'), "NaN")
    invalid(lambda: raw_get(alice, b'{"v":1,"kind":"table","file_id":1,"query":"\xff"}'),
            "not valid UTF-8")
    too_big = b" " * (protocol.MAX_REQUEST_BYTES + 1)
    invalid(lambda: raw_get(alice, too_big), str(protocol.MAX_REQUEST_BYTES))


def test_row_list_is_bounded_before_parsing(alice, table_id):
    def body(n: int) -> bytes:
        rows = b",".join([b"0"] * n)
        return b'{"v":1,"kind":"table","file_id":%d,"rows":[%s]}' % (table_id, rows)

    invalid(lambda: raw_get(alice, body(protocol.MAX_JSON_VALUES + 1)), "values",
            str(protocol.MAX_JSON_VALUES))  # counted before parsing
    invalid(lambda: raw_get(alice, body(protocol.MAX_ROW_LIST + 1)), "row list",
            str(protocol.MAX_ROW_LIST))


def test_file_chunk_size_is_bounded(alice, table_id):
    body = {"v": 1, "kind": "file", "file_id": table_id, "chunk_size": 10**12}
    invalid(lambda: raw_get(alice, body), "chunk_size", str(protocol.MAX_FILE_CHUNK_BYTES))


def test_upload_descriptor_given_to_reads(alice):
    client, options = alice
    descriptor = flight.FlightDescriptor.for_command(UploadDescriptor("x").encode())
    invalid(lambda: client.get_flight_info(descriptor, options), "upload descriptors go to")
    # get_schema: pyarrow cannot type it as a Flight error; the gRPC code and JSON text are
    # right, and no traceback or server path is sent.
    with pytest.raises(pa.ArrowInvalid) as info:
        client.get_schema(descriptor, options)
    assert json.loads(str(info.value).split(". Detail:")[0])["code"] == "invalid_argument"
    assert "Traceback" not in str(info.value) and ".py" not in str(info.value)


def test_get_schema_not_found_and_unauthenticated(alice, bridge):
    client, options = alice
    descriptor = flight.FlightDescriptor.for_command(TableTicket(file_id=987654).encode())
    with pytest.raises(pa.ArrowKeyError) as info:  # gRPC NOT_FOUND
        client.get_schema(descriptor, options)
    assert json.loads(str(info.value).split(". Detail:")[0].strip("'\""))["code"] == "not_found"
    assert "Traceback" not in str(info.value)
    anonymous = flight.FlightClient(bridge.url)
    with pytest.raises(OSError, match="Detail: Unauthenticated"):  # pyarrow's get_schema
        anonymous.get_schema(descriptor)


def test_listing_bodies_refuse_unknown_fields(alice):
    invalid(lambda: action(*alice, "list_tables", encode_body(object_typo="Image")),
            "unknown field", "object_typo")
    client, options = alice
    invalid(lambda: list(client.list_flights(encode_body(nope=1), options)), "nope")
    invalid(lambda: action(*alice, "list_tables", encode_body(object_type="Image",
                                                              object_id="5")), "integer")
    invalid(lambda: action(*alice, "health", encode_body(x=1)), "unknown field")


def test_unknown_action_name_is_echoed_bounded(alice):
    message = invalid(lambda: action(*alice, "x" * 8000), "unknown action")
    assert len(message) < 1000


def test_upload_names_and_links(alice):
    client, options = alice
    data = pa.table({"a": [1]})

    def put(command: bytes, table: pa.Table = data):
        descriptor = flight.FlightDescriptor.for_command(command)
        writer, reader = client.do_put(descriptor, table.schema, options=options)
        with writer:
            writer.write_table(table)
            writer.done_writing()
            reader.read()

    body = UploadDescriptor("ok").to_json()
    invalid(lambda: put(json.dumps(body | {"name": "a\0b"}).encode()), "NUL")
    invalid(lambda: put(json.dumps(body | {"name": "n" * 5000}).encode()),
            str(protocol.MAX_NAME_CHARS))
    links = [["Image", i] for i in range(1, protocol.MAX_LINKS + 2)]
    invalid(lambda: put(json.dumps(body | {"links": links}).encode()), str(protocol.MAX_LINKS))
    invalid(lambda: put(json.dumps(body | {"links": [["Image", 2**63]]}).encode()), "Image id")
    invalid(lambda: put(json.dumps(body | {"description": "\ud800"}).encode()), "surrogate")


def test_many_links_are_checked_in_linear_time():
    links = [("image", i % 5000 + 1) for i in range(protocol.MAX_LINKS)]
    assert len(protocol.normalize_links(links)) == protocol.MAX_LINKS
    dupes = [("Image", 1)] * protocol.MAX_LINKS
    assert protocol.normalize_links(dupes) == (("Image", 1),)


# -- finding 3: cheap requests with expensive answers ------------------------------------------

def string_field(name: str, width: bytes) -> pa.Field:
    return pa.field(name, pa.string(), metadata={protocol.META_STRING_SIZE: width})


@pytest.mark.parametrize("width, words", [
    (b"200000000", [str(protocol.MAX_STRING_WIDTH)]),
    (b"0", ["width"]),
    (b"12abc", ["width"]),
])
def test_declared_string_width_is_capped(alice, width, words):
    schema = pa.schema([string_field("s", width)])
    data = pa.table({"s": ["a", "b", "c"]}, schema=schema)
    invalid(lambda: upload(*alice, data, "wide"), *words)


def test_measured_string_width_is_capped(alice):
    data = pa.table({"s": ["a" * (protocol.MAX_STRING_WIDTH + 1)]})
    invalid(lambda: upload(*alice, data, "wide"), str(protocol.MAX_STRING_WIDTH))


def test_columns_and_names_are_bounded(alice):
    many = pa.table({f"c{i}": [1] for i in range(protocol.MAX_COLUMNS + 1)})
    invalid(lambda: upload(*alice, many, "many"), str(protocol.MAX_COLUMNS))
    long_name = pa.table({"n" * 8000: [1]})
    message = invalid(lambda: upload(*alice, long_name, "long"), str(protocol.MAX_NAME_CHARS))
    assert len(message) < 1000
    bad_meta = pa.schema([pa.field("a", pa.int64(),
                                   metadata={protocol.META_DESCRIPTION: b"\xff\xfe"})])
    invalid(lambda: upload(*alice, pa.table({"a": [1]}, schema=bad_meta), "meta"), "UTF-8")


# -- finding 9: what the caller may not see does not exist -----------------------------------

def test_hidden_and_missing_look_the_same(connect):
    carol, dave = connect("carol"), connect("dave")
    info = upload(*carol, pa.table({"s": [1]}), "private one")
    for ticket_body in ({"file_id": info["file_id"]}, {"annotation_id": info["annotation_id"]}):
        body = json.dumps({"v": 1, "kind": "table", **ticket_body}).encode()
        code, message = refusal(lambda b=body: action(*dave, "file_info", b))
        assert code == "not_found" and "carol" not in message and "secret" not in message
    code, _ = refusal(lambda: read(*dave, file_id=info["file_id"]))
    assert code == "not_found"


# -- finding 5 and the boundary: unexpected errors are internal, with nothing said ----------

class BrokenStore(LocalStore):
    def list_tables(self, caller, object_type=None, object_id=None):
        raise RuntimeError(f"bug reading {self.path}/catalog.sqlite")


def test_unexpected_errors_say_nothing(tmp_path, caplog):
    store = BrokenStore(tmp_path / "s")
    store.add_user("root", "pw-root-1", admin=True)
    server = FlightService(store)
    try:
        client = flight.FlightClient(server.url)
        options = flight.FlightCallOptions(
            headers=[client.authenticate_basic_token("root", "pw-root-1")])
        with pytest.raises(flight.FlightInternalError) as info:
            action(client, options, "list_tables")
        assert error_code(info.value) == "internal"
        assert json.loads(info.value.extra_info)["message"] == INTERNAL_MESSAGE
        assert str(tmp_path) not in str(info.value) and "RuntimeError" not in str(info.value)
        assert any("bug reading" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    finally:
        server.shutdown()


# -- findings 4, 10, 11: sign-in --------------------------------------------------------------

@pytest.fixture
def scrypt_calls(monkeypatch):
    calls = []
    original = passwords.derive

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(passwords, "derive", counting)
    return calls


def test_unknown_user_costs_one_scrypt_like_a_wrong_password(bridge, scrypt_calls):
    client = flight.FlightClient(bridge.url)
    for user in ("alice", "no-such-user"):
        scrypt_calls.clear()
        code, message = refusal(lambda u=user: client.authenticate_basic_token(u, "wrong-pw"))
        assert code == "unauthenticated" and message == "wrong user name or password"
        assert len(scrypt_calls) == 1, user


def test_password_with_nul_is_refused(bridge, tmp_path):
    client = flight.FlightClient(bridge.url)
    for bad in (PASSWORDS["bob"] + "\0", PASSWORDS["bob"] + "\0junk", "\0" + PASSWORDS["bob"]):
        code, _ = refusal(lambda b=bad: client.authenticate_basic_token("bob", b))
        assert code == "unauthenticated"
    assert client.authenticate_basic_token("bob", PASSWORDS["bob"])
    # The store refuses it too (scrypt alone would accept "pw\0": key padding).
    with pytest.raises(Unauthenticated):
        bridge.store.authenticate("bob", PASSWORDS["bob"] + "\0")
    store = LocalStore(tmp_path / "s")
    with pytest.raises(Exception, match="NUL"):
        store.add_user("x", "pw\0", admin=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def throttled(tmp_path):
    clock = Clock()
    b = start_bridge(tmp_path / "s", sign_in_throttle=SignInThrottle(free=2, base=4.0,
                                                                     clock=clock))
    yield b, clock
    b.server.shutdown()


def test_failed_sign_ins_back_off(throttled, scrypt_calls):
    bridge, clock = throttled
    client = flight.FlightClient(bridge.url)
    for _ in range(3):
        code, message = refusal(lambda: client.authenticate_basic_token("alice", "bad"))
        assert message == "wrong user name or password"
    scrypt_calls.clear()
    # Locked: even the right password is refused, without a password check, saying when.
    code, message = refusal(lambda: client.authenticate_basic_token("alice",
                                                                    PASSWORDS["alice"]))
    assert code == "unauthenticated" and "try again in 4 s" in message
    assert scrypt_calls == []
    # Unknown names are throttled the same way (no difference to learn from).
    for _ in range(3):
        refusal(lambda: client.authenticate_basic_token("ghost", "bad"))
    assert "try again in" in refusal(lambda: client.authenticate_basic_token("ghost", "x"))[1]
    # Another user is not affected.
    assert client.authenticate_basic_token("bob", PASSWORDS["bob"])
    clock.now += 4.0
    code, _ = refusal(lambda: client.authenticate_basic_token("alice", "bad"))
    assert "try again in 8 s" in refusal(
        lambda: client.authenticate_basic_token("alice", PASSWORDS["alice"]))[1]
    clock.now += 8.0
    assert client.authenticate_basic_token("alice", PASSWORDS["alice"])
    # A success clears the count.
    refusal(lambda: client.authenticate_basic_token("alice", "bad"))
    assert client.authenticate_basic_token("alice", PASSWORDS["alice"])


def bearer(client: flight.FlightClient, header) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(headers=[header])


def whoami(client, options) -> dict:
    return action(client, options, "whoami")


def test_tokens_end_with_logout_password_change_and_removal(throttled):
    bridge, _ = throttled
    store = bridge.store
    client = flight.FlightClient(bridge.url)
    first = bearer(client, client.authenticate_basic_token("bob", PASSWORDS["bob"]))
    second = bearer(client, client.authenticate_basic_token("bob", PASSWORDS["bob"]))
    assert whoami(client, first)["username"] == "bob"
    action(client, first, "logout")
    code, message = refusal(lambda: whoami(client, first))
    assert code == "unauthenticated" and "sign in again" in message
    # Logout ends that sign-in only: bob's other connection (another script) goes on.
    assert whoami(client, second)["username"] == "bob"
    token = bearer(client, client.authenticate_basic_token("bob", PASSWORDS["bob"]))
    store.set_password("bob", "new-bob-pw")  # ends every token of bob's
    for options in (second, token):
        assert refusal(lambda o=options: whoami(client, o))[0] == "unauthenticated"
    token = bearer(client, client.authenticate_basic_token("bob", "new-bob-pw"))
    old_id = whoami(client, token)["user_id"]
    store.remove_user("bob")
    assert refusal(lambda: whoami(client, token))[0] == "unauthenticated"
    store.add_user("bob", "bob-again-1", ["lab"])
    # The token named the removed user's id: it does not sign in as the new "bob".
    assert refusal(lambda: whoami(client, token))[0] == "unauthenticated"
    fresh = bearer(client, client.authenticate_basic_token("bob", "bob-again-1"))
    assert whoami(client, fresh)["user_id"] != old_id


def test_old_tokens_naming_a_user_name_are_refused(bridge):
    client = flight.FlightClient(bridge.url)
    forged = bridge.server.signer.issue("alice")  # a validly signed pre-generation token
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {forged}".encode())])
    assert refusal(lambda: whoami(client, options))[0] == "unauthenticated"
    assert whoami(*connect_to(bridge, "alice"))["username"] == "alice"


@pytest.mark.parametrize("column_type", [b"\xff\xfe", b"x" * 5000, b"NoSuchColumn"])
def test_declared_column_type_is_checked(alice, column_type):
    schema = pa.schema([pa.field("a", pa.int64(), metadata={protocol.META_COLUMN_TYPE:
                                                            column_type})])
    message = invalid(lambda: upload(*alice, pa.table({"a": [1]}, schema=schema), "typed"),
                      "unknown OMERO column type")
    assert len(message) < 400


@pytest.mark.parametrize("make, words", [
    (lambda: TableTicket(file_id=1, query="x" * (protocol.MAX_QUERY_CHARS + 1)),
     ["query", str(protocol.MAX_QUERY_CHARS)]),
    (lambda: TableTicket(file_id=1, variables={f"v{i}": i
                                               for i in range(protocol.MAX_VARIABLES + 1)}),
     ["variables", str(protocol.MAX_VARIABLES)]),
    (lambda: TableTicket(file_id=1, variables={"v": 2**64}), ["variable 'v'"]),
    (lambda: TableTicket(file_id=1, columns=["c"] * (protocol.MAX_COLUMNS + 1)),
     ["columns named", str(protocol.MAX_COLUMNS)]),
    (lambda: TableTicket(file_id=1, columns=["c" * (protocol.MAX_NAME_CHARS + 1)]),
     ["column name", str(protocol.MAX_NAME_CHARS)]),
    (lambda: TableTicket(file_id=1, rows=range(protocol.MAX_ROW_LIST + 1)), ["row list"]),
    (lambda: UploadDescriptor("t", description="d" * (protocol.MAX_TEXT_CHARS + 1)),
     ["description", str(protocol.MAX_TEXT_CHARS)]),
    (lambda: UploadDescriptor(" "), ["must not be empty"]),
    (lambda: protocol.FileUploadDescriptor("a/b"), ["'/'"]),
    (lambda: protocol.FileUploadDescriptor("f", mimetype="m" * 2000), ["mimetype"]),
])
def test_the_client_refuses_over_limit_requests_before_sending(make, words):
    with pytest.raises(protocol.ProtocolError) as info:
        make()
    for word in words:
        assert word in str(info.value)
    assert len(str(info.value)) < 1000


def test_echo_is_bounded():
    assert len(protocol.echo("x" * 100_000)) <= protocol.MAX_ECHO_CHARS
    assert len(protocol.echo(list(range(100_000)))) <= protocol.MAX_ECHO_CHARS
    assert protocol.echo("short") == "'short'"


def test_huge_integers_are_refused_not_printed():
    with pytest.raises(protocol.ProtocolError, match="an integer of 16610 bits"):
        TableTicket(file_id=10**5000)
    with pytest.raises(protocol.ProtocolError, match="row number"):
        TableTicket(file_id=1, rows=[1, -(10**5000)])


def test_only_refusals_lose_their_traceback():
    import traceback

    from flight_server.errors import schema_refusal

    def fail(exc: BaseException) -> BaseException:
        try:
            raise exc
        except BaseException as caught:
            return caught

    other = fail(ValueError("a bug"))
    assert "Traceback" in "".join(traceback.format_exception(other))
    assert "Traceback" in "".join(traceback.format_exception(type(other), other,
                                                             other.__traceback__))
    refusal_ = fail(schema_refusal(protocol.ProtocolError("bad")))
    text = "".join(traceback.format_exception(type(refusal_), refusal_, refusal_.__traceback__))
    assert text == f"{type(refusal_).__name__}\n"
    assert json.loads(str(refusal_))["code"] == "invalid_argument"


def test_non_ascii_column_description_is_stored(alice):
    """Found by the fuzz suite: PyTables refused a non-ASCII description (internal)."""
    schema = pa.schema([pa.field("a", pa.float64(),
                                 metadata={protocol.META_DESCRIPTION: "Fläche µm²".encode()})])
    file_id = upload(*alice, pa.table({"a": [0.5]}, schema=schema), "described")["file_id"]
    body = TableTicket(file_id=file_id).encode()
    columns = action(*alice, "table_columns", body)["columns"]
    assert columns == [{"name": "a", "type": "DoubleColumn", "description": "Fläche µm²"}]
