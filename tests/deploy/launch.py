"""Start a bridge exactly as the container image or the systemd unit would, here.

A temporary folder stands in for the image's (or host's) file system: every
absolute path in the deploy files is taken under it (``/run/secrets/x`` becomes
``ROOT/run/secrets/x``), except OMERO's data directory, which becomes the
stand-in's. The only other changes: the bridge listens on loopback, on free
ports, and reaches the stand-in's host and port instead of OMERO's. Command
line, every other setting, and the files (certificate, key, signing key,
environment file, credentials) are the deploy files' own.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from flight_server.config import ENV_PREFIX
from tests.deploy import files
from tests.processes import free_port  # noqa: F401 - test_health imports it from here

OMERO_DATA = "/OMERO"
IMAGE_PREFIX = "/opt/omero-flight"


@dataclass
class Launch:
    """What to run: argv, environment, working folder; the ports and files it uses."""

    root: Path
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    health_port: int
    tls_cert: Path

    def start(self, log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            return subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out,
                                    stderr=subprocess.STDOUT)


def image_healthcheck(bridge: Launch) -> list[str]:
    """The image's HEALTHCHECK command, its absolute paths under the bridge's ROOT."""
    _, runtime = files.dockerfile_stages()
    return [str(under(bridge.root, arg)) if arg.startswith("/") else arg
            for arg in files.dockerfile_exec(runtime, "HEALTHCHECK")]


def under(root: Path, path: str) -> Path:
    return root / PurePosixPath(path).relative_to("/")


def install_image_tree(root: Path) -> None:
    """ROOT/opt/omero-flight as the image has it: bin/omero-flight, bin/python, healthcheck."""
    bin_dir = under(root, IMAGE_PREFIX) / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    here = Path(sys.executable).parent
    entry = here / "omero-flight"
    if not entry.exists():
        raise RuntimeError(f"{entry} does not exist: install this package (make test does)")
    for name, target in (("omero-flight", entry), ("python", Path(sys.executable))):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(str(target))} "$@"\n')
        wrapper.chmod(0o755)
    shutil.copy(files.DEPLOY / "docker" / "healthcheck.py", under(root, IMAGE_PREFIX))


def make_tls(cert: Path, key: Path) -> None:
    cert.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    key.chmod(0o400)


def make_token_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(32))
    path.chmod(0o400)


def base_environ(root: Path) -> dict[str, str]:
    """This process's environment (for PYTHONPATH and such) without any OMERO_FLIGHT_*,
    with the image's bin folder first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env["PATH"] = f"{under(root, IMAGE_PREFIX) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def localize(env: dict[str, str], root: Path, standin: Any) -> tuple[dict[str, str], int, int]:
    """The loopback/stand-in/ROOT substitutions described in the module docstring."""
    out = {}
    for key, value in env.items():
        if key == "PATH":
            continue
        if value == OMERO_DATA:
            value = str(standin.data_dir)
        elif value.startswith("/"):
            value = str(under(root, value))
        out[key] = value
    port, health_port = free_port(), free_port()
    out.update({
        ENV_PREFIX + "HOST": "127.0.0.1",
        ENV_PREFIX + "PORT": str(port),
        ENV_PREFIX + "HEALTH_PORT": str(health_port),
        ENV_PREFIX + "OMERO_HOST": standin.host,
        ENV_PREFIX + "OMERO_PORT": str(standin.port),
    })
    return out, port, health_port


def container(root: Path, standin: Any) -> Launch:
    """``docker compose``'s omeroflight service: the image's ENTRYPOINT, ENV and WORKDIR,
    the service's environment on top, its secrets under /run/secrets."""
    _, runtime = files.dockerfile_stages()
    compose = files.load_yaml(files.COMPOSE)
    service = compose["services"]["omeroflight"]
    env = {**files.dockerfile_env(runtime), **service["environment"]}
    for name in service["secrets"]:
        path = under(root, f"/run/secrets/{name}")
        source = compose["secrets"][name]["file"]  # the files an administrator creates
        if source.endswith("token.key"):
            make_token_key(path)
        elif source.endswith("tls.key"):
            continue  # made with the certificate
        else:
            make_tls(path, under(root, env[ENV_PREFIX + "TLS_KEY"]))
    install_image_tree(root)
    workdir = under(root, files.dockerfile_values(runtime, "WORKDIR")[-1])
    workdir.mkdir(parents=True, exist_ok=True)
    local, port, health_port = localize(env, root, standin)
    return Launch(root, files.dockerfile_exec(runtime, "ENTRYPOINT"),
                  {**base_environ(root), **local},
                  workdir, port, health_port, Path(local[ENV_PREFIX + "TLS_CERT"]))


def systemd(root: Path, standin: Any) -> Launch:
    """omero-flight.service: its ExecStart, Environment= and EnvironmentFile= (the example
    installed where the unit reads it), credentials copied as LoadCredential= does."""
    unit = files.unit_directives()
    credentials = root / "run" / "credentials" / "omero-flight.service"
    state = root / "var" / "lib"
    for spec in files.unit_values(unit, "LoadCredential"):
        name, _, source = spec.partition(":")
        source_path = under(root, source)
        if name == "tls.crt":
            make_tls(source_path, source_path.with_name("tls.key"))
    credentials.mkdir(parents=True)
    for spec in files.unit_values(unit, "LoadCredential"):
        name, _, source = spec.partition(":")
        shutil.copy(under(root, source), credentials / name)
        (credentials / name).chmod(stat.S_IRUSR)
    (env_path,) = files.unit_values(unit, "EnvironmentFile")
    installed = under(root, env_path)
    installed.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(files.UNIT_ENV, installed)
    for name in files.unit_values(unit, "StateDirectory"):
        (state / name).mkdir(parents=True, mode=0o700, exist_ok=True)

    def expand(value: str) -> str:
        return value.replace("%d", f"/{credentials.relative_to(root)}").replace(
            "%S", f"/{state.relative_to(root)}")

    env = {k: expand(v) for k, v in files.unit_environment(unit).items()}
    env.update(files.env_file(installed))  # EnvironmentFile= overrides Environment=
    install_image_tree(root)
    (exec_start,) = files.unit_values(unit, "ExecStart")
    argv = shlex.split(exec_start)
    argv[0] = str(under(root, argv[0]))
    local, port, health_port = localize(env, root, standin)
    return Launch(root, argv, {**base_environ(root), **local}, root, port, health_port,
                  Path(local[ENV_PREFIX + "TLS_CERT"]))
