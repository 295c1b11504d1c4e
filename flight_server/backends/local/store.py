"""``LocalStore``: the embedded backend, a folder holding everything.

Layout of the folder::

    catalog.sqlite      users, groups, OriginalFiles, FileAnnotations, links
    secret.key          HMAC key for bearer tokens (0600)
    Files/...           OriginalFile bytes, OMERO's binary-repository layout
    tmp/<id>/           uploads in progress of one running store (never in the catalog),
    tmp/<id>.lock       held locked by that store while it runs

Everything in the folder is its owner's only: folders 0700, files 0600, whatever the
umask, and an existing folder is repaired to that when a store opens it (the catalog
holds password hashes). Each store instance writes its temporary files in its own
``tmp/<id>/``; opening a store removes the temporary folders of stores that are no longer
running (their lock is free: a killed server leaves nothing for long).

Only files the bridge wrote as tables (``original_files.is_table``) are ever opened as
tables; a plain file upload cannot claim the ``OMERO.tables`` mimetype.

Visibility follows OMERO: a file belongs to its owner and its group; in a
private group only the owner (and admins) can read it; in read-only and above
every member can. Uploads go into the caller's default group, which is the
first entry of ``Caller.group_ids``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import shutil
import sqlite3
import stat
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pyarrow as pa

from flight_server.backends.base import (
    TABLE_MIMETYPE,
    Backend,
    Caller,
    FileInfo,
    FileWriter,
    Links,
    OpenHandles,
    TableHandle,
    TablePage,
    TableRef,
    TableSummary,
    TableWriter,
    UploadResult,
    check_table_file,
)
from flight_server.backends.formats.hdf5 import H5Writer
from flight_server.backends.formats.shared import SharedReaders
from flight_server.backends.local.catalog import FILE_COLUMNS, FILE_JOINS, PERMISSIONS, Catalog
from flight_server.backends.local.passwords import hash_password, verify_password, verify_unknown
from flight_server.backends.paging import token_after
from flight_server.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from flight_server.repository import original_file_path

if TYPE_CHECKING:
    from flight_server.backends.formats.tiledb import TileDBWriter

log = logging.getLogger(__name__)

SESSION_USER = "__session__"
#: Seconds an ended sign-in is remembered: longer than any token lives.
ENDED_KEPT = 30 * 24 * 3600.0
ADMIN_GROUP = "system"


@dataclass(frozen=True)
class UserInfo:
    user_id: int
    username: str
    admin: bool
    default_group: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class GroupInfo:
    group_id: int
    name: str
    permissions: str
    members: tuple[str, ...]


def _file_info(row: sqlite3.Row) -> FileInfo:
    return FileInfo(
        file_id=row["file_id"], name=row["name"], mimetype=row["mimetype"], size=row["size"],
        owner_id=row["owner_id"], group_id=row["group_id"], annotation_id=row["annotation_id"],
        owner=row["owner"] or "", group=row["grp"],
    )


class LocalStore(Backend):
    """The embedded store in folder ``path`` (created on first use).

    Tables are HDF5 files (OMERO.tables' own layout) or, when an upload asks
    for ``format="tiledb"``, TileDB arrays (folders) in OMERO Plus's layout.
    """

    name = "local"
    #: Table formats ``create_table`` accepts (``Backend.check_format`` checks this).
    table_formats = ("hdf5", "tiledb")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().resolve()
        self.path.mkdir(parents=True, mode=0o700, exist_ok=True)
        make_private(self.path)  # the catalog holds password hashes
        catalog = self.path / "catalog.sqlite"
        if not catalog.exists():  # SQLite gives its -wal and -shm files the catalog's mode
            fd = os.open(catalog, os.O_WRONLY | os.O_CREAT, 0o600)
            os.fchmod(fd, 0o600)  # whatever the umask
            os.close(fd)
        self.catalog = Catalog(catalog)
        make_private(self.path)
        self.tmp, self._tmp_lock = _own_tmp(self.path / "tmp")
        self._handles = OpenHandles()
        self.readers = SharedReaders()
        verify_unknown("")  # computes the dummy hash now, so no sign-in pays for it

    def __repr__(self) -> str:
        return f"LocalStore({str(self.path)!r})"

    def open_tables(self) -> list[FileInfo]:
        """The tables whose handles are open now (opened by ``open_table``, not yet closed),
        one entry per open handle: what a read that forgot to close leaves behind."""
        return [handle.info for handle in self._handles.handles()]

    def close(self) -> None:
        """Close unused table files, remove this store's (empty, once uploads ended) temporary
        folder and unlock it."""
        if self._tmp_lock.closed:
            return
        self.readers.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        Path(f"{self.tmp}.lock").unlink(missing_ok=True)
        self._tmp_lock.close()

    # -- users and groups ------------------------------------------------------------

    def add_group(self, name: str, permissions: str = "private") -> int:
        """Create a group with an OMERO permission level; returns its id."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgument(f"invalid group name {name!r}")
        if permissions not in PERMISSIONS:
            raise InvalidArgument(
                f"unknown permissions {permissions!r}: use one of {', '.join(PERMISSIONS)}"
            )
        try:
            with self.catalog.transaction() as db:
                cur = db.execute("INSERT INTO groups (name, permissions) VALUES (?, ?)",
                                 (name, permissions))
                return _rowid(cur)
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"group {name!r} already exists") from None

    def _group_id(self, name: str) -> int:
        row = self.catalog.one("SELECT id FROM groups WHERE name = ?", (name,))
        if row is None:
            raise NotFound(f"no group named {name!r}")
        return int(row["id"])

    def add_user(
        self, username: str, password: str, groups: Sequence[str] = (), admin: bool = False
    ) -> UserInfo:
        """Create a user; the first group is the default group (admins default to 'system')."""
        if not isinstance(username, str) or not username.strip() or ":" in username:
            raise InvalidArgument(f"invalid user name {username!r} (empty or contains ':')")
        if username == SESSION_USER:
            raise InvalidArgument(f"the user name {SESSION_USER!r} is reserved")
        groups = list(groups)
        if not groups:
            if not admin:
                raise InvalidArgument(f"user {username!r} needs at least one group")
            if self.catalog.one("SELECT id FROM groups WHERE name = ?", (ADMIN_GROUP,)) is None:
                self.add_group(ADMIN_GROUP, "private")
            groups = [ADMIN_GROUP]
        group_ids = [self._group_id(g) for g in groups]
        hashed = _hash(password)
        try:
            with self.catalog.transaction() as db:
                cur = db.execute(
                    "INSERT INTO users (username, password, admin, default_group) "
                    "VALUES (?, ?, ?, ?)", (username, hashed, int(admin), group_ids[0]))
                user_id = _rowid(cur)
                db.executemany("INSERT OR IGNORE INTO memberships VALUES (?, ?)",
                               [(user_id, g) for g in group_ids])
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"user {username!r} already exists") from None
        return self._user_info(username)

    def set_password(self, username: str, password: str) -> None:
        """Change a password; every token the user holds stops working."""
        hashed = _hash(password)
        with self.catalog.transaction() as db:
            cur = db.execute("UPDATE users SET password = ?, "
                             "token_generation = token_generation + 1 WHERE username = ?",
                             (hashed, username))
            if cur.rowcount == 0:
                raise NotFound(f"no user named {username!r}")

    def remove_user(self, username: str) -> None:
        """Remove a user who owns no files; never the last administrator."""
        row = self.catalog.one("SELECT id, admin FROM users WHERE username = ?", (username,))
        if row is None:
            raise NotFound(f"no user named {username!r}")
        owned = self.catalog.query("SELECT COUNT(*) AS n FROM original_files WHERE owner_id = ?",
                                   (row["id"],))[0]["n"]
        if owned:
            raise InvalidArgument(f"user {username!r} owns {owned} file(s); cannot remove")
        with self.catalog.transaction() as db:
            admins = db.execute("SELECT COUNT(*) FROM users WHERE admin = 1").fetchone()[0]
            if row["admin"] and admins <= 1:  # counted inside the write lock
                raise InvalidArgument(f"user {username!r} is the last administrator; add "
                                      "another administrator first (user add NAME --admin)")
            db.execute("DELETE FROM users WHERE id = ?", (row["id"],))

    def _user_info(self, username: str) -> UserInfo:
        row = self.catalog.one(
            "SELECT u.id, u.username, u.admin, g.name AS dflt FROM users u "
            "JOIN groups g ON g.id = u.default_group WHERE u.username = ?", (username,))
        if row is None:
            raise NotFound(f"no user named {username!r}")
        names = self.catalog.query(
            "SELECT g.name FROM memberships m JOIN groups g ON g.id = m.group_id "
            "WHERE m.user_id = ? ORDER BY g.id", (row["id"],))
        return UserInfo(row["id"], row["username"], bool(row["admin"]), row["dflt"],
                        tuple(r["name"] for r in names))

    def list_users(self) -> list[UserInfo]:
        rows = self.catalog.query("SELECT username FROM users ORDER BY id")
        return [self._user_info(r["username"]) for r in rows]

    def list_groups(self) -> list[GroupInfo]:
        out = []
        for g in self.catalog.query("SELECT id, name, permissions FROM groups ORDER BY id"):
            members = self.catalog.query(
                "SELECT u.username FROM memberships m JOIN users u ON u.id = m.user_id "
                "WHERE m.group_id = ? ORDER BY u.id", (g["id"],))
            out.append(GroupInfo(g["id"], g["name"], g["permissions"],
                                 tuple(m["username"] for m in members)))
        return out

    def lookup_caller(self, username: str) -> Caller:
        row = self.catalog.one(
            "SELECT id, admin, default_group FROM users WHERE username = ?", (username,))
        if row is None:
            raise Unauthenticated(f"unknown user {username!r}")
        others = self.catalog.query(
            "SELECT group_id FROM memberships WHERE user_id = ? AND group_id != ? "
            "ORDER BY group_id", (row["id"], row["default_group"]))
        group_ids = (int(row["default_group"]), *(int(r["group_id"]) for r in others))
        return Caller(int(row["id"]), username, group_ids, bool(row["admin"]))

    def authenticate(self, username: str, password: str) -> Caller:
        if username == SESSION_USER:
            raise Unauthenticated(
                "OMERO session keys (user '__session__') are only accepted by a server "
                "running the OMERO backend; this server uses the embedded store"
            )
        row = self.catalog.one("SELECT password FROM users WHERE username = ?", (username,))
        # One scrypt either way, so timing does not reveal which names exist.
        if row is None:
            verify_unknown(password)
            raise Unauthenticated("wrong user name or password")
        if not verify_password(password, row["password"]):
            raise Unauthenticated("wrong user name or password")
        return self.lookup_caller(username)

    def token_subject(self, caller: Caller) -> str:
        """``id:<user id>:<token generation>:<sign-in>``: a token ends with its own logout,
        with a password change or the user's removal (every token of that user), and never
        reaches a new user of the same name."""
        row = self.catalog.one("SELECT token_generation FROM users WHERE id = ?",
                               (caller.user_id,))
        if row is None:
            raise Unauthenticated("this user no longer exists")
        return f"id:{caller.user_id}:{row['token_generation']}:{secrets.token_hex(12)}"

    def caller_for_token(self, subject: str) -> Caller:
        parts = subject.split(":")
        if len(parts) != 4 or parts[0] != "id" or not all(
                p.isascii() and p.isdigit() for p in parts[1:3]) or not parts[3].isalnum():
            raise Unauthenticated("invalid token: sign in again")
        user_id, generation, sign_in = int(parts[1]), int(parts[2]), parts[3]
        row = self.catalog.one("SELECT username, token_generation FROM users WHERE id = ?",
                               (user_id,))
        if row is None or row["token_generation"] != generation or self.catalog.one(
                "SELECT 1 FROM ended_sign_ins WHERE sign_in = ?", (sign_in,)) is not None:
            raise Unauthenticated("this sign-in has ended: sign in again")
        return replace(self.lookup_caller(row["username"]), session=sign_in)

    def logout(self, caller: Caller) -> None:
        """End the caller's sign-in: its token stops working (the user's others do not)."""
        if not isinstance(caller.session, str):
            return  # no token (a server without authentication): nothing to end
        now = time.time()
        with self.catalog.transaction() as db:
            db.execute("INSERT OR IGNORE INTO ended_sign_ins VALUES (?, ?)",
                       (caller.session, now))
            db.execute("DELETE FROM ended_sign_ins WHERE ended < ?", (now - ENDED_KEPT,))

    def token_secret(self) -> bytes:
        """The HMAC key for bearer tokens, created (0600) on first use."""
        path = self.path / "secret.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, 0o600)  # whatever the umask
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
        return path.read_bytes()

    def ping(self) -> None:
        """Readiness: the catalog opens afresh (read-only) and answers a query."""
        uri = (self.path / "catalog.sqlite").as_uri() + "?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=2.0)
        try:
            db.execute("SELECT COUNT(*) FROM users").fetchone()
        finally:
            db.close()

    # -- reading ---------------------------------------------------------------------

    def _row(self, caller: Caller, ref: TableRef) -> sqlite3.Row:
        arg: int | None
        if ref.file_id is not None:
            where, arg = "f.id = ?", ref.file_id
        else:
            where, arg = "a.id = ?", ref.annotation_id
        row = self.catalog.one(f"SELECT {FILE_COLUMNS} FROM {FILE_JOINS} WHERE {where}", (arg,))
        # As OMERO does: what the caller may not see does not exist for them (the same
        # answer, so no one can map which ids exist or who owns them).
        if row is None or not self._can_read(caller, row):
            raise NotFound(f"{ref} does not exist")
        return row

    @staticmethod
    def _can_read(caller: Caller, row: sqlite3.Row) -> bool:
        if caller.is_admin or row["owner_id"] == caller.user_id:
            return True
        return row["group_id"] in caller.group_ids and row["permissions"] != "private"

    def _disk_path(self, row: sqlite3.Row) -> Path:
        return self.path / row["path"]

    def _file_info(self, caller: Caller, ref: TableRef) -> FileInfo:
        return _file_info(self._row(caller, ref))

    def _open_table(self, caller: Caller, ref: TableRef) -> TableHandle:
        row = self._row(caller, ref)
        info = _file_info(row)
        check_table_file(ref, info)
        if not row["is_table"]:
            raise InvalidArgument(
                f"{ref} ({row['name']!r}) was uploaded as a plain file, not written by the "
                "bridge as a table: it is data, and is never opened as a table"
            )
        path = self._disk_path(row)
        handle: TableHandle
        if path.is_dir():  # a TileDB array is a folder
            from flight_server.backends.formats.tiledb import TileDBReader

            handle = TileDBReader(path, info, on_close=self._handles.discard)
        else:
            handle = self.readers.open(path, info, on_close=self._handles.discard)
        return self._handles.add(handle)

    def _read_file(self, caller: Caller, ref: TableRef, chunk_size: int) -> Iterator[bytes]:
        path = self._disk_path(self._row(caller, ref))
        if path.is_dir():
            raise InvalidArgument(f"{ref} is a TileDB table (a folder), not a single file: "
                                  "read it as a table")
        fh = path.open("rb")

        def chunks() -> Iterator[bytes]:
            with fh:
                while data := fh.read(chunk_size):
                    yield data

        return chunks()

    def _list_tables_page(self, caller: Caller, object_type: str | None,
                          object_id: int | None, size: int, after: int) -> TablePage:
        """Up to ``size`` tables by file id, after the file id ``after``."""
        sql = (f"SELECT {FILE_COLUMNS} FROM {FILE_JOINS} WHERE f.mimetype = ? "
               "AND f.is_table = 1 AND f.id > ?")
        linked: list[object] = []
        if object_type is not None:
            sql += (" AND EXISTS (SELECT 1 FROM links l WHERE l.annotation_id = a.id "
                    "AND l.object_type = ?" + (" AND l.object_id = ?)" if object_id is not None
                                              else ")"))
            linked = [object_type] if object_id is None else [object_type, object_id]
        out: list[TableSummary] = []
        while len(out) < size:
            wanted = size - len(out)
            rows = self.catalog.query(sql + " ORDER BY f.id LIMIT ?",
                                      [TABLE_MIMETYPE, after, *linked, wanted])
            readable = [row for row in rows if self._can_read(caller, row)]
            links = self._links_of([row["annotation_id"] for row in readable])
            out.extend(TableSummary(_file_info(row), links.get(row["annotation_id"], ()),
                                    row["rows"]) for row in readable)
            if len(rows) < wanted:
                return TablePage(out, None)
            after = rows[-1]["file_id"]
        return TablePage(out, token_after(after))

    def _links_of(self, annotation_ids: list[int]) -> dict[int, tuple[tuple[str, int], ...]]:
        """The links of a page's FileAnnotations, in one query (a page holds at most
        paging.MAX_PAGE_SIZE ids, below SQLite's 32,766 parameters)."""
        if not annotation_ids:
            return {}
        marks = ",".join("?" * len(annotation_ids))
        found: dict[int, list[tuple[str, int]]] = {}
        for r in self.catalog.query(
                f"SELECT annotation_id, object_type, object_id FROM links "
                f"WHERE annotation_id IN ({marks}) ORDER BY object_type, object_id",
                annotation_ids):
            found.setdefault(r["annotation_id"], []).append((r["object_type"], r["object_id"]))
        return {k: tuple(v) for k, v in found.items()}

    # -- writing ---------------------------------------------------------------------

    def _create_table(self, caller: Caller, name: str, schema: pa.Schema, links: Links,
                      description: str, format: str) -> TableWriter:
        return _LocalTableWriter(self, caller, name, schema, links, description, format)

    def _create_file(self, caller: Caller, name: str, mimetype: str,
                     links: Links) -> FileWriter:
        return _LocalFileWriter(self, caller, name, mimetype, links)

    def add_file(
        self,
        owner_username: str,
        source: str | os.PathLike[str] | bytes,
        name: str | None = None,
        mimetype: str | None = None,
        links: Iterable[Sequence[object]] = (),
    ) -> FileInfo:
        """Store a plain file (seeding CSVs for tests and demos) as ``owner_username``."""
        if isinstance(source, bytes):
            if not name:
                raise InvalidArgument("a name is required when adding bytes")
            stream: BinaryIO = io.BytesIO(source)
        else:
            stream = Path(source).open("rb")
            name = name or Path(source).name
        writer = self.create_file(self.lookup_caller(owner_username), name, mimetype or "",
                                  tuple(tuple(x) for x in links))  # type: ignore[misc]
        try:
            with stream:
                while data := stream.read(1 << 20):
                    writer.write(data)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def _publish(
        self,
        caller: Caller,
        tmp: Path,
        name: str,
        mimetype: str,
        links: Sequence[tuple[str, int]],
        rows: int | None,
        description: str = "",
        is_table: bool = False,
    ) -> tuple[int, int]:
        """Catalog rows and file move in one transaction; returns (file_id, annotation_id).

        ``is_table``: the bridge wrote this file as a table (only such files are opened
        as tables).
        """
        final: Path | None = None
        try:
            make_private(tmp)
            with self.catalog.transaction() as db:
                cur = db.execute(
                    "INSERT INTO original_files (name, mimetype, size, owner_id, group_id, path,"
                    " rows, created, is_table) VALUES (?, ?, ?, ?, ?, '', ?, ?, ?)",
                    (name, mimetype, _disk_size(tmp), caller.user_id, caller.group_ids[0],
                     rows, time.time(), int(is_table)))
                file_id = _rowid(cur)
                final = original_file_path(self.path, file_id)
                db.execute("UPDATE original_files SET path = ? WHERE id = ?",
                           (str(final.relative_to(self.path)), file_id))
                cur = db.execute(
                    "INSERT INTO file_annotations (file_id, description) VALUES (?, ?)",
                    (file_id, description))
                annotation_id = _rowid(cur)
                db.executemany("INSERT INTO links VALUES (?, ?, ?)",
                               [(annotation_id, t, i) for t, i in links])
                _private_parents(final.parent, self.path)
                os.replace(tmp, final)
        except BaseException:
            _remove(tmp)
            if final is not None and final.exists() and not tmp.exists():
                # The rename happened but COMMIT failed: the catalog does not know the file.
                _remove(final)
            raise
        return file_id, annotation_id

    def _info(self, file_id: int) -> FileInfo:
        row = self.catalog.one(f"SELECT {FILE_COLUMNS} FROM {FILE_JOINS} WHERE f.id = ?",
                               (file_id,))
        if row is None:
            raise NotFound(f"OriginalFile {file_id} does not exist")
        return _file_info(row)


