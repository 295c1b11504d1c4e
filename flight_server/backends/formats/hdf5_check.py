"""Is this HDF5 file a plain, self-contained OMERO.tables file? Checked before any read.

An HDF5 file can make its reader touch more than its own bytes, and PyTables
can be made to run code while opening one:

* a dataset's raw data may live in other files ("external storage", the
  external file list of its creation property list), so reading rows returns
  the bytes of ``/etc/passwd`` or of the store's token-signing key;
* a virtual dataset maps its data from datasets in other files;
* external links open other files; soft links resolve to other paths;
* PyTables unpickles a string attribute that ends with ``.`` (and reads a
  VLArray marked ``PSEUDOATOM = object`` with ``pickle``), so a crafted
  attribute runs code in the reader;
* filters other than the usual compressors make libhdf5 load plugins.

:func:`check_file` opens the file with h5py (its own libhdf5, no PyTables, no
attribute unpickling) and refuses with :class:`InvalidArgument` anything but
the OMERO.tables layout (see :mod:`flight_server.backends.formats.hdf5`): a group
``/OME`` holding the datasets ``Measurements`` (a one-dimensional compound of
numbers, fixed-width strings and fixed-size arrays), ``ColumnTypes`` and
``ColumnDescriptions`` (fixed-width strings) and, optionally,
``Measurements_masks`` (variable-length ``uint8``), every one reached by a
hard link, stored in the file itself (contiguous, chunked or compact), with
known filters only, and with attributes that are neither object references
nor pickles. :class:`flight_server.backends.formats.hdf5.H5Reader` calls it before
PyTables opens the file, so every HDF5 read in the bridge (the embedded store
and the OMERO backend's direct reads) goes through it.
"""

from __future__ import annotations

import os
import pickletools
import threading
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
from h5py import h5a, h5d, h5l, h5o, h5s, h5z

from flight_server.errors import InvalidArgument, NotFound

#: Nodes of an OMERO.tables file: name -> (required, PyTables CLASS attribute).
_OME_NODES = {
    "Measurements": (True, "TABLE"),
    "ColumnTypes": (True, "ARRAY"),
    "ColumnDescriptions": (True, "ARRAY"),
    "Measurements_masks": (False, "VLARRAY"),
}
#: Storage layouts that keep the data inside the file (not h5d.VIRTUAL).
_LAYOUTS = {h5d.COMPACT, h5d.CONTIGUOUS, h5d.CHUNKED}
#: Filters PyTables and OMERO.tables write: built-in ones, LZO, bzip2, Blosc and Blosc2.
_FILTERS = {h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE, h5z.FILTER_FLETCHER32, h5z.FILTER_SZIP,
            h5z.FILTER_NBIT, h5z.FILTER_SCALEOFFSET, 305, 307, 32001, 32026}
#: Pickle opcodes that import or call something: a pickle without them only builds data.
_PICKLE_CODE = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX",
                "BUILD", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"}


def _names(names: list[str]) -> str:
    """A few of the names, each cut short: an error message never echoes a file's whole index."""
    shown = [n if len(n) <= 40 else n[:40] + "..." for n in sorted(names)[:5]]
    return repr(shown)[:-1] + (", ...]" if len(names) > 5 else "]")


def _refuse(label: str, what: str) -> InvalidArgument:
    return InvalidArgument(f"{label} is not a plain OMERO.tables file: {what}; it is not read")


def runs_code_when_unpickled(value: bytes) -> bool:
    """Whether ``value`` is a whole pickle that imports or calls something when loaded."""
    if not value.endswith(b"."):  # STOP: PyTables only unpickles values ending with it
        return False
    try:
        names = {op.name for op, _, _ in pickletools.genops(value)}
    except Exception:  # noqa: BLE001 - not a whole pickle: pickle.loads refuses it too
        return False
    return bool(names & _PICKLE_CODE)


