"""The token-signing key from a file (``token_secret_file``), shared by every replica.

The file's bytes are the key, as they are (a trailing newline is part of it):
make one with ``openssl rand -out token.key 32`` or ``head -c 32 /dev/urandom``.
Anyone who can read it can sign tokens for any user, so the bridge refuses a
file that others may read or write, or that a group the bridge is not in may
read. A group the bridge is in may read it: a Kubernetes Secret mounted for a
non-root pod is ``0440``, root-owned, in the pod's ``fsGroup``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from flight_server.config import ConfigError

MIN_KEY_BYTES = 32


def read_token_key(path: str | os.PathLike[str] | None) -> bytes | None:
    """The key in ``path`` (None when no file is set); ConfigError naming what is wrong."""
    if path is None:
        return None
    path = Path(path)
    try:
        info = path.stat()
        key = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"token_secret_file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"token_secret_file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"token_secret_file {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o007 or mode & 0o020:
        raise ConfigError(f"token_secret_file {path} has mode {mode:04o}: other users could "
                          f"read or change the key; chmod 0600 (or 0400) it")
    if mode & 0o040 and info.st_gid not in {os.getegid(), *os.getgroups()}:
        raise ConfigError(f"token_secret_file {path} is readable by group {info.st_gid}, "
                          f"which this process is not in; chmod g-r it")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"token_secret_file {path} holds {len(key)} bytes; a signing key "
                          f"needs at least {MIN_KEY_BYTES}")
    return key
