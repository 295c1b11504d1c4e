"""The image's build stage, without a Docker engine: its install script, run from a copy of
the build context Dockerfile.dockerignore lets in, in a clean virtual environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.deploy import files

pytestmark = pytest.mark.slow


def test_build_stage_installs_a_working_bridge(tmp_path):
    build, _ = files.dockerfile_stages()
    (run,) = [args for kw, args in build if kw == "RUN" and "install.sh" in args]
    assert run == 'bash deploy/docker/install.sh /opt/omero-flight "${ICE_WHEEL}"'
    assert files.dockerfile_values(build, "WORKDIR") == ["/src"]
    if shutil.which("g++") is None and not list(
            (files.Path.home() / ".cache" / "omero-flight" / "wheels").glob("zeroc_ice-*.whl")):
        pytest.skip("no cached zeroc-ice wheel and no compiler to build one")
    context = tmp_path / "src"
    copied = files.build_context(context)
    assert "pyproject.toml" in copied and not any(p.startswith("tests/") for p in copied)
    prefix = tmp_path / "opt" / "omero-flight"
    # The stage's ENV, except PIP_NO_CACHE_DIR: here pip reuses its cache, to save time.
    stage_env = files.dockerfile_env(build)
    stage_env.pop("PIP_NO_CACHE_DIR")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("OMERO_FLIGHT_")}
    env.update(stage_env, PYTHON=f"python{sys.version_info.major}.{sys.version_info.minor}")
    done = subprocess.run(["bash", "deploy/docker/install.sh", str(prefix), ""], cwd=context,
                          env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"omero-flight installed in {prefix}" in done.stdout
    # The bridge is installed in the environment (not read from this checkout), with Ice.
    probe = subprocess.run(
        [str(prefix / "bin" / "python"), "-c",
         "import flight_server, Ice; print(flight_server.__file__); print(Ice.stringVersion())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True)
    location, ice = probe.stdout.split()
    assert location.startswith(str(prefix / "lib")) and ice.startswith("3.6.")
    help_text = subprocess.run([str(prefix / "bin" / "omero-flight"), "serve", "--help"],
                               env=env, capture_output=True, text=True, timeout=120, check=True)
    assert "--health-port" in help_text.stdout and "--token-secret-file" in help_text.stdout
