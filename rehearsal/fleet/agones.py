"""The Agones lifecycle through the SDK sidecar's local REST API (``http://localhost:${AGONES_SDK_HTTP_PORT}``).

The documented contract (agones.dev, "Local Development" and "SDK REST API"): ``POST /ready``, ``POST /health``,
``POST /allocate``, ``POST /shutdown`` with body ``{}``, and ``PUT /metadata/label`` with
``{"key": ..., "value": ...}`` (the sidecar prefixes ``agones.dev/sdk-`` to the key); every reply is JSON,
``{}`` on success. A game server calls Ready once it can take players, Health every few seconds (missing
them makes Agones mark it Unhealthy), Allocated when it takes a session (self-allocation: a running session
must not be scaled away), and Shutdown when it is done.

``AgonesSdk`` makes one call per method, blocking (short timeout): it runs on ``AgonesLifecycle``'s own thread,
never on the reactor. ``AgonesLifecycle`` turns what the game server reports (warmed, healthy, rooms, drained)
into those calls: Ready once, Health every ``health_seconds`` while healthy, Allocated plus labels the first
time it hosts a room, Shutdown once after the drain. A sidecar that is down costs a counted failure, never a
tick.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("rehearsal.fleet.agones")

PORT_ENV = "AGONES_SDK_HTTP_PORT"
DEFAULT_PORT = 9358  # the SDK server's default HTTP port
HEALTH_SECONDS = 2.0  # the GameServer manifest's health.periodSeconds is 5: two beats per period, and spare
TIMEOUT_SECONDS = 2.0
# Kubernetes label values: at most 63 characters of [A-Za-z0-9_.-], starting and ending alphanumeric.
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


class AgonesError(RuntimeError):
    """The sidecar refused a call or could not be reached."""


class AgonesSdk:
    """The SDK sidecar's REST calls (see the module doc)."""

    def __init__(self, port: int | None = None, host: str = "localhost", timeout: float = TIMEOUT_SECONDS) -> None:
        if port is None:
            port = int(os.environ.get(PORT_ENV, DEFAULT_PORT))
        if not 0 < port < 65536:
            raise ValueError(f"{PORT_ENV} must be a port number, not {port}")
        self.base = f"http://{host}:{port}"
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"AgonesSdk({self.base})"

    def _call(self, method: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read(65536)
        except urllib.error.HTTPError as exc:
            raise AgonesError(f"{method} {path}: {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise AgonesError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        try:
            reply = json.loads(raw or b"{}")
        except ValueError:
            raise AgonesError(f"{method} {path}: the reply is not JSON") from None
        return reply if isinstance(reply, dict) else {}

    def ready(self) -> None:
        self._call("POST", "/ready", {})

    def health(self) -> None:
        self._call("POST", "/health", {})

    def allocate(self) -> None:
        self._call("POST", "/allocate", {})

    def shutdown(self) -> None:
        self._call("POST", "/shutdown", {})

    def set_label(self, key: str, value: str) -> None:
        """A label on the GameServer (``agones.dev/sdk-<key>``); ValueError for what Kubernetes would refuse."""
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise ValueError(f"not a Kubernetes label: {key!r}={value!r}")
        self._call("PUT", "/metadata/label", {"key": key, "value": value})

    def game_server(self) -> dict[str, Any]:
        """``GET /gameserver``: the GameServer as the sidecar sees it."""
        request = urllib.request.Request(self.base + "/gameserver", method="GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read(1 << 20) or b"{}")
        except (OSError, ValueError) as exc:
            raise AgonesError(f"GET /gameserver: {type(exc).__name__}") from None


class AgonesLifecycle:
    """What the game server reports, turned into SDK calls on a thread of its own (see the module doc).

    ``stats``: calls made and failed, by name; ``state``: the last lifecycle step reached."""

    def __init__(self, sdk: AgonesSdk, health_seconds: float = HEALTH_SECONDS) -> None:
        self.sdk = sdk
        self.health_seconds = health_seconds
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1024)
        self._healthy = False
        self._thread: threading.Thread | None = None
        self._ready = self._allocated = self._shut = False
        self.stats: dict[str, int] = {}
        self.state = "starting"

    # --- from the reactor (never blocks) -----------------------------------------------------------------

    def warmed(self) -> None:
        """The kernels are compiled and the ports listen: Ready."""
        self._put("ready", None)

    def tick_healthy(self, healthy: bool) -> None:
        """Whether the ticks are healthy now (no room stuck): Health goes out only while True."""
        self._healthy = bool(healthy)

    def took_session(self, session: str, scenario: str) -> None:
        """A room started here: Allocated (once), labelled with its session and scenario."""
        self._put("allocate", (session, scenario))

    def drained(self) -> None:
        """Every room finished after a drain: Shutdown, and the thread ends."""
        self._put("shutdown", None)

    def _put(self, what: str, arg: Any) -> None:
        try:
            self._events.put_nowait((what, arg))
        except queue.Full:
            self.stats["dropped"] = self.stats.get("dropped", 0) + 1

    # --- the thread --------------------------------------------------------------------------------------

    def start(self) -> AgonesLifecycle:
        self._thread = threading.Thread(target=self._run, name="agones-sdk", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _call(self, name: str, fn: Any, *args: Any) -> bool:
        try:
            fn(*args)
        except (AgonesError, ValueError) as exc:
            self.stats[f"{name}_failed"] = self.stats.get(f"{name}_failed", 0) + 1
            log.warning("agones: %s failed: %s", name, exc)
            return False
        self.stats[name] = self.stats.get(name, 0) + 1
        return True

    def _run(self) -> None:
        while not self._shut:
            try:
                what, arg = self._events.get(timeout=self.health_seconds)
            except queue.Empty:
                what, arg = "health", None
            if what == "ready" and not self._ready:
                self._ready = self._call("ready", self.sdk.ready)
                self.state = "ready" if self._ready else self.state
            elif what == "allocate":
                session, scenario = arg
                if not self._allocated:
                    self._allocated = self._call("allocate", self.sdk.allocate)
                    self.state = "allocated" if self._allocated else self.state
                self._call("label", self.sdk.set_label, "session", _label_value(session))
                self._call("label", self.sdk.set_label, "scenario", _label_value(scenario))
            elif what == "shutdown":
                self._call("shutdown", self.sdk.shutdown)
                self._shut = True
                self.state = "shutdown"
                return
            if self._ready and self._healthy and what in ("health", "ready"):
                self._call("health", self.sdk.health)


def _label_value(text: str) -> str:
    """``text`` as a valid label value: other characters become ``-``, at most 63, alphanumeric ends."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("-_.")
    return cleaned or "none"
