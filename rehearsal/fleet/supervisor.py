"""``rehearsal serve --processes N``: N game-server processes and the join service on one machine, one directory.

The supervisor makes the fleet's secrets in its data folder (``DIR``) and hands them to its children in the
environment; game server ``i`` gets ``DIR/processes/proc-<i>`` as its data folder (every process can read
the others': a dead one's rooms are adopted from there), a free UDP and HTTP port unless ``--udp-port`` gives
a base (``base + i``), and registers in the directory. The join service listens on ``--http-port``: that is
the fleet's address for admins and participants. Without ``--redis`` a redis-server of its own runs on a
free loopback port (``DIR/redis``).

A child that exits unexpectedly is started again after a pause, at most ``MAX_RESTARTS`` times in
``RESTART_WINDOW_SECONDS`` (then it stays down: logged; its rooms were adopted by the others meanwhile). On
SIGINT/SIGTERM every game server drains (SIGTERM: its rooms finish, up to ``drain_seconds``), then the join
service and the Redis stop; a second signal stops everything at once. Children die with the supervisor
(``PR_SET_PDEATHSIG``), so nothing is left running.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from rehearsal.fleet.directory import DEFAULT_NAMESPACE
from rehearsal.fleet.redis_process import RedisProcess
from rehearsal.secrets_store import ADMIN_CREDENTIAL, TOKEN_KEY, server_secret

log = logging.getLogger("rehearsal.fleet.supervisor")

MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
RESTART_PAUSE_SECONDS = 0.5
POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 10.0  # after the drain: a child still up is killed
MAX_PROCESSES = 64


def _die_with_parent() -> None:  # in the child, before exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    """One supervised process: its name, command line, and its restarts."""

    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    restarts: deque = field(default_factory=deque)  # monotonic times of recent restarts
    given_up: bool = False


@dataclass
class FleetPlan:
    """What ``rehearsal serve --processes N`` runs (built from the CLI's flags)."""

    data_dir: Path
    processes: int
    capacity: int
    http_host: str = "127.0.0.1"
    http_port: int = 8080  # the join service's
    udp_host: str = "127.0.0.1"
    udp_port: int = 0  # a base (process i: base + i), or 0: free ports
    redis_url: str = ""  # empty: start one
    namespace: str = DEFAULT_NAMESPACE
    drain_seconds: float = 30.0
    extra: list[str] = field(default_factory=list)  # more `rehearsal serve` flags for every game server


class Supervisor:
    """Runs a ``FleetPlan`` (see the module doc)."""

    def __init__(self, plan: FleetPlan) -> None:
        if not 1 <= plan.processes <= MAX_PROCESSES:
            raise ValueError(f"--processes must be in [1, {MAX_PROCESSES}]")
        self.plan = plan
        self.root = Path(plan.data_dir)
        self.redis: RedisProcess | None = None
        self.children: list[Child] = []
        self.stopping = False
        self.signals = 0

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[TOKEN_KEY.env_var] = server_secret(self.root, TOKEN_KEY).hex()
        env[ADMIN_CREDENTIAL.env_var] = server_secret(self.root, ADMIN_CREDENTIAL).hex()
        return env

    def build(self) -> list[Child]:
        plan, python = self.plan, [sys.executable, "-m", "rehearsal"]
        redis_url = plan.redis_url or (self.redis.url if self.redis else "")
        join = ["join-service", "--data-dir", str(self.root), "--redis", redis_url, "--http-host", plan.http_host]
        join += ["--http-port", str(plan.http_port), "--fleet-namespace", plan.namespace]
        children = [Child("join-service", [*python, *join])]
        for i in range(1, plan.processes + 1):
            udp = plan.udp_port + i if plan.udp_port else 0
            argv = ["serve", "--data-dir", str(self.root / "processes" / f"proc-{i}"), "--udp-host", plan.udp_host]
            argv += ["--udp-port", str(udp), "--http-host", plan.http_host, "--http-port", "0"]
            argv += ["--drain-seconds", str(plan.drain_seconds), "--redis", redis_url, "--process-id", f"proc-{i}"]
            argv += ["--capacity", str(plan.capacity), "--fleet-namespace", plan.namespace, *plan.extra]
            children.append(Child(f"proc-{i}", [*python, *argv]))
        return children

    def _start(self, child: Child) -> None:
        log.info("starting %s", child.name)
        child.proc = subprocess.Popen(
            child.argv, env=self._env(), stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )

    def run(self) -> int:
        """Start everything, keep it running until a signal, then stop it all (see the module doc). Returns 0,
        or 1 when a child could not be kept running."""
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.plan.redis_url:
            self.redis = RedisProcess(self.root / "redis").start()
            log.info("redis-server of the fleet on %s", self.redis.url)
        signal.signal(signal.SIGINT, self._signal)
        signal.signal(signal.SIGTERM, self._signal)
        self.children = self.build()
        for child in self.children:
            self._start(child)
        try:
            while not self.stopping:
                self._watch()
                time.sleep(POLL_SECONDS)
        finally:
            self._stop_all()
        return 1 if any(c.given_up for c in self.children) else 0

    def _signal(self, signum: int, frame: object) -> None:
        self.signals += 1
        self.stopping = True

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.given_up or child.proc is None or child.proc.poll() is None:
                continue
            code = child.proc.returncode
            while child.restarts and now - child.restarts[0] > RESTART_WINDOW_SECONDS:
                child.restarts.popleft()
            if len(child.restarts) >= MAX_RESTARTS:
                child.given_up = True
                log.error(
                    "%s exited (%s) %d times in %.0f s: not restarted",
                    child.name,
                    code,
                    MAX_RESTARTS + 1,
                    RESTART_WINDOW_SECONDS,
                )
                continue
            log.warning("%s exited (%s): restarting", child.name, code)
            child.restarts.append(now)
            time.sleep(RESTART_PAUSE_SECONDS)
            self._start(child)

    def _stop_all(self) -> None:
        games = [c for c in self.children if c.name != "join-service"]
        for child in games:  # drain first: their rooms finish
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.plan.drain_seconds + STOP_GRACE_SECONDS
        for child in games:
            self._wait_or_kill(child, deadline)
        for child in self.children:
            if child.name == "join-service" and child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
                self._wait_or_kill(child, time.monotonic() + STOP_GRACE_SECONDS)
        if self.redis is not None:
            self.redis.stop()
        log.info("fleet stopped")

    def _wait_or_kill(self, child: Child, deadline: float) -> None:
        if child.proc is None:
            return
        while child.proc.poll() is None and time.monotonic() < deadline:
            if self.signals > 1:  # a second signal: now
                break
            time.sleep(POLL_SECONDS)
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait(5)