def _rowid(cur: sqlite3.Cursor) -> int:
    """The id SQLite gave the row an INSERT just added."""
    if cur.lastrowid is None:
        raise RuntimeError("the catalog's INSERT gave no row id")
    return cur.lastrowid


def _private_mode(path: Path, st: os.stat_result) -> None:
    mode = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def make_private(path: Path) -> None:
    """``path`` and, for a folder, everything in it: folders 0700, files 0600 (no symlinks)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return
    _private_mode(path, st)
    if not stat.S_ISDIR(st.st_mode):
        return
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            child = Path(root) / name
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile (an upload ended)
                st = os.lstat(child)
                if not stat.S_ISLNK(st.st_mode):
                    _private_mode(child, st)


def _private_parents(folder: Path, top: Path) -> None:
    """Create ``folder`` (inside ``top``) and its missing parents, each 0700."""
    missing = []
    while not folder.exists() and folder != top:
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        with contextlib.suppress(FileExistsError):
            f.mkdir(mode=0o700)
        os.chmod(f, 0o700)


def _own_tmp(tmp: Path) -> tuple[Path, io.BufferedWriter]:
    """This store's temporary folder ``tmp/<id>/``, after removing those of dead stores.

    A running store holds ``tmp/<id>.lock`` locked (``flock``: the lock ends with the
    process, even when it is killed), so a folder whose lock can be taken is a leftover.
    """
    tmp.mkdir(mode=0o700, exist_ok=True)
    os.chmod(tmp, 0o700)
    for entry in tmp.iterdir():
        with contextlib.suppress(FileNotFoundError):  # another store removed it meanwhile
            if entry.suffix == ".lock":
                continue
            if entry.suffix == ".pending" and (time.time() - entry.stat().st_mtime < 60
                                               or not _lock_is_free(entry)):
                continue  # another store starting right now
            lock = tmp / f"{entry.name}.lock"
            if lock.exists() and not _lock_is_free(lock):
                continue  # a running store's uploads
            _remove(entry)
            lock.unlink(missing_ok=True)
            log.info("removed leftover temporary files %s", entry)
    for lock in tmp.glob("*.lock"):  # locks whose folder is gone
        if not (tmp / lock.stem).exists() and _lock_is_free(lock):
            lock.unlink(missing_ok=True)
    ident = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    # Lock under a private name, then rename: a lock file another store can see is locked.
    pending = tmp / f".{ident}.pending"
    fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)
    handle = open(fd, "wb")  # held open (locked) while the store runs
    _flock(handle, blocking=True)
    os.replace(pending, tmp / f"{ident}.lock")
    own = tmp / ident
    own.mkdir(mode=0o700)
    os.chmod(own, 0o700)
    return own, handle


def _flock(handle: io.BufferedWriter, blocking: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, leftovers are kept
        return blocking
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        return False
    return True


def _lock_is_free(lock: Path) -> bool:
    """Whether no running store holds ``lock`` (a missing file holds nothing)."""
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    with open(fd, "ab") as handle:
        return _flock(handle, blocking=False)


def _hash(password: str) -> str:
    try:
        return hash_password(password)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def _disk_size(path: Path) -> int:
    """Bytes of a file, or of every file in a folder (a TileDB array)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _remove(path: Path) -> None:
    """Remove a file or a folder (a TileDB array), if it exists."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _check_caller(caller: Caller) -> None:
    if not caller.group_ids:
        raise PermissionDenied(f"user {caller.username!r} has no default group to write into")


class _LocalTableWriter(TableWriter):
    def __init__(self, store: LocalStore, caller: Caller, name: str, schema: pa.Schema,
                 links: Sequence[tuple[str, int]], description: str,
                 format: str = "hdf5") -> None:
        _check_caller(caller)
        self._store, self._caller, self._name = store, caller, name
        self._links, self._description = links, description
        self._writer: H5Writer | TileDBWriter | None
        suffix = ".tiledb" if format == "tiledb" else ".h5"
        self._tmp = store.tmp / f"upload-{uuid.uuid4().hex}{suffix}"
        try:
            if format == "tiledb":
                from flight_server.backends.formats.tiledb import TileDBWriter

                self._writer = TileDBWriter(self._tmp, schema)
            else:
                self._writer = H5Writer(self._tmp, schema)
        except BaseException:
            _remove(self._tmp)  # a refused upload leaves nothing
            raise

    def append(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            raise InvalidArgument("this upload is already finished")
        self._writer.append(batch)

    def commit(self) -> UploadResult:
        if self._writer is None:
            raise InvalidArgument("this upload is already finished")
        writer, self._writer = self._writer, None
        writer.close()
        file_id, annotation_id = self._store._publish(
            self._caller, self._tmp, self._name, TABLE_MIMETYPE, self._links, writer.rows,
            self._description, is_table=True)
        log.info("table %s (OriginalFile %d, %d rows) uploaded by %s", self._name, file_id,
                 writer.rows, self._caller.username)
        return UploadResult(annotation_id=annotation_id, file_id=file_id, rows=writer.rows)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        _remove(self._tmp)


class _LocalFileWriter(FileWriter):
    def __init__(self, store: LocalStore, caller: Caller, name: str, mimetype: str,
                 links: Sequence[tuple[str, int]]) -> None:
        _check_caller(caller)
        self._store, self._caller, self._name = store, caller, name
        self._mimetype, self._links = mimetype, links
        self._tmp = store.tmp / f"file-{uuid.uuid4().hex}"
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)  # whatever the umask
        self._fh: BinaryIO | None = open(fd, "wb")  # closed by commit or abort

    def write(self, data: bytes) -> None:
        if self._fh is None:
            raise InvalidArgument("this upload is already finished")
        self._fh.write(data)

    def commit(self) -> FileInfo:
        if self._fh is None:
            raise InvalidArgument("this upload is already finished")
        self._fh.close()
        self._fh = None
        file_id, _ = self._store._publish(self._caller, self._tmp, self._name, self._mimetype,
                                          self._links, None)
        return self._store._info(file_id)

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._tmp.unlink(missing_ok=True)