def _bad_dtype(dt: np.dtype) -> str | None:
    """Why a dtype cannot be part of an OMERO.tables file (references, vlen, objects)."""
    if h5py.check_dtype(ref=dt) is not None:
        return "an object or region reference"
    if h5py.check_dtype(vlen=dt) is not None or dt.kind == "O":
        return "a variable-length value"
    if dt.names and dt.fields is not None:
        for name in dt.names:
            why = _bad_dtype(dt.fields[name][0])
            if why:
                return why
        return None
    if dt.subdtype is not None:
        return _bad_dtype(dt.subdtype[0])
    if dt.kind not in "biufS":
        return f"a value of type {dt}"
    return None


def _text(value: object) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).rstrip(b"\0").decode("utf-8", "replace")
    return str(value)


def _ascii_values(obj: h5py.HLObject, attr: h5a.AttrID, dt: np.dtype) -> list[bytes]:
    """The values of an ASCII string attribute (PyTables reads these as bytes)."""
    if attr.get_space().get_simple_extent_type() == h5s.NULL:
        return []
    if h5py.check_string_dtype(dt).length is None:  # variable length: h5py converts
        value = obj.attrs[attr.name.decode("utf-8", "surrogateescape")]
        items = [value] if isinstance(value, bytes | str) else np.asarray(value).reshape(-1)
    else:
        buffer = np.empty(attr.shape, dtype=dt)
        attr.read(buffer)
        items = list(buffer.reshape(-1))
    return [i.encode("utf-8", "surrogateescape") if isinstance(i, str) else bytes(i)
            for i in items if isinstance(i, bytes | np.bytes_ | str)]


def _check_attributes(label: str, obj: h5py.HLObject, where: str) -> None:
    """No attribute holds a reference, and none is a pickle that runs code (PyTables loads it).

    PyTables unpickles ASCII string attributes ending with ``.``; it reads UTF-8 ones as
    ``str`` and never unpickles them, so only ASCII values are read here.
    """
    oid = obj.id
    raw_names: list[bytes] = []
    h5a.iterate(oid, raw_names.append)  # names once; opening by name is cheaper than by index
    for raw in raw_names:
        name = raw.decode("utf-8", "replace")
        try:
            attr = h5a.open(oid, raw)
            dt = attr.dtype
            text = h5py.check_string_dtype(dt)
            bad = None if text is not None else _bad_dtype(dt)
            values = _ascii_values(obj, attr, dt) if text is not None and \
                text.encoding == "ascii" else []
        except Exception as exc:  # noqa: BLE001 - an attribute h5py cannot read
            raise _refuse(label, f"attribute {name[:40]!r} of {where} cannot be read "
                                 f"({type(exc).__name__})") from None
        if bad:
            raise _refuse(label, f"attribute {name[:40]!r} of {where} holds {bad}")
        if any(runs_code_when_unpickled(v) for v in values):
            raise _refuse(label, f"attribute {name[:40]!r} of {where} is a pickle that "
                                 "runs code")


def _check_dataset(label: str, ds: h5py.Dataset, where: str) -> None:
    dcpl = ds.id.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5d.VIRTUAL:
        raise _refuse(label, f"{where} is a virtual dataset (its data comes from other files)")
    if layout not in _LAYOUTS:
        raise _refuse(label, f"{where} has an unknown storage layout ({layout})")
    if dcpl.get_external_count():
        raise _refuse(label, f"{where} keeps its data in external files")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in _FILTERS:
            raise _refuse(label, f"{where} uses an unknown filter ({code})")
    if ds.ndim != 1:
        raise _refuse(label, f"{where} has {ds.ndim} dimensions, not 1")


def _check_node_dtype(label: str, name: str, ds: h5py.Dataset) -> None:
    dt = ds.dtype
    where = f"/OME/{name}"
    if name == "Measurements":
        if not dt.names:
            raise _refuse(label, f"{where} is not a table of columns")
        why = _bad_dtype(dt)
    elif name == "Measurements_masks":
        base = h5py.check_vlen_dtype(dt)
        why = None if base is not None and np.dtype(base) == np.uint8 else f"values of {dt}"
    else:
        why = None if dt.kind == "S" else f"values of {dt}"
    if why:
        raise _refuse(label, f"{where} holds {why}")


