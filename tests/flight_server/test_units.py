"""Unit tests: the query allowlist, the column mapping, settings precedence, tokens."""

from __future__ import annotations

import pyarrow as pa
import pytest

from flight_protocol import columns as cols
from flight_server.auth import TokenSigner
from flight_server.config import ConfigError, load_settings
from flight_server.errors import Unauthenticated
from flight_server.query import UnsafeQuery, check_query

TABLE = {"x": cols.LONG, "y": cols.DOUBLE, "Roi Name": cols.STRING, "m": cols.MASK}


@pytest.mark.parametrize("text, variables, expression", [
    ("x > 1", {}, "(c0 > 1)"),
    ("(x > lo) & (y < 2.5)", {"lo": 3}, "((c0 > v0) & (c1 < 2.5))"),
    ("x > 1 and not y < 0", {}, "((c0 > 1) & (~(c1 < 0)))"),
    ("n == 'a'", {"n": "Roi Name"}, "(c0 == v0)"),
    ("sqrt(y) >= 2", {}, "(sqrt(c0) >= 2)"),
])
def test_query_accepts(text, variables, expression):
    assert check_query(text, TABLE, variables).expression == expression


@pytest.mark.parametrize("text, variables, why", [
    ("__import__('os').system('x')", {}, "not allowed"),
    ("x.real > 1", {}, "Attribute"),
    ("z > 1", {}, "unknown name 'z'"),
    ("(lambda: 1)() > 0", {}, "not allowed"),
    ("1 < x < 3", {}, "chained"),
    ("m > 1", {}, "MaskColumn"),
    ("n > 1", {"n": "nope"}, "unknown column 'nope'"),
    ("x[0] > 1", {}, "Subscript"),
    ("", {}, "empty"),
    ("x >", {}, "not a valid condition"),
])
def test_query_refuses(text, variables, why):
    with pytest.raises(UnsafeQuery, match=why):
        check_query(text, TABLE, variables)


def test_column_mapping_and_refusals():
    schema = cols.omero_schema(pa.schema([("Image", pa.int32()), ("v", pa.float32()),
                                          ("s", pa.dictionary(pa.int8(), pa.string())),
                                          ("a", pa.list_(pa.int16(), 3))]))
    assert [cols.short_name(cols.column_type_of(f)) for f in schema] == [
        "ImageColumn", "DoubleColumn", "StringColumn", "LongArrayColumn"]
    with pytest.raises(cols.UnsupportedColumn, match="'t'.*timestamp"):
        cols.omero_schema(pa.schema([("t", pa.timestamp("s"))]))
    with pytest.raises(cols.UnsupportedColumn, match="reserved"):
        cols.omero_schema(pa.schema([("__row__", pa.int64())]))
    stored = cols.omero_schema(pa.schema([("n", pa.int64())]))
    with pytest.raises(cols.UnsupportedColumn, match="null"):
        cols.conform_batch(pa.record_batch([pa.array([1, None])], names=["n"]), stored)
    sized = cols.with_string_sizes(cols.omero_schema(pa.schema([("s", pa.string())])), {"s": 2})
    with pytest.raises(cols.UnsupportedColumn, match="width"):
        cols.conform_batch(pa.record_batch([pa.array(["abc"])], names=["s"]), sized)


def test_settings_precedence(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[server]\nport = 1111\nsplit_rows = 10\nhost = "127.0.0.1"\n')
    s = load_settings({"port": 3333}, config, {"OMERO_FLIGHT_PORT": "2222",
                                               "OMERO_FLIGHT_SPLIT_ROWS": "20"})
    assert (s.port, s.split_rows) == (3333, 20)
    assert load_settings({}, config, {}).port == 1111
    with pytest.raises(ConfigError, match="without authentication"):
        load_settings({"host": "0.0.0.0", "insecure_no_auth": True}, None, {})
    with pytest.raises(ConfigError, match="both"):
        load_settings({"tls_cert": "x.pem"}, None, {})


def test_tokens():
    signer = TokenSigner(b"k" * 32, lifetime=10)
    assert signer.verify(signer.issue("alice", now=100), now=105) == "alice"
    with pytest.raises(Unauthenticated, match="expired"):
        signer.verify(signer.issue("alice", now=100), now=111)
    with pytest.raises(Unauthenticated, match="invalid"):
        TokenSigner(b"j" * 32).verify(signer.issue("alice"))
