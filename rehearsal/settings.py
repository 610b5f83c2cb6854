"""Server settings: defaults, then a TOML file, then the environment, then command-line flags.

Secrets are not settings: they live in the data directory or the environment (rehearsal.secrets_store).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

PROTOCOL_ID = 0x5355524745525931  # "SURGERY1": clients of another protocol id are refused by netcode
ENV_PREFIX = "REHEARSAL_"


class SettingsError(ValueError):
    """A setting with a bad value, naming where it came from."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("rehearsal-data")
    udp_host: str = "127.0.0.1"  # where the netcode server listens (IPv4 or IPv6 literal)
    udp_port: int = 40000
    public_host: str = ""  # the address clients are told to connect to (default: udp_host)
    http_host: str = "127.0.0.1"  # join API and admin API
    http_port: int = 8080
    # HTTPS and WSS on the HTTP port (PEM files): browsers give a page its secure context only on localhost or
    # over TLS, so a console opened from another machine needs both. Empty: plain HTTP.
    tls_cert: str = ""
    tls_key: str = ""
    # WebTransport (HTTP/3 over UDP on http_host) for participants' pages: their snapshots and inputs as datagrams
    # beside the WebSocket (rehearsal.web.webtransport). -1: off; 0 picks a free port.
    webtransport_port: int = -1
    max_clients: int = 256
    default_scenario: str = "basic_skills"
    # A folder of extra scenario files (*.toml) offered beside the packaged ones, by file stem; a packaged
    # name takes precedence (rehearsal.scenario.available_scenarios). None: the packaged ones only.
    scenario_dir: Path | None = None
    empty_room_seconds: float = 300.0  # a room with nobody in it ends after this long
    physics_threads: int = 1  # per room; 1 keeps a core for the network when several rooms run
    # Observers only watch: given a rate (e.g. 30 for a large audience), they get snapshots at about that rate
    # instead of every tick (0), and each costs the server and its link less. The people at the table always
    # get every tick.
    observer_snapshot_hz: float = 0.0
    # A room's browser observers share one snapshot stream, encoded once per tick for all (rehearsal.observer_stream);
    # false: each gets its own, as headsets do.
    share_observer_stream: bool = True
    record: bool = True  # write each room's recording (data_dir/recordings) for replay and debrief
    drain_seconds: float = 30.0  # on SIGTERM: rooms end when empty or after this long, then the process exits
    protocol_id: int = PROTOCOL_ID

    @property
    def public_address(self) -> str:
        host = self.public_host or self.udp_host
        return f"[{host}]:{self.udp_port}" if ":" in host else f"{host}:{self.udp_port}"


def load_settings(file: Path | None = None, env: dict[str, str] | None = None, **flags: Any) -> Settings:
    """Settings from defaults < file < REHEARSAL_* environment < flags (None flags are ignored)."""
    settings = Settings()
    if file is not None:
        try:
            data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{file}: {exc}") from None
        settings = _apply(settings, data, str(file))
    env = os.environ if env is None else env
    from_env = {
        f.name: env[ENV_PREFIX + f.name.upper()] for f in fields(Settings) if ENV_PREFIX + f.name.upper() in env
    }
    settings = _apply(settings, from_env, "environment")
    settings = _apply(settings, {k: v for k, v in flags.items() if v is not None}, "flags")
    if bool(settings.tls_cert) != bool(settings.tls_key):  # checked once all sources are in: they may differ
        raise SettingsError("tls_cert and tls_key go together (both PEM files, or neither)")
    return settings


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _boolean(value: Any) -> bool:
    """A TOML boolean, or one of 1/0, true/false, yes/no, on/off (the environment's strings); else ValueError,
    so that ``record = "nope"`` is an error rather than false."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(value)


_OPTIONAL_PATHS = frozenset({"scenario_dir"})  # None by default: "" in a file or the environment unsets them


def _apply(settings: Settings, values: dict[str, Any], origin: str) -> Settings:
    types = {f.name: f.type for f in fields(Settings)}
    changes = {}
    for key, value in values.items():
        if key not in types:
            near = difflib.get_close_matches(key, list(types), n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(types)}"
            raise SettingsError(f"{origin}: unknown setting {key!r} ({hint})")
        current = getattr(settings, key)
        try:
            if key in _OPTIONAL_PATHS:
                changes[key] = None if value is None or str(value) == "" else Path(value)
            elif isinstance(current, Path):
                changes[key] = Path(value)
            elif isinstance(current, bool):
                changes[key] = _boolean(value)
            else:
                changes[key] = type(current)(value)
        except (TypeError, ValueError):
            kind = "boolean (true or false)" if isinstance(current, bool) else type(current).__name__
            raise SettingsError(f"{origin}: {key} = {value!r} is not a {kind}") from None
    result = replace(settings, **changes)
    for port in ("udp_port", "http_port"):
        if not 0 <= getattr(result, port) <= 65535:
            raise SettingsError(f"{origin}: {port} must be in [0, 65535]")
    if not -1 <= result.webtransport_port <= 65535:
        raise SettingsError(f"{origin}: webtransport_port must be -1 (off) or in [0, 65535]")
    if not 0.0 <= result.observer_snapshot_hz <= 1000.0:
        raise SettingsError(f"{origin}: observer_snapshot_hz must be in [0, 1000]")
    if result.physics_threads < 1:
        raise SettingsError(f"{origin}: physics_threads must be at least 1")
    if not 0 <= result.drain_seconds <= 3600:
        raise SettingsError(f"{origin}: drain_seconds must be in [0, 3600]")
    if result.max_clients < 1:
        raise SettingsError(f"{origin}: max_clients must be at least 1")
    return result