def _hard_children(label: str, group: h5py.Group, where: str) -> list[str]:
    names = []
    for raw in group.id:
        name = raw.decode("utf-8", "replace")
        kind = group.id.links.get_info(raw).type
        if kind != h5l.TYPE_HARD:
            label = {h5l.TYPE_SOFT: "a soft link", h5l.TYPE_EXTERNAL: "an external link"}.get(
                kind, "a user-defined link")
            raise _refuse(label, f"{where.rstrip('/')}/{name[:40]} is {label}")
        names.append(name)
    return names


def _object_type(group: h5py.Group, name: str) -> int:
    return h5o.get_info(h5o.open(group.id, name.encode())).type


#: Files that passed :func:`check_file`, by identity: (device, inode, size, mtime, ctime).
#: Any change to a file (a write, a rename over it, a chmod) changes its ctime, so a
#: changed file is checked again; the check costs ~3 ms, half of opening a table.
_PASSED: OrderedDict[tuple[int, ...], None] = OrderedDict()
_PASSED_MAX = 4096
_PASSED_LOCK = threading.Lock()


def file_identity(path: Path) -> tuple[int, ...] | None:
    """(device, inode, size, mtime, ctime) of the file at ``path``; None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def check_file(path: str | Path, label: str | None = None) -> None:
    """Refuse (:class:`InvalidArgument`) a file that is not plain, self-contained OMERO.tables.

    ``label`` names the file in messages (default: its file name). Raises
    :class:`~flight_server.errors.NotFound` when the file cannot be opened as HDF5.
    A file that passed is remembered by its identity (:data:`_PASSED`) and not read again
    until it changes; a refusal is never remembered.
    """
    path = Path(path)
    identity = file_identity(path)
    if identity is not None:
        with _PASSED_LOCK:
            if identity in _PASSED:
                _PASSED.move_to_end(identity)
                return
    _check(path, label or path.name)
    if identity is not None and identity == file_identity(path):  # unchanged while checked
        with _PASSED_LOCK:
            _PASSED[identity] = None
            while len(_PASSED) > _PASSED_MAX:
                _PASSED.popitem(last=False)


def _check(path: Path, label: str) -> None:
    try:
        fh = h5py.File(path, "r", locking=False)
    except (OSError, ValueError) as exc:
        raise NotFound(f"cannot open {label} as an HDF5 file: {exc}") from None
    with fh:
        _check_attributes(label, fh, "/")
        top = _hard_children(label, fh, "/")
        if top != ["OME"] or _object_type(fh, "OME") != h5o.TYPE_GROUP:
            raise _refuse(label, f"its top level holds {_names(top)}, not the group 'OME'")
        ome = fh["OME"]
        _check_attributes(label, ome, "/OME")
        children = _hard_children(label, ome, "/OME")
        unexpected = sorted(set(children) - set(_OME_NODES))
        if unexpected:
            raise _refuse(label, f"/OME holds unexpected nodes {_names(unexpected)}")
        missing = [n for n, (required, _) in _OME_NODES.items() if required and n not in children]
        if missing:
            raise _refuse(label, f"/OME lacks {missing!r}")
        for name in children:
            where = f"/OME/{name}"
            if _object_type(ome, name) != h5o.TYPE_DATASET:
                raise _refuse(label, f"{where} is not a dataset")
            ds = ome[name]
            _check_dataset(label, ds, where)
            _check_node_dtype(label, name, ds)
            _check_attributes(label, ds, where)
            expected_class = _OME_NODES[name][1]
            found = ds.attrs.get("CLASS")
            if found is not None and _text(found) != expected_class:
                raise _refuse(label, f"{where} is marked {_text(found)!r}, not {expected_class!r}")
            if "PSEUDOATOM" in ds.attrs:
                raise _refuse(label, f"{where} is marked as holding pickled objects")
