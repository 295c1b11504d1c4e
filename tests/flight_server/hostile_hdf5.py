"""Real HDF5 files that try to make the reader touch more than their own bytes.

Each starts from a valid OMERO.tables file written by the bridge's own writer
(one string column ``s`` and one integer column ``n``), copied node by node
with h5py, and changes one thing:

* ``external_storage``: ``/OME/Measurements`` keeps its rows in another file
  (HDF5's external file list), e.g. ``/etc/passwd`` or the token-signing key;
* ``external_column_types``: the same for ``/OME/ColumnTypes``;
* ``external_link``: ``/OME/Measurements`` is an external link to another
  user's table file;
* ``soft_link``: ``/OME/Measurements`` is a soft link to a copy elsewhere;
* ``virtual``: ``/OME/Measurements`` is a virtual dataset mapped from another
  file's ``/OME/Measurements``;
* ``pickled_attribute``: an attribute that PyTables would unpickle, whose
  pickle creates a canary file;
* ``pickled_masks``: ``/OME/Measurements_masks`` marked as pickled objects.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa

from flight_protocol import columns as cols
from flight_server.backends.formats.hdf5 import H5Writer

WIDTH = 16


def template(path: Path, rows: int = 2) -> Path:
    """A valid bridge-written table: ``s`` (string, 16 bytes) and ``n`` (int64)."""
    data = pa.table({"s": pa.array([f"row {i}" for i in range(rows)]),
                     "n": pa.array(range(rows), type=pa.int64())})
    schema = cols.with_string_sizes(cols.omero_schema(data.schema), {"s": WIDTH})
    writer = H5Writer(path, schema)
    try:
        for batch in data.to_batches():
            writer.append(cols.conform_batch(batch, schema))
    finally:
        writer.close()
    return path


def _copy(src: h5py.File, dst: h5py.File, skip: str = "") -> h5py.Group:
    """Copy the template's nodes and attributes, leaving out ``/OME/<skip>``."""
    for key, value in src.attrs.items():
        dst.attrs[key] = value
    ome = dst.create_group("OME")
    for key, value in src["OME"].attrs.items():
        ome.attrs[key] = value
    for name in src["OME"]:
        if name != skip:
            src.copy(src["OME"][name], ome, name)
    return ome


def _copy_attrs(src: h5py.Dataset, dst: h5py.Dataset) -> None:
    for key, value in src.attrs.items():
        dst.attrs[key] = value


def external_storage(path: Path, target: Path) -> Path:
    """Measurements whose raw rows are the bytes of ``target``."""
    base = template(path.with_suffix(".template.h5"))
    with h5py.File(base, "r") as src, h5py.File(path, "w") as dst:
        ome = _copy(src, dst, skip="Measurements")
        table = src["OME/Measurements"]
        rows = max(1, target.stat().st_size // table.dtype.itemsize)
        ds = ome.create_dataset("Measurements", shape=(rows,), dtype=table.dtype,
                                external=[(str(target), 0, rows * table.dtype.itemsize)])
        _copy_attrs(table, ds)
        ds.attrs["NROWS"] = np.int64(rows)
    return path


def external_column_types(path: Path, target: Path) -> Path:
    """ColumnTypes read from the bytes of ``target``."""
    base = template(path.with_suffix(".template.h5"))
    with h5py.File(base, "r") as src, h5py.File(path, "w") as dst:
        ome = _copy(src, dst, skip="ColumnTypes")
        types = src["OME/ColumnTypes"]
        ds = ome.create_dataset("ColumnTypes", shape=types.shape, dtype=types.dtype,
                                external=[(str(target), 0, types.size * types.dtype.itemsize)])
        _copy_attrs(types, ds)
    return path


def external_link(path: Path, target: Path) -> Path:
    """Measurements is an external link to ``target``'s ``/OME/Measurements``."""
    base = template(path.with_suffix(".template.h5"))
    with h5py.File(base, "r") as src, h5py.File(path, "w") as dst:
        ome = _copy(src, dst, skip="Measurements")
        ome["Measurements"] = h5py.ExternalLink(str(target), "/OME/Measurements")
    return path


def soft_link(path: Path) -> Path:
    """Measurements is a soft link to a copy kept under another name."""
    base = template(path.with_suffix(".template.h5"))
    with h5py.File(base, "r") as src, h5py.File(path, "w") as dst:
        ome = _copy(src, dst, skip="Measurements")
        src.copy(src["OME/Measurements"], ome, "elsewhere")
        ome["Measurements"] = h5py.SoftLink("/OME/elsewhere")
    return path


def virtual(path: Path, target: Path) -> Path:
    """Measurements is a virtual dataset over ``target``'s ``/OME/Measurements``."""
    base = template(path.with_suffix(".template.h5"))
    with h5py.File(target, "r") as other:
        shape, dtype = other["OME/Measurements"].shape, other["OME/Measurements"].dtype
    with h5py.File(base, "r") as src, h5py.File(path, "w") as dst:
        ome = _copy(src, dst, skip="Measurements")
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[:] = h5py.VirtualSource(str(target), "/OME/Measurements", shape=shape)
        ds = ome.create_virtual_dataset("Measurements", layout)
        _copy_attrs(src["OME/Measurements"], ds)
        ds.attrs["NROWS"] = np.int64(shape[0])
    return path


class _Touch:
    """Unpickling this creates a file (the canary): ``pathlib.Path(canary).touch()``."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (Path.touch, (Path(self.canary),))


def pickled_attribute(path: Path, canary: Path, variable: bool = False) -> Path:
    """An attribute on Measurements that PyTables unpickles when it opens the table
    (``variable``: stored as a variable-length ASCII string)."""
    template(path)
    payload = pickle.dumps(_Touch(canary), protocol=0)
    with h5py.File(path, "r+") as fh:
        attrs = fh["OME/Measurements"].attrs
        if variable:
            attrs.create("note", payload, dtype=h5py.string_dtype("ascii"))
        else:
            attrs["note"] = np.bytes_(payload)
    return path


def reference_attribute(path: Path) -> Path:
    """An attribute holding an object reference (to the root group)."""
    template(path)
    with h5py.File(path, "r+") as fh:
        fh["OME/Measurements"].attrs["ref"] = fh.ref
    return path


def pickled_masks(path: Path, canary: Path) -> Path:
    """A Measurements_masks VLArray marked ``PSEUDOATOM = object``: rows are pickles."""
    template(path)
    payload = np.frombuffer(pickle.dumps(_Touch(canary)), dtype=np.uint8)
    with h5py.File(path, "r+") as fh:
        ds = fh["OME"].create_dataset("Measurements_masks", shape=(2,),
                                      dtype=h5py.vlen_dtype(np.uint8))
        ds[0] = payload
        ds[1] = payload
        ds.attrs["CLASS"] = np.bytes_(b"VLARRAY")
        ds.attrs["VERSION"] = np.bytes_(b"1.4")
        ds.attrs["PSEUDOATOM"] = np.bytes_(b"object")
    return path
