"""Server settings: arguments > environment (``OMERO_FLIGHT_*``) > TOML file > defaults.

Every setting is a field of :class:`Settings`; its environment variable is
``OMERO_FLIGHT_`` plus the field name in capitals (``OMERO_FLIGHT_PORT``), and
its key in the config file is the field name (top level or under ``[server]``).
The default store folder is ``$OMERO_FLIGHT_HOME`` or ``~/.local/share/omero-flight``.
Setting ``omero_host`` (``--omero-host``, ``OMERO_FLIGHT_OMERO_HOST``) serves an
OMERO server through omero-py instead of the embedded store; with
``omero_data_dir`` as well, table reads are authorized through the caller's
OMERO session and then read from OMERO's binary repository directly.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "OMERO_FLIGHT_"
#: Flight's location meaning "the server that answered get_flight_info".
REUSE_CONNECTION = "arrow-flight-reuse-connection://?"


def default_store() -> Path:
    home = os.environ.get("OMERO_FLIGHT_HOME")
    return Path(home) if home else Path.home() / ".local" / "share" / "omero-flight"


class ConfigError(ValueError):
    """A setting that is missing, malformed or unsafe; the message names it."""


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8815
    store: Path = field(default_factory=default_store)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_no_auth: bool = False
    split_rows: int = 1_000_000
    log_level: str = "INFO"
    token_lifetime: float = 12 * 3600.0
    spool_dir: Path | None = None
    # On SIGTERM/SIGINT: seconds running calls may take to finish before they are cancelled.
    shutdown_grace: float = 30.0
    # The OMERO backend: set omero_host to serve an OMERO server instead of the store.
    omero_host: str | None = None
    omero_port: int = 4064
    omero_idle_timeout: float = 600.0
    omero_max_calls: int = 8
    omero_call_timeout: float = 600.0
    # OMERO's data directory (binary repository), readable here: read tables directly.
    omero_data_dir: Path | None = None
    # OMERO.web of an OMERO Plus server, for the register_table action (HTTPS).
    omero_web_url: str | None = None
    # HTTP /livez and /readyz on this port of the same host (None: off; deploy files use 8816).
    health_port: int | None = None
    # A file whose bytes sign bearer tokens, shared by replicas (None: the backend's own key).
    token_secret_file: Path | None = None
    # Scale-out: the URL clients reach this replica at, and the other replicas' URLs
    # (comma-separated) that serve the same tables; endpoints list all of them.
    advertise: str | None = None
    peers: str | None = None

    @property
    def uses_omero(self) -> bool:
        return bool(self.omero_host)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def location(self) -> str:
        scheme = "grpc+tls" if self.tls else "grpc"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def peer_locations(self) -> list[str]:
        return [p.strip() for p in (self.peers or "").split(",") if p.strip()]

    @property
    def replica_locations(self) -> list[str] | None:
        """Every replica's URL for endpoints, this one first (None: no replicas set).

        Without ``advertise``, this replica is Flight's "reuse this connection" location.
        Peers may name this replica too (one list for all, as a StatefulSet's pods share):
        its own address is left out of its peers.
        """
        if self.advertise is None and not self.peer_locations:
            return None
        return [self.advertise or REUSE_CONNECTION,
                *(p for p in self.peer_locations if p != self.advertise)]

    def check(self) -> None:
        """Refuse unsafe or incomplete combinations."""
        for url in ([self.advertise] if self.advertise else []) + self.peer_locations:
            if not url.startswith(("grpc://", "grpc+tcp://", "grpc+tls://")):
                raise ConfigError(f"replica location {url!r} (advertise/peers) must be a "
                                  "grpc:// or grpc+tls:// URL")
        if self.uses_omero and self.peer_locations and (self.omero_data_dir is None
                                                        or self.token_secret_file is None):
            raise ConfigError("peers with the OMERO backend need omero_data_dir and "
                              "token_secret_file: a replica without the caller's OMERO session "
                              "serves the signed tickets another replica planned from OMERO's "
                              "data directory, checked with the shared key")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both tls_cert and tls_key")
        if self.insecure_no_auth and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to serve {self.host} without authentication: "
                "insecure_no_auth is only allowed on a loopback address (127.0.0.1, ::1)"
            )
        if not 0 <= self.shutdown_grace < float("inf"):
            raise ConfigError("shutdown_grace must be a number of seconds, 0 or more")
        if self.split_rows < 1:
            raise ConfigError("split_rows must be at least 1")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")
        if self.health_port is not None and not 0 <= self.health_port <= 65535:
            raise ConfigError(f"health_port {self.health_port} is out of range")
        if self.health_port and self.health_port == self.port:
            raise ConfigError(f"health_port and port are both {self.port}: use two ports")
        if not 0 < self.omero_port <= 65535:
            raise ConfigError(f"omero_port {self.omero_port} is out of range")
        if self.omero_max_calls < 1:
            raise ConfigError("omero_max_calls must be at least 1")
        if self.omero_idle_timeout <= 0:
            raise ConfigError("omero_idle_timeout must be positive")
        if self.omero_call_timeout <= 0:
            raise ConfigError("omero_call_timeout must be positive")
        if self.omero_data_dir is not None and not self.uses_omero:
            raise ConfigError("omero_data_dir needs omero_host: direct reads are authorized "
                              "through the caller's OMERO session")
        if self.uses_omero and self.insecure_no_auth:
            raise ConfigError("insecure_no_auth cannot be used with the OMERO backend: every "
                              "call runs as its signed-in OMERO user, never a shared account")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _convert(name: str, value: Any, kind: str) -> Any:
    if value is None:
        return None
    try:
        if "bool" in kind:
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if "Path" in kind:
            return Path(value).expanduser()
        if isinstance(value, list) and name == "peers":  # TOML: peers = ["grpc://...", ...]
            return ",".join(str(v) for v in value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name!r} has an invalid value {value!r}") from None


def load_settings(
    arguments: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the sources; ``arguments`` holds only what the user gave (None = not given)."""
    environ = os.environ if environ is None else environ
    kinds = {f.name: str(f.type) for f in dataclasses.fields(Settings)}
    merged: dict[str, Any] = {}
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        path = Path(config_file).expanduser()
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        server = data.pop("server", {})
        data = {**data, **server}
        unknown = sorted(set(data) - set(kinds))
        if unknown:
            raise ConfigError(f"unknown setting(s) in {path}: {', '.join(unknown)}")
        merged.update(data)
    for name in kinds:
        if ENV_PREFIX + name.upper() in environ:
            merged[name] = environ[ENV_PREFIX + name.upper()]
    merged.update({k: v for k, v in (arguments or {}).items() if v is not None and k in kinds})
    settings = Settings(**{k: _convert(k, v, kinds[k]) for k, v in merged.items()})
    settings.check()
    return settings
