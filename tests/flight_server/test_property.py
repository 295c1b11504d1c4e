"""Property: whatever storable table goes up comes back with the same values and dtypes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.flight_server.wire import read, upload

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
floats = st.floats(allow_nan=True, allow_infinity=True)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                max_size=12)
KINDS = {"long": (ints, pa.int64()), "double": (floats, pa.float64()),
         "bool": (st.booleans(), pa.bool_()), "string": (texts, pa.string())}


@st.composite
def tables(draw) -> pa.Table:
    rows = draw(st.integers(min_value=0, max_value=30))
    kinds = draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=5))
    columns = {}
    for i, kind in enumerate(kinds):
        strategy, typ = KINDS[kind]
        columns[f"{kind}_{i}"] = pa.array(draw(st.lists(strategy, min_size=rows,
                                                        max_size=rows)), type=typ)
    return pa.table(columns)


@pytest.fixture(scope="module")
def alice(connect):
    return connect("alice")


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=tables())
def test_upload_then_read_is_identity(alice, data):
    answer = upload(*alice, data, "prop", batch_rows=7)
    got = read(*alice, file_id=answer["file_id"], row_numbers=False)
    assert got.num_rows == data.num_rows == answer["rows"]
    for name in data.column_names:
        want, have = data[name], got[name]
        assert have.type == want.type, name
        if pa.types.is_floating(want.type):
            assert np.array_equal(have.to_numpy(), want.to_numpy(), equal_nan=True)
        else:
            assert have.to_pylist() == want.to_pylist(), name
    assert got.to_pandas().dtypes.to_dict() == data.to_pandas().dtypes.to_dict()
