"""Which progress bar shows: none when piped, text on a terminal, a widget in a notebook kernel;
and, in a kernel run headless, the login form signs in once filled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flight_client import progress

ROOT = Path(__file__).resolve().parents[2]
WIDGET = "application/vnd.jupyter.widget-view+json"


def test_piped_has_no_bar_and_no_notebook():
    code = ("import flight_client.progress as p; "
            "b = p.bar('x', 10, 'rows', None); print(p.in_notebook(), b.disable)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env, stdin=subprocess.DEVNULL)
    assert out.stdout.split() == ["False", "True"]
    assert out.stderr == ""


def test_forced_bar_outside_a_notebook_is_the_text_bar():
    assert not progress.in_notebook()
    with progress.bar("x", 3, "rows", True) as shown:
        assert type(shown) is progress.text_tqdm and not shown.disable
    assert progress.bar("x", 3, "rows", False).disable


def test_notebook_kernel_shows_a_widget_bar_and_login_form(table, alice, tmp_path):
    """A notebook run headless (nbclient + ipykernel): tqdm's widget bar during a read, and
    the login form (filled and submitted from the kernel, as a click would) signs in."""
    nbformat = pytest.importorskip("nbformat", reason="needs the test-notebook extra")
    nbclient = pytest.importorskip("nbclient", reason="needs the test-notebook extra")
    pytest.importorskip("ipykernel", reason="needs the test-notebook extra")
    pytest.importorskip("ipywidgets", reason="needs the test-notebook extra")
    cells = [
        "import flight_client, flight_client.progress as p\n"
        "print(p.in_notebook(), p.bar_class().__module__)",
        f"df = flight_client.read_table(file_id={table.file_id}, chunk_size=50, "
        f"**{json.dumps(alice)})\nprint(len(df))",
        "conn = flight_client.connect_to_omero(interactive=True, keep_alive=False)\n"
        "print('before', conn.connected)",
        "from ipywidgets.widgets.widget import _instances\n"
        "live = list(_instances.values())\n"
        "def field(label):\n"
        "    return next(w for w in live if getattr(w, 'description', None) == label)\n"
        f"field('Bridge:').value = 'grpc://{alice['server']}:{alice['port']}'\n"
        f"field('Username:').value = {alice['username']!r}\n"
        f"field('Password:').value = {alice['password']!r}\n"
        "field('Connect').click()\n"
        "print('after', conn.connected, conn.whoami()['username'])",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    first, read, form, filled = (cell.outputs for cell in nb.cells)
    assert "".join(o.get("text", "") for o in first).split() == ["True", "tqdm.notebook"]
    assert any(WIDGET in o.get("data", {}) for o in read), read
    assert "300" in "".join(o.get("text", "") for o in read if o.output_type == "stream")
    assert any(WIDGET in o.get("data", {}) for o in form), form  # the form is displayed
    assert "before False" in "".join(o.get("text", "") for o in form)
    assert "after True alice" in "".join(o.get("text", "") for o in filled), filled
