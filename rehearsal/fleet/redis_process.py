"""A redis-server of our own on a loopback port: for ``rehearsal serve --processes N`` without ``--redis``,
the load runs and the tests. Debian's ``redis-server`` binary (``.ci/run`` installs it when missing); no
persistence (the directory is rebuilt by the heartbeats: ``rehearsal.fleet.heartbeat``), its files in a
folder of the caller's, and it dies with us (``stop``) or when our process group is killed."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

START_SECONDS = 10.0


class RedisUnavailableError(RuntimeError):
    """No redis-server binary, or it did not start."""


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class RedisProcess:
    """``redis-server`` on ``127.0.0.1:port`` (a free one unless given) with its files under ``folder``."""

    def __init__(self, folder: Path, port: int | None = None, binary: str = "redis-server") -> None:
        path = shutil.which(binary)
        if path is None:
            raise RedisUnavailableError(f"{binary} not found: install Debian's redis-server package")
        self.binary = path
        # absolute: redis-server changes into --dir before it opens --logfile, so a relative folder would not be found
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_tcp_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        """Start it and wait (bounded) until it answers PING."""
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.folder),
            "--logfile", str(self.folder / "redis.log"),
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RedisUnavailableError(
                    f"redis-server exited ({self.proc.returncode}); see {self.folder}/redis.log"
                )
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisUnavailableError(f"redis-server did not answer on port {self.port} in {START_SECONDS} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s) and wait for it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port: an empty Redis (a restart without persistence)."""
        self.stop()
        self.start()

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
