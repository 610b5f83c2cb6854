"""A TCP impairment relay on loopback for the browser's WebSocket: one-way delay and segment loss as TCP shows it.

TCP never loses bytes: a lost segment is retransmitted, and since the stream delivers in order, everything sent
after it waits too (head-of-line blocking). So loss is modelled where the page and the server see it, in time:
each chunk the relay reads is cut into ``MSS``-byte segments, each lost with probability ``loss`` (a seeded RNG);
a chunk with a lost segment is delivered ``retransmit`` seconds late (default one round trip plus Linux's 200 ms
minimum retransmission timeout), and no chunk is delivered before one read earlier (the order of the stream). A
chunk without loss is delivered ``delay`` seconds after it was read. ``Shaper`` is that rule, sans-IO;
``TcpRelay`` runs it per direction of every connection it accepts, in threads, to one upstream port.
"""

from __future__ import annotations

import contextlib
import math
import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass

MSS = 1448  # bytes of payload per segment (Ethernet MTU less IPv4 and TCP headers with timestamps)
MAX_QUEUE_BYTES = 8 * 1024 * 1024  # per direction: a reader this far behind stops reading (TCP's own backpressure)
CHUNK = 65536


@dataclass
class Shaper:
    """When each chunk of one direction of a stream is delivered (see the module doc). Times in seconds."""

    delay: float
    loss: float
    retransmit: float
    rng: random.Random
    last: float = -math.inf
    chunks: int = 0
    lost: int = 0

    def offer(self, now: float, size: int) -> float:
        """The delivery time of a chunk of ``size`` bytes read at ``now``."""
        segments = max(1, math.ceil(size / MSS))
        hit = any(self.rng.random() < self.loss for _ in range(segments))
        self.chunks += 1
        self.lost += hit
        self.last = max(self.last, now + self.delay + (self.retransmit if hit else 0.0))
        return self.last


class _Pipe:
    """One direction: a reader thread stamps chunks, a writer thread sends each at its time."""

    def __init__(self, src: socket.socket, dst: socket.socket, shaper: Shaper, stop: threading.Event) -> None:
        self.src, self.dst, self.shaper, self.stop = src, dst, shaper, stop
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.cond = threading.Condition()
        self.eof = False
        threading.Thread(target=self._read, daemon=True, name="relay-read").start()
        threading.Thread(target=self._write, daemon=True, name="relay-write").start()

    def _read(self) -> None:
        try:
            while not self.stop.is_set():
                data = self.src.recv(CHUNK)
                if not data:
                    break
                with self.cond:
                    while self.queued > MAX_QUEUE_BYTES and not self.stop.is_set():
                        self.cond.wait(0.05)
                    self.queue.append((self.shaper.offer(time.monotonic(), len(data)), data))
                    self.queued += len(data)
                    self.cond.notify_all()
        except OSError:
            pass
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def _write(self) -> None:
        try:
            while not self.stop.is_set():
                with self.cond:
                    while not self.queue and not self.eof and not self.stop.is_set():
                        self.cond.wait(0.05)
                    if not self.queue:
                        if self.eof or self.stop.is_set():
                            break
                        continue
                    at, data = self.queue[0]
                wait = at - time.monotonic()
                if wait > 0:
                    time.sleep(min(wait, 0.05))
                    continue
                with self.cond:
                    self.queue.popleft()
                    self.queued -= len(data)
                    self.cond.notify_all()
                self.dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            self.dst.shutdown(socket.SHUT_WR)


class TcpRelay:
    """Listens on a loopback port and relays every connection to ``127.0.0.1:upstream`` through two Shapers.

    ``rtt`` is the added round trip (half each way); ``loss`` per segment, both ways; ``seed`` makes which
    chunks are hit repeatable for the same sequence of reads. ``stats()`` counts chunks and hits."""

    def __init__(self, upstream: int, *, rtt: float, loss: float, retransmit: float | None = None, seed: int = 1):
        if not (0.0 <= rtt <= 5.0 and 0.0 <= loss < 1.0):
            raise ValueError("rtt in [0, 5] s, loss in [0, 1)")
        self.upstream = upstream
        self.delay = rtt / 2
        self.loss = loss
        self.retransmit = rtt + 0.2 if retransmit is None else retransmit
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.shapers: list[Shaper] = []
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True, name="relay-accept")
        self._thread.start()

    def _shaper(self) -> Shaper:
        shaper = Shaper(self.delay, self.loss, self.retransmit, random.Random(self.rng.random()))
        self.shapers.append(shaper)
        return shaper

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets += [client, server]
            _Pipe(client, server, self._shaper(), self.stop)
            _Pipe(server, client, self._shaper(), self.stop)

    def stats(self) -> dict[str, int]:
        return {"chunks": sum(s.chunks for s in self.shapers), "chunks_hit": sum(s.lost for s in self.shapers)}

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> TcpRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
