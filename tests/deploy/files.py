"""Read the files in deploy/ the way their engines do, for the tests to check their meaning.

Each reader returns plain data: a Dockerfile's ENV, EXPOSE, USER, HEALTHCHECK and
ENTRYPOINT; compose services; Kubernetes documents (with a strategic merge of the
sidecar patch); a systemd unit's directives and its environment file.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
COMPOSE_REPLICAS = DEPLOY / "compose" / "compose.replicas.yaml"
KUBERNETES = DEPLOY / "kubernetes"
UNIT = DEPLOY / "systemd" / "omero-flight.service"
UNIT_ENV = DEPLOY / "systemd" / "omero-flight.env"


# -- Dockerfile --------------------------------------------------------------------------

def dockerfile_stages(path: Path = DOCKERFILE) -> list[list[tuple[str, str]]]:
    """Instructions (KEYWORD, arguments) per stage, continuation lines joined."""
    stages: list[list[tuple[str, str]]] = []
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, args = logical.partition(" ")
        logical = ""
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword.upper(), args.strip()))
    return stages


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """The ENV of one stage (``KEY=value`` pairs, shell-quoted as Docker reads them)."""
    env: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def dockerfile_exec(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    """An exec-form (JSON array) instruction's arguments, e.g. ENTRYPOINT."""
    for kw, args in instructions:
        if kw == keyword:
            if kw == "HEALTHCHECK":
                args = args.split("CMD", 1)[1]
            return json.loads(args)
    raise AssertionError(f"no {keyword} in the Dockerfile")


def dockerfile_values(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in instructions if kw == keyword]


# -- compose ---------------------------------------------------------------------------

def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def bridge_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that set any OMERO_FLIGHT_* variable."""
    return {name: svc for name, svc in compose["services"].items()
            if any(k.startswith("OMERO_FLIGHT_") for k in svc.get("environment", {}))}


# -- Kubernetes ------------------------------------------------------------------------

def kubernetes_docs(*paths: Path) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in load_yaml_all(path)]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name}")


MERGE_KEYS = {"containers": "name", "volumes": "name", "volumeMounts": "name", "env": "name",
              "ports": "containerPort"}


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """Kubernetes' strategic merge for the lists these manifests use (merged by key)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = strategic_merge(base[key], value, key) if key in base else value
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        out = list(base)
        index = {item[key]: i for i, item in enumerate(out)}
        for item in patch:
            if item[key] in index:
                out[index[item[key]]] = strategic_merge(out[index[item[key]]], item)
            else:
                out.append(item)
        return out
    return patch


def container_env(container: dict[str, Any],
                  config_maps: dict[str, dict[str, str]]) -> dict[str, str]:
    """A container's environment: envFrom ConfigMaps, then env values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:  # not valueFrom (the pod's own name and namespace)
            env[item["name"]] = item["value"]
    return env


def mount_source(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[
        dict[str, Any], dict[str, Any]]:
    """The (volumeMount, volume) under which ``path`` is found in a container."""
    best = None
    for mount in container.get("volumeMounts", []):
        mount_path = mount["mountPath"].rstrip("/")
        if (path == mount_path or path.startswith(mount_path + "/")) and (
                best is None or len(mount_path) > len(best["mountPath"])):
            best = mount
    if best is None:
        raise AssertionError(f"{path} is not on any volume of container {container['name']}")
    volume = next(v for v in pod["volumes"] if v["name"] == best["name"])
    return best, volume


# -- systemd ---------------------------------------------------------------------------

def unit_directives(path: Path = UNIT) -> list[tuple[str, str, str]]:
    """(section, key, value) for every directive, in order (keys may repeat)."""
    section, out = "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def unit_values(directives: list[tuple[str, str, str]], key: str) -> list[str]:
    return [value for _, k, value in directives if k == key]


def env_file(path: Path) -> dict[str, str]:
    """A systemd EnvironmentFile: KEY=VALUE lines, # comments, optional quotes."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value.strip().strip('"')
    return env


def unit_environment(directives: list[tuple[str, str, str]]) -> dict[str, str]:
    """The unit's own Environment= assignments (before specifiers are expanded)."""
    env = {}
    for value in unit_values(directives, "Environment"):
        for pair in shlex.split(value):
            key, _, val = pair.partition("=")
            env[key] = val
    return env


# -- the image's build context -------------------------------------------------------------

def _ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for negated, pattern in patterns:
        if pattern.startswith("**/"):
            tail = pattern[3:]
            hit = any(fnmatch.fnmatchcase(part, tail) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(c, pattern) and c.count("/") == pattern.count("/")
                      for c in candidates)
        if hit:
            verdict = not negated
    return verdict


def build_context(dest: Path) -> list[str]:
    """Copy the repository's tracked files that Dockerfile.dockerignore lets into a build
    context to ``dest``; the copied paths."""
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [(line.startswith("!"), line.lstrip("!").rstrip("/")) for line in
                (raw.strip() for raw in ignore) if line and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, check=True,
                             capture_output=True).stdout.decode().split("\0")
    copied = []
    for name in filter(None, tracked):
        source = REPO_ROOT / name
        if _ignored(name, patterns) or not source.is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(name)
    return copied
