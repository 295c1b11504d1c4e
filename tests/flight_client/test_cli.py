"""The client subcommands of ``omero-flight``: ls, info, download, upload."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from flight_client.details import ENV_PASSWORD, ENV_URL, ENV_USER
from flight_server.cli import main


@pytest.fixture
def as_alice(bridge, monkeypatch):
    monkeypatch.setenv(ENV_URL, bridge.url)
    monkeypatch.setenv(ENV_USER, "alice")
    monkeypatch.setenv(ENV_PASSWORD, bridge.passwords["alice"])


def test_ls(table, as_alice, capsys):
    assert main(["ls", "--object", "Image:7001"]) == 0
    out = capsys.readouterr().out
    assert "measurements" in out and str(table.annotation_id) in out
    assert main(["ls", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert table.annotation_id in {t["annotation_id"] for t in listed}


def test_info(table, as_alice, capsys):
    assert main(["info", "--file-id", str(table.file_id)]) == 0
    out = capsys.readouterr().out
    assert "300 rows, 5 columns" in out and "ImageColumn" in out and "StringColumn" in out


def test_download_and_upload(table, as_alice, capsys, tmp_path):
    target = tmp_path / "part.csv"
    args = ["download", "-a", str(table.annotation_id), str(target), "--rows", "0:10",
            "--columns", "id,label", "--no-progress"]
    assert main(args) == 0
    back = pd.read_csv(target, index_col=0)
    assert list(back.columns) == ["id", "label"] and len(back) == 10

    assert main(["upload", str(target), "--name", "again", "--link", "Dataset:7"]) == 0
    annotation_id = int(capsys.readouterr().out.strip())
    assert main(["download", "-a", str(annotation_id), str(tmp_path / "again.parquet")]) == 0
    again = pd.read_parquet(tmp_path / "again.parquet")
    assert list(again["label"]) == list(back["label"])


def test_download_tiledb(table, as_alice, tmp_path):
    tiledb = pytest.importorskip("tiledb", reason="the tiledb extra is not installed")
    target = tmp_path / "part.tiledb"
    assert main(["download", "-a", str(table.annotation_id), str(target), "--rows", "0:10",
                 "--columns", "id,label", "--no-progress"]) == 0
    with tiledb.open(str(target)) as array:
        ids = array.query(attrs=["id"])[:]["id"]
    assert list(ids) == list(table.frame["id"][:10])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["upload", "x.csv", "--name", "t"], "at least one --link"),
        (["info", "-f", "987654"], "does not exist"),
        (["download", "-f", "1", "{existing}"], "already exists"),
        (["upload", "{missing}", "--name", "t", "--link", "Image:1"], "could not find"),
    ],
)
def test_user_errors_exit_2_without_traceback(args, message, as_alice, capsys, tmp_path):
    existing = tmp_path / "existing.csv"
    existing.write_text("x")
    args = [a.format(existing=existing, missing=tmp_path / "missing.csv") for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("omero-flight: error: ") and message in err
    assert "Traceback" not in err


def test_console_script_wrong_password(bridge):
    env = {**os.environ, ENV_URL: bridge.url, ENV_USER: "alice", ENV_PASSWORD: "wrong"}
    done = subprocess.run([sys.executable, "-c", "from flight_server.cli import main; "
                           "raise SystemExit(main())", "ls"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("omero-flight: error: ") and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["ls", "info", "download", "upload"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "examples:" in capsys.readouterr().out
