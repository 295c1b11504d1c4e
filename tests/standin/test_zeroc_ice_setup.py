"""scripts/ensure-zeroc-ice.sh on a fresh virtual environment reuses the cached wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "ensure-zeroc-ice.sh"


def _cached_wheel() -> Path:
    cache = Path(os.environ.get("OMERO_FLIGHT_CACHE")
                 or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                         "omero-flight"))
    abi = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return cache / "wheels" / f"zeroc_ice-3.6.5-{abi}-{abi}-{plat}.whl"


@pytest.mark.omero
def test_fresh_venv_reuses_cached_wheel(tmp_path):
    if not _cached_wheel().exists():
        pytest.skip(f"no cached zeroc-ice wheel at {_cached_wheel()}; run make test first")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"

    first = subprocess.run(["bash", str(SCRIPT), str(python)], capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr
    assert "reusing cached wheel" in first.stdout
    assert "building" not in first.stdout
    assert "3.6.5 ready" in first.stdout

    second = subprocess.run(["bash", str(SCRIPT), str(python)], capture_output=True,
                            text=True, timeout=120, check=True)
    assert "already installed" in second.stdout
    version = subprocess.run([str(python), "-c", "import Ice; print(Ice.stringVersion())"],
                             capture_output=True, text=True, check=True)
    assert version.stdout.strip() == "3.6.5"
