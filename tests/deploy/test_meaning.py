"""What the deploy files mean: settings the real loader accepts, OMERO's data read-only,
ports and probes that match the server, the signing key from a Secret."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pytest

from flight_server.config import ENV_PREFIX, Settings, load_settings
from flight_server.health import LIVE_PATH, READY_PATH
from tests.deploy import files

OMERO_DATA = "/OMERO"
FLIGHT_PORT = 8815


def settings_from(env: dict[str, str]) -> Settings:
    """Load the OMERO_FLIGHT_* part of ``env`` through the server's own loader, and check
    that each of those variables names a real setting (the loader ignores unknown ones)."""
    flight = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    known = {ENV_PREFIX + name.upper() for name in Settings.__dataclass_fields__}
    known |= {ENV_PREFIX + "HOME", ENV_PREFIX + "CONFIG"}
    assert set(flight) <= known, f"unknown settings: {sorted(set(flight) - known)}"
    return load_settings({}, environ=flight)


# -- the image ---------------------------------------------------------------------------

def test_image_runs_serve_as_uid_1000_with_hdf5_locking_off():
    build, runtime = files.dockerfile_stages()
    assert files.dockerfile_exec(runtime, "ENTRYPOINT") == ["omero-flight", "serve"]
    assert files.dockerfile_values(runtime, "USER") == ["1000:1000"]
    env = files.dockerfile_env(runtime)
    assert env["HDF5_USE_FILE_LOCKING"] == "FALSE"
    settings = settings_from(env)
    assert settings.port == FLIGHT_PORT
    exposed = {int(p) for line in files.dockerfile_values(runtime, "EXPOSE") for p in line.split()}
    assert exposed == {settings.port, settings.health_port}
    healthcheck = files.dockerfile_exec(runtime, "HEALTHCHECK")
    assert healthcheck[-1] == "/opt/omero-flight/healthcheck.py"
    # The build stage runs the install script the slow test runs here.
    assert any("deploy/docker/install.sh /opt/omero-flight" in args
               for kw, args in build if kw == "RUN")


def test_dockerignore_lets_in_what_the_build_needs():
    patterns = (files.DEPLOY / "docker" / "Dockerfile.dockerignore").read_text()
    allowed = {line[1:] for line in patterns.splitlines() if line.startswith("!")}
    for needed in ("pyproject.toml", "README.md", "flight_server/", "flight_client/",
                   "scripts/ensure-zeroc-ice.sh", "deploy/docker/install.sh",
                   "deploy/docker/healthcheck.py"):
        assert needed in allowed
        assert (files.REPO_ROOT / needed).exists()


# -- compose ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose():
    base = files.load_yaml(files.COMPOSE)
    replicas = files.load_yaml(files.COMPOSE_REPLICAS)
    return base, replicas


def test_compose_runs_omero_example_services_and_the_bridge(compose):
    base, _ = compose
    services = base["services"]
    assert services["omeroserver"]["image"].startswith("openmicroscopy/omero-server:")
    assert services["omeroweb"]["image"].startswith("openmicroscopy/omero-web-standalone:")
    assert services["database"]["image"].startswith("postgres:")
    assert list(files.bridge_services(base)) == ["omeroflight"]
    bridge = services["omeroflight"]
    assert bridge["depends_on"] == {"omeroserver": {"condition": "service_healthy"}}
    assert "healthcheck" in services["omeroserver"]  # else service_healthy never holds


@pytest.mark.parametrize("replicas", [False, True], ids=["one", "two-replicas"])
def test_compose_bridge_settings(compose, replicas):
    base, extra = compose
    services = dict(base["services"])
    for name, service in (extra["services"] if replicas else {}).items():
        merged = {**services.get(name, {}), **service}  # as compose merges an override file
        merged["environment"] = {**services.get(name, {}).get("environment", {}),
                                 **service.get("environment", {})}
        services[name] = merged
    bridges = files.bridge_services({"services": services})
    assert len(bridges) == (2 if replicas else 1)
    published = set()
    for name, bridge in bridges.items():
        settings = settings_from(bridge["environment"])
        # OMERO: the server's service name and its SSL port.
        assert settings.omero_host in services
        assert f"{settings.omero_port}:{settings.omero_port}" in services["omeroserver"]["ports"]
        # OMERO's own data volume, read-only, where the bridge reads tables directly.
        assert str(settings.omero_data_dir) == OMERO_DATA
        server_volume = next(v.split(":")[0] for v in services["omeroserver"]["volumes"]
                             if v.split(":")[1] == OMERO_DATA)
        assert f"{server_volume}:{OMERO_DATA}:ro" in bridge["volumes"], name
        # The Flight port is published; the health port stays inside the network.
        host_ports = {p.split(":")[0]: int(p.split(":")[1]) for p in bridge["ports"]}
        assert set(host_ports.values()) == {settings.port}
        published |= set(host_ports)
        assert settings.health_port and settings.health_port != settings.port
        # TLS and the signing key: files compose mounts from its secrets.
        for path in (settings.tls_cert, settings.tls_key, settings.token_secret_file):
            secret = PurePosixPath(path).name
            assert PurePosixPath(path).parent == PurePosixPath("/run/secrets")
            assert secret in bridge["secrets"] and secret in base["secrets"]
        assert base["secrets"][PurePosixPath(settings.token_secret_file).name]["file"]
        own = {k: v for k, v in bridge["environment"].items()
               if k not in ("OMERO_FLIGHT_ADVERTISE", "OMERO_FLIGHT_PEERS")}
        assert own == base["services"]["omeroflight"]["environment"]
        if replicas:  # each advertises its own service name and names the other
            assert settings.advertise == f"grpc+tls://{name}:{settings.port}"
            assert len(settings.replica_locations) == 2
    if replicas:
        advertised = {settings_from(b["environment"]).advertise for b in bridges.values()}
        assert all(set(settings_from(b["environment"]).replica_locations) == advertised
                   for b in bridges.values())
    assert len(published) == len(bridges)  # each replica on its own host port


# -- Kubernetes ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    docs = files.kubernetes_docs(*(files.KUBERNETES / name for name in
                                   ("configmap.yaml", "services.yaml", "statefulset.yaml")))
    config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    return docs, config_maps


def _probe_port(container, probe):
    port = container[probe]["httpGet"]["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
    return port


def test_statefulset_settings_ports_and_probes(cluster):
    docs, config_maps = cluster
    sts = files.find(docs, "StatefulSet", "omero-flight")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    settings = settings_from(files.container_env(container, config_maps))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"flight": settings.port, "health": settings.health_port}
    assert container["livenessProbe"]["httpGet"]["path"] == LIVE_PATH
    assert container["readinessProbe"]["httpGet"]["path"] == READY_PATH
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert _probe_port(container, probe) == settings.health_port
    assert pod["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # OMERO's data volume, read-only at the data directory the bridge reads.
    mount, volume = files.mount_source(pod, container, str(settings.omero_data_dir))
    assert mount["mountPath"] == str(settings.omero_data_dir) and mount["readOnly"] is True
    assert volume["persistentVolumeClaim"] == {"claimName": "omero-data", "readOnly": True}
    # Scale-out: each pod advertises its name under the headless Service; the peers are
    # every pod of the StatefulSet.
    pods = sts["spec"]["serviceName"]
    assert settings.advertise == f"grpc+tls://$(POD_NAME).{pods}.$(POD_NAMESPACE).svc:8815"
    assert settings.peer_locations == [
        f"grpc+tls://omero-flight-{i}.{pods}.$(POD_NAMESPACE).svc:8815"
        for i in range(sts["spec"]["replicas"])]


def test_signing_key_and_tls_come_from_secrets(cluster):
    docs, config_maps = cluster
    sts = files.find(docs, "StatefulSet", "omero-flight")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    settings = settings_from(files.container_env(container, config_maps))
    kustomization = files.load_yaml(files.KUBERNETES / "kustomization.yaml")
    generated = {s["name"]: s for s in kustomization["secretGenerator"]}
    for path in (settings.token_secret_file, settings.tls_cert, settings.tls_key):
        mount, volume = files.mount_source(pod, container, str(path))
        assert mount["readOnly"] is True
        secret = volume["secret"]
        assert secret["defaultMode"] & 0o077 == 0  # what fsGroup adds is group read only
        key = str(PurePosixPath(path).relative_to(mount["mountPath"]))
        assert key in generated[secret["secretName"]]["files"]
    # One Secret for every replica: the StatefulSet's pods all mount the same one.
    token_mount, token_volume = files.mount_source(pod, container,
                                                   str(settings.token_secret_file))
    assert token_volume["secret"]["secretName"] == "omero-flight-token"
    assert sts["spec"]["replicas"] >= 2
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_headless_and_client_services(cluster):
    docs, _ = cluster
    sts = files.find(docs, "StatefulSet", "omero-flight")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    headless = files.find(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    client = files.find(docs, "Service", "omero-flight")
    for service in (headless, client):
        assert service["spec"]["selector"].items() <= labels.items()
        assert [p["targetPort"] for p in service["spec"]["ports"]] == ["flight"]


def test_sidecar_patch_on_omero_server_pod():
    sidecar = files.KUBERNETES / "sidecar"
    server = files.load_yaml(sidecar / "omero-server.example.yaml")
    patch = files.load_yaml(sidecar / "omero-flight-sidecar.yaml")
    kustomization = files.load_yaml(sidecar / "kustomization.yaml")
    assert kustomization["patches"][0]["path"] == "omero-flight-sidecar.yaml"
    assert kustomization["patches"][0]["target"]["name"] == server["metadata"]["name"]
    merged = files.strategic_merge(server, patch)
    pod = merged["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"omero-server", "omero-flight"}
    bridge = containers["omero-flight"]
    settings = settings_from(files.container_env(bridge, {}))
    assert settings.omero_host == "localhost"
    server_ports = [p["containerPort"] for p in containers["omero-server"]["ports"]]
    assert settings.omero_port in server_ports
    # The bridge mounts the server's own data volume, read-only.
    server_mount, server_volume = files.mount_source(pod, containers["omero-server"],
                                                     OMERO_DATA)
    mount, volume = files.mount_source(pod, bridge, str(settings.omero_data_dir))
    assert volume is server_volume and mount["readOnly"] is True
    assert "readOnly" not in server_mount  # the server itself still writes there
    # Liveness on the health port; no readiness probe, which would gate OMERO's own pod.
    assert bridge["livenessProbe"]["httpGet"]["path"] == LIVE_PATH
    assert _probe_port(bridge, "livenessProbe") == settings.health_port
    assert "readinessProbe" not in bridge


# -- systemd ---------------------------------------------------------------------------

def test_systemd_unit_beside_omero():
    unit = files.unit_directives()
    values = {k: files.unit_values(unit, k) for k in
              ("After", "ExecStart", "ReadOnlyPaths", "ProtectSystem", "NoNewPrivileges",
               "Restart", "EnvironmentFile", "User")}
    assert "omero-server.service" in values["After"][0].split()
    assert values["ExecStart"] == ["/opt/omero-flight/bin/omero-flight serve"]
    assert values["ProtectSystem"] == ["strict"] and values["NoNewPrivileges"] == ["yes"]
    assert values["Restart"] == ["on-failure"]
    assert values["User"] != ["root"]
    env = {**files.unit_environment(unit), **files.env_file(files.UNIT_ENV)}
    assert env["HDF5_USE_FILE_LOCKING"] == "FALSE"
    settings = settings_from({k: re.sub(r"%[dS]", "/run", v) for k, v in env.items()})
    assert str(settings.omero_data_dir) in values["ReadOnlyPaths"][0].split()
    assert settings.health_port and settings.port == FLIGHT_PORT
    assert values["EnvironmentFile"] == ["/etc/omero-flight/omero-flight.env"]
    # TLS from credentials, which only the service can read.
    credentials = {v.split(":")[0] for v in files.unit_values(unit, "LoadCredential")}
    for path in (env["OMERO_FLIGHT_TLS_CERT"], env["OMERO_FLIGHT_TLS_KEY"]):
        assert path.startswith("%d/") and path[3:] in credentials


def test_readme_documents_new_settings():
    readme = (files.REPO_ROOT / "README.md").read_text()
    for name in ("health_port", "token_secret_file"):
        assert f"`{ENV_PREFIX}{name.upper()}`" in readme
        assert f"`--{name.replace('_', '-')}`" in readme
