"""A UDP impairment relay on loopback for the page's WebTransport (QUIC) datagrams: one-way delay and loss.

The benchmark's counterpart of ``rehearsal.web.tcp_relay``: the page sends to the relay's port (``?wt_port=``),
the relay forwards to the server's WebTransport port from a socket of its own and back. Each datagram, either
way, is lost with probability ``loss`` (a seeded RNG) or delivered ``delay`` seconds after it arrived: a lost
datagram costs only itself (QUIC retransmits its handshake and streams, never a datagram). One client (the
first address that sends) per relay; queues are bounded (``MAX_QUEUE`` per direction, beyond that dropped).
"""

from __future__ import annotations

import contextlib
import heapq
import random
import selectors
import socket
import threading
import time
from collections import Counter
from typing import Any

MAX_DATAGRAM = 65535
MAX_QUEUE = 4096  # datagrams held per direction


class UdpRelay:
    """Relay ``127.0.0.1:port`` to ``127.0.0.1:target`` with ``rtt / 2`` delay and ``loss`` each way, in a thread."""

    def __init__(self, target: int, *, rtt: float, loss: float, seed: int = 1) -> None:
        if not (0 <= rtt <= 2 and 0 <= loss < 1):
            raise ValueError("rtt in [0, 2] s, loss in [0, 1)")
        self.target = ("127.0.0.1", target)
        self.delay = rtt / 2
        self.loss = loss
        self.rng = random.Random(seed)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.client: Any = None
        self.counts: Counter[str] = Counter()
        self._heap: list[tuple[float, int, bool, bytes]] = []
        self._queued = Counter()  # per direction (True: to the server)
        self._n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="udp-relay")
        self._thread.start()

    def _offer(self, upstream: bool, data: bytes, now: float) -> None:
        way = "up" if upstream else "down"
        self.counts[f"{way}_datagrams"] += 1
        if self.rng.random() < self.loss:
            self.counts[f"{way}_lost"] += 1
            return
        if self._queued[upstream] >= MAX_QUEUE:
            self.counts[f"{way}_overflow"] += 1
            return
        self._n += 1
        self._queued[upstream] += 1
        heapq.heappush(self._heap, (now + self.delay, self._n, upstream, data))

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.front, selectors.EVENT_READ, True)
        selector.register(self.back, selectors.EVENT_READ, False)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                wait = min(0.05, max(0.0, self._heap[0][0] - now)) if self._heap else 0.05
                for key, _ in selector.select(wait):
                    upstream = key.data
                    try:
                        data, addr = key.fileobj.recvfrom(MAX_DATAGRAM)
                    except OSError:
                        continue
                    if upstream:
                        if self.client is None:
                            self.client = addr
                        elif addr != self.client:
                            self.counts["stranger"] += 1
                            continue
                    elif addr != self.target:
                        continue
                    self._offer(upstream, data, time.monotonic())
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, upstream, data = heapq.heappop(self._heap)
                    self._queued[upstream] -= 1
                    with contextlib.suppress(OSError):
                        if upstream:
                            self.back.sendto(data, self.target)
                        elif self.client is not None:
                            self.front.sendto(data, self.client)
        finally:
            selector.close()

    def stats(self) -> dict[str, int]:
        return dict(self.counts)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.front.close()
        self.back.close()
