"""``omero-flight demo`` runs the whole slice on its own: server, upload, reads."""

import re
import subprocess
import sys

from flight_server.cli import main


def test_demo_uploads_and_reads_back(capsys):
    assert main(["demo", "--rows", "5000"]) == 0
    out = capsys.readouterr().out
    assert "bridge on grpc://127.0.0.1:" in out
    assert "5,000 rows x 8 columns" in out
    assert re.search(r"read_table -> pandas \(all columns\)\s+[\d.]+ s\s+5,000 rows", out)
    match = re.search(r"([\d,]+) rows match", out)
    assert match and int(match.group(1).replace(",", "")) > 0
    assert "(same rows as pandas)" in out
    counts = re.findall(r"^\s+(\w+)\s+([\d,]+) objects", out, flags=re.M)
    assert len(counts) == 5
    assert sum(int(n.replace(",", "")) for _, n in counts) == 5000


def test_demo_keeps_store_when_asked(tmp_path, capsys):
    assert main(["demo", "--rows", "100", "--store", str(tmp_path / "kept")]) == 0
    assert (tmp_path / "kept").is_dir() and any((tmp_path / "kept").iterdir())


def test_demo_bad_rows_is_a_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "flight_server.cli", "demo", "--rows", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "error: --rows must be at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr
