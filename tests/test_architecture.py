"""The layers stay apart: imports only go down, no module imports itself back.

``flight_protocol`` (bottom) imports neither end; ``flight_client`` never imports
``flight_server``; ``flight_server`` imports ``flight_client`` only in its CLI.
Every import counts, at module level or inside a function. And a client-only
process, with the server and OMERO's libraries blocked, runs every public client
function against a real bridge without trying to load any of them.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flight_protocol", "flight_client", "flight_server")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _target(name: str) -> str | None:
    """The project module an imported name lives in (None outside the project)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """Project modules ``module`` imports anywhere in its code (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            # ``from pkg import sub`` imports the submodule; ``from pkg import name`` the package
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]
        for name in names:
            target = _target(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> str:
    return module.split(".")[0]


def test_the_walk_sees_the_imports_it_checks():
    assert "flight_client.transport" in GRAPH["flight_client.connection"]
    assert "flight_protocol.messages" in GRAPH["flight_client.selection"]
    assert "flight_protocol.tiledb" in GRAPH["flight_client.remote"]  # inside a function
    assert len(GRAPH) > 40


def test_the_protocol_imports_neither_end():
    bad = {m: sorted(d for d in deps if _layer(d) != "flight_protocol")
           for m, deps in GRAPH.items() if _layer(m) == "flight_protocol"}
    assert {m: d for m, d in bad.items() if d} == {}


def test_the_client_never_imports_the_server():
    bad = {m: sorted(d for d in deps if _layer(d) == "flight_server")
           for m, deps in GRAPH.items() if _layer(m) == "flight_client"}
    assert {m: d for m, d in bad.items() if d} == {}


def test_the_server_imports_the_client_only_in_its_cli():
    bad = {m: sorted(d for d in deps if _layer(d) == "flight_client")
           for m, deps in GRAPH.items()
           if _layer(m) == "flight_server" and not m.startswith("flight_server.cli")}
    assert {m: d for m, d in bad.items() if d} == {}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


@pytest.mark.parametrize("layer", PACKAGES)
def test_no_import_cycles(layer):
    graph = {m: {d for d in deps if _layer(d) == layer}
             for m, deps in GRAPH.items() if _layer(m) == layer}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_public_client_functions_are_thin_wrappers_over_connection():
    """Each omero2pandas-named function opens (or takes) a connection and delegates to it:
    none touches a transport, a ticket or the network itself."""
    import flight_client

    tree = ast.parse((ROOT / "flight_client" / "api.py").read_text(encoding="utf-8"))
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    public = set(flight_client.__all__) & set(functions)
    assert {"read_table", "download_table", "upload_table", "read_csv"} <= public
    for name in sorted(public | {"plan_read"}):
        used = {n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name)}
        attributes = {n.attr for n in ast.walk(functions[name]) if isinstance(n, ast.Attribute)}
        assert used & {"use_connection", "_reader"}, name
        assert not attributes & {"transport", "encode", "action", "flight_info"}, name


# -- a client-only process ---------------------------------------------------------------------
CLIENT_ONLY = textwrap.dedent('''
    import importlib.abc, json, os, sys, tempfile
    from pathlib import Path

    BLOCKED = ("flight_server", "tables", "h5py", "omero", "Ice")
    tried = []

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                tried.append(name)
                raise ImportError(f"{name} is blocked in a client-only process")
            return None

    sys.meta_path.insert(0, Block())

    import pandas as pd
    import flight_client as o2p
    from flight_client.dask import read_dask
    from flight_client.ray import FlightDatasource

    for name in o2p.__all__:
        getattr(o2p, name)
    url, password = os.environ["BRIDGE_URL"], os.environ["BRIDGE_PASSWORD"]
    login = {"server": url, "username": "alice", "password": password}
    out = Path(tempfile.mkdtemp())
    frame = pd.DataFrame({"id": range(20), "x": [i / 4 for i in range(20)],
                          "label": [f"c{i}" for i in range(20)]})
    with o2p.connect_to_omero(**login, interactive=False, keep_alive=False) as conn:
        ann = o2p.upload_table(frame, "client only", links=[("Image", 7401)],
                               omero_connector=conn, progress=False)
        fid = next(t["file_id"] for t in o2p.list_tables("Image", 7401, omero_connector=conn)
                   if t["annotation_id"] == ann)
        assert o2p.get_table_size(fid, omero_connector=conn) == (20, 3)
        assert o2p.get_table_columns(annotation_id=ann, **login) == ["id", "x", "label"]
        assert list(o2p.read_table(fid, None, ["id"], range(2, 5), omero_connector=conn)
                    .index) == [2, 3, 4]
        assert o2p.read_arrow(file_id=fid, omero_connector=conn).num_rows == 20
        assert o2p.read_arrow(file_id=fid, stream=True, **login).read_all().num_rows == 20
        assert o2p.read_polars(file_id=fid, query="id<3", omero_connector=conn).height == 3
        assert o2p.read_duckdb(file_id=fid, omero_connector=conn).aggregate(
            "count(*)").fetchall() == [(20,)]
        assert o2p.scan_polars(file_id=fid, omero_connector=conn).collect().height == 20
        for suffix in ("csv", "parquet", "tiledb"):
            assert o2p.download_table(out / f"t.{suffix}", file_id=fid,
                                      omero_connector=conn, progress=False) == 20
        token = o2p.create_tiledb(frame, out / "made.tiledb", progress=False)
        try:
            o2p.register_table(conn, "not/absolute", "t", [("Image", 7401)], token)
        except o2p.InvalidRequest:
            pass
        frame.to_csv(out / "plain.csv", index=False)
        plain = o2p.upload_file(out / "plain.csv", 7401, omero_connector=conn, progress=False)
        assert len(o2p.read_csv(annotation_id=plain, omero_connector=conn)) == 20
        assert o2p.download_csv(out / "back.csv", annotation_id=plain, omero_connector=conn,
                                progress=False) > 0
        result = conn.read(file_id=fid)
        assert len(FlightDatasource(result.plan).get_read_tasks(1)) >= 1
        assert int(read_dask(fid, omero_connector=conn)["id"].sum().compute()) == 190
        assert conn.read(file_id=fid).to_pandas()["x"].sum() == frame["x"].sum()
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({"tried": tried, "loaded": loaded}))
''')


def test_a_client_only_process_never_loads_a_server_module(bridge):
    env = {**os.environ, "BRIDGE_URL": bridge.url, "BRIDGE_PASSWORD": bridge.passwords["alice"],
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CLIENT_ONLY], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"tried": [], "loaded": []}
