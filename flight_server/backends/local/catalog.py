"""The embedded store's SQLite catalog: users, groups, OriginalFiles, FileAnnotations, links.

One connection shared by all threads behind a lock; SQLite transactions are
short (a few rows), so this never holds up a data stream. Ids follow OMERO's
habit of separate sequences per kind; FileAnnotation ids start well above
OriginalFile ids so that a client mixing the two up fails loudly.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

PERMISSIONS = ("private", "read-only", "read-annotate", "read-write")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT UNIQUE NOT NULL,
    permissions TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT UNIQUE NOT NULL,
    password TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    default_group INTEGER NOT NULL REFERENCES groups(id)
);
CREATE TABLE IF NOT EXISTS memberships (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES groups(id),
    PRIMARY KEY (user_id, group_id)
);
CREATE TABLE IF NOT EXISTS original_files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    mimetype TEXT NOT NULL,
    size INTEGER NOT NULL,
    owner_id INTEGER NOT NULL REFERENCES users(id),
    group_id INTEGER NOT NULL REFERENCES groups(id),
    path TEXT NOT NULL,
    rows INTEGER,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS file_annotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id INTEGER NOT NULL REFERENCES original_files(id) ON DELETE CASCADE,
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS links (
    annotation_id INTEGER NOT NULL REFERENCES file_annotations(id) ON DELETE CASCADE,
    object_type TEXT NOT NULL,
    object_id INTEGER NOT NULL,
    PRIMARY KEY (annotation_id, object_type, object_id)
);
CREATE INDEX IF NOT EXISTS links_object ON links (object_type, object_id);
"""

#: First FileAnnotation id (OriginalFile ids start at 1).
ANNOTATION_ID_BASE = 500

FILE_COLUMNS = """
    f.id AS file_id, f.name, f.mimetype, f.size, f.owner_id, f.group_id, f.path, f.rows,
    f.is_table,
    a.id AS annotation_id, u.username AS owner, g.name AS grp, g.permissions
"""
FILE_JOINS = """
    original_files f
    LEFT JOIN file_annotations a ON a.file_id = f.id
    LEFT JOIN users u ON u.id = f.owner_id
    JOIN groups g ON g.id = f.group_id
"""


def _add_table_marks(db: sqlite3.Connection) -> None:
    """Migration: ``original_files.is_table``, 1 only for tables the bridge itself wrote.

    Only such files are ever opened as tables; a file a user uploaded is data, whatever
    its mimetype. In a store from before this column, the tables the bridge wrote are the
    OMERO.tables files with a row count (plain file uploads never had one).
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        names = {row[1] for row in db.execute("PRAGMA table_info(original_files)")}
        if "is_table" in names:
            db.execute("COMMIT")
            return
        db.execute("ALTER TABLE original_files ADD COLUMN is_table INTEGER NOT NULL DEFAULT 0")
        db.execute("UPDATE original_files SET is_table = 1 "
                   "WHERE mimetype = 'OMERO.tables' AND rows IS NOT NULL")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _migrate_users(db: sqlite3.Connection) -> None:
    """Additive: ``users.token_generation``, advanced by a password change (removal deletes
    the user); a bearer token names the user id, that generation and its own sign-in, which
    logout ends (``ended_sign_ins``)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(users)")}
    if "token_generation" not in columns:
        db.execute("ALTER TABLE users ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0")
    # Sign-ins ended by logout (one token each), kept until every token could have expired.
    db.execute("CREATE TABLE IF NOT EXISTS ended_sign_ins (sign_in TEXT PRIMARY KEY, "
               "ended REAL NOT NULL)")


class Catalog:
    """The SQLite file ``catalog.sqlite`` inside a store folder."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(_SCHEMA)
            _add_table_marks(self._db)
            _migrate_users(self._db)
            self._db.execute(
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'file_annotations', ? "
                "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name='file_annotations')",
                (ANNOTATION_ID_BASE - 1,),
            )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = self.query(sql, args)
        return rows[0] if rows else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
