"""Where OMERO keeps an OriginalFile's bytes inside its binary repository.

OMERO stores OriginalFile ``id`` under ``<data dir>/Files/``, spreading large
ids over ``Dir-NNN`` folders (ome.io.nio.AbstractFileSystemService.getPath):
id 12 -> ``Files/12``, id 1234 -> ``Files/Dir-001/1234``, id 1234567 ->
``Files/Dir-001/Dir-234/1234567``. The embedded store, the OMERO stand-in and
direct reads beside a real OMERO all use this one function.
"""

from __future__ import annotations

from pathlib import Path


def original_file_path(data_dir: str | Path, file_id: int) -> Path:
    """Path of OriginalFile ``file_id`` under an OMERO data directory."""
    if file_id < 0:
        raise ValueError(f"OriginalFile ids are not negative, got {file_id}")
    parts: list[str] = []
    remaining = file_id
    while remaining > 999:
        remaining //= 1000
        if remaining > 0:
            parts.insert(0, f"Dir-{remaining % 1000:03d}")
    return Path(data_dir, "Files", *parts, str(file_id))
