"""A fresh virtual environment with only ``pip install .`` (no extras) runs the client
commands against a running bridge, and the server commands name the extra to install.

Slow (it installs pyarrow, pandas, numpy and tqdm from the configured index or cache):
marked ``slow``. The bridge runs in this test's own interpreter (the full environment).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import pandas as pd
import pytest

import flight_client
from flight_client.connection import Connection

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
#: What ``pip install .`` needs of the source tree.
SOURCES = ("pyproject.toml", "README.md", "flight_protocol", "flight_client", "flight_server")


@pytest.fixture(scope="module")
def client_only(tmp_path_factory) -> Path:
    """The ``bin`` folder of a venv holding omero-flight with its base dependencies only."""
    where = tmp_path_factory.mktemp("client-only")
    source = where / "src"
    source.mkdir()
    for name in SOURCES:  # a copy: building must not leave build/ or egg-info in the tree
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    env_dir = where / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    done = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", str(source)],
                          capture_output=True, text=True, timeout=1200, cwd=where)
    if done.returncode != 0:
        pytest.fail(f"pip install . failed:\n{done.stdout}\n{done.stderr}")
    return bin_dir


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMERO_FLIGHT_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


def omero_flight(bin_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / "omero-flight"), *args], capture_output=True,
                          text=True, timeout=300, env=_clean_env(**env), cwd=bin_dir,
                          stdin=subprocess.DEVNULL)


def test_no_server_packages_in_the_fresh_venv(client_only):
    probe = ("import importlib.util as u, sys; "
             "sys.exit(any(u.find_spec(m) for m in ('tables', 'h5py', 'omero', 'duckdb')))")
    assert subprocess.run([str(client_only / "python"), "-c", probe], env=_clean_env(),
                          cwd=client_only).returncode == 0
    where = subprocess.run([str(client_only / "python"), "-c",
                            "import flight_server; print(flight_server.__file__)"],
                           capture_output=True, text=True, env=_clean_env(), cwd=client_only)
    assert str(client_only.parent) in where.stdout  # the installed copy, not this tree


def test_client_commands_from_a_client_only_install(client_only, bridge, tmp_path):
    frame = pd.DataFrame({"id": range(30), "area": [i / 2 for i in range(30)],
                          "label": [f"c{i}" for i in range(30)]})
    with Connection(bridge.url, username="alice", password=bridge.passwords["alice"]) as conn:
        annotation = flight_client.upload_table(frame, "client-only", links=[("Image", 8201)],
                                                omero_connector=conn, progress=False)
    alice = {"OMERO_FLIGHT_URL": bridge.url, "OMERO_FLIGHT_USER": "alice",
             "OMERO_FLIGHT_PASSWORD": bridge.passwords["alice"]}

    for args in (["--help"], ["--version"], ["ls", "--help"]):
        done = omero_flight(client_only, *args)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done

    listing = omero_flight(client_only, "ls", "--object", "Image:8201", **alice)
    assert listing.returncode == 0 and "client-only" in listing.stdout, listing
    info = omero_flight(client_only, "info", "-a", str(annotation), **alice)
    assert info.returncode == 0 and "30 rows, 3 columns" in info.stdout, info

    csv, parquet = tmp_path / "t.csv", tmp_path / "t.parquet"
    for target in (csv, parquet):
        got = omero_flight(client_only, "download", "-a", str(annotation), str(target),
                           "--no-progress", **alice)
        assert got.returncode == 0, got
    assert list(pd.read_parquet(parquet)["label"]) == list(frame["label"])
    assert list(pd.read_csv(csv, index_col=0)["id"]) == list(frame["id"])

    up = omero_flight(client_only, "upload", str(csv), "--name", "back", "--link",
                      "Image:8202", "--no-progress", **alice)
    assert up.returncode == 0 and up.stdout.strip().isdigit(), up
    with Connection(bridge.url, username="alice", password=bridge.passwords["alice"]) as conn:
        back = flight_client.read_table(annotation_id=int(up.stdout), omero_connector=conn)
    assert list(back["area"]) == list(frame["area"])


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["user", "list"],
                                     ["group", "list"], ["demo", "--rows", "10"]])
def test_server_commands_name_the_extra(client_only, command, tmp_path):
    done = omero_flight(client_only, *command, OMERO_FLIGHT_HOME=str(tmp_path / "home"))
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done
    assert "pip install 'omero-flight[server]'" in done.stderr and "Traceback" not in done.stderr


