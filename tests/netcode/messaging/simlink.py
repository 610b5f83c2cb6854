"""A seeded, in-memory lossy link between two Connections, driven by a fake clock (test helper)."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from netcode.messaging.connection import Connection, Delivery


@dataclass
class SimLink:
    """Drops, duplicates, delays and reorders packets in both directions, deterministically."""

    seed: int = 1
    loss: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.05  # one-way base latency, seconds
    jitter: float = 0.0  # extra uniform random latency, seconds (reorders packets)
    rng: random.Random = field(init=False)
    _flight: list[tuple[float, int, int, bytes]] = field(init=False, default_factory=list)
    _order: int = field(init=False, default=0)
    sent: int = field(init=False, default=0)
    dropped: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def send(self, destination: int, payload: bytes, now: float) -> None:
        self.sent += 1
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            arrival = now + self.delay + self.rng.uniform(0.0, self.jitter)
            self._order += 1
            heapq.heappush(self._flight, (arrival, self._order, destination, payload))

    def due(self, now: float) -> list[tuple[int, bytes]]:
        out = []
        while self._flight and self._flight[0][0] <= now:
            _, _, destination, payload = heapq.heappop(self._flight)
            out.append((destination, payload))
        return out


def run(
    peers: tuple[Connection, Connection],
    link: SimLink,
    seconds: float,
    *,
    start: float = 0.0,
    dt: float = 1 / 60,
    received: tuple[list[Delivery], list[Delivery]] | None = None,
    mute: tuple[bool, bool] = (False, False),
    budget: int | None = None,
) -> tuple[list[Delivery], list[Delivery], float]:
    """Tick both peers for ``seconds``; returns what each received and the final time."""
    received = received or ([], [])
    steps = round(seconds / dt)
    now = start
    for step in range(1, steps + 1):
        now = start + step * dt
        for destination, payload in link.due(now):
            received[destination].extend(peers[destination].receive_packet(payload, now))
        for index, peer in enumerate(peers):
            packets = peer.generate_packets(now, budget)
            if mute[index]:
                continue
            for payload in packets:
                link.send(1 - index, payload, now)
    return received[0], received[1], now
