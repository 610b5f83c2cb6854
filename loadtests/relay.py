"""A UDP impairment relay on loopback: latency, jitter, random and burst loss, reordering, duplication.

The relay sits between headsets and the server. Each client gets its own **lane**: a front socket (the
client sends there instead of to the server) and a back socket (the server sees it as the client's
address). Every lane has its own ``Impairment`` and, per direction, its own ``Shaper`` with a seeded RNG,
so a run is deterministic given the seed: which packets are dropped, duplicated or held back depends only
on the seed and the order packets arrive, never on timing.

The connect token is untouched: it still names the server, whose own address check stays as it is. The
client side routes by itself (``loadtests.swarm.RoutedHeadset`` sends to the lane and treats what comes
back from it as coming from the server), the way a NAT or a VPN would. Nothing in the server changes.

``Shaper`` is sans-IO (``offer(now, data) -> [(deliver_at, data), ...]``), so tests check the statistics
without sockets. ``Relay`` runs every lane in one thread with ``selectors``; queues are bounded (packets over
``max_queue`` per direction are dropped and counted); the loop stops on ``stop()`` or after ``max_seconds``.
"""

from __future__ import annotations

import heapq
import math
import random
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

LOOPBACK = ("127.0.0.1", "::1")
MAX_DATAGRAM = 2048
RECV_BATCH = 256  # datagrams read from one socket per wake-up (bounded)


@dataclass(frozen=True)
class Impairment:
    """What one lane does to its packets, in each direction (times in seconds, probabilities 0..1).

    ``latency`` is one way (an RTT of 150 +/- 30 ms is latency 0.075, jitter 0.015). Jitter never reorders
    by itself (a packet is not delivered before an earlier one); ``reorder`` holds a packet back by
    ``reorder_delay`` so that later ones overtake it. ``bursts`` are (start, seconds) windows after the lane
    starts during which everything is dropped; ``Relay.burst`` starts one now.
    """

    latency: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.04
    duplicate: float = 0.0
    bursts: tuple[tuple[float, float], ...] = ()
    max_queue: int = 2048

    def __post_init__(self) -> None:
        for name in ("latency", "jitter", "reorder_delay"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 10):
                raise ValueError(f"{name} must be a number of seconds in [0, 10]")
        for name in ("loss", "reorder", "duplicate"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                raise ValueError(f"{name} must be a probability in [0, 1]")
        if not (isinstance(self.max_queue, int) and 1 <= self.max_queue <= 1_000_000):
            raise ValueError("max_queue must be an integer in [1, 1000000]")
        bursts = []
        for item in self.bursts[:1000]:
            start, seconds = (float(v) for v in item)
            if not (math.isfinite(start) and math.isfinite(seconds) and start >= 0 and 0 <= seconds <= 3600):
                raise ValueError("bursts are (start >= 0, 0 <= seconds <= 3600) pairs")
            bursts.append((start, seconds))
        object.__setattr__(self, "bursts", tuple(sorted(bursts)))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Impairment:
        """From a JSON-like mapping; unknown keys or bad values raise ValueError naming the problem."""
        if values is None:
            return cls()
        if not isinstance(values, Mapping):
            raise ValueError("an impairment is a mapping of settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown impairment settings {unknown} (known: {sorted(known)})")
        try:
            kwargs = dict(values)
            if "bursts" in kwargs:
                kwargs["bursts"] = tuple(tuple(b) for b in kwargs["bursts"])
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad impairment: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bursts"] = [list(b) for b in self.bursts]
        return out


@dataclass
class Shaper:
    """One direction of one lane: decides, per packet, whether and when it is delivered (sans-IO)."""

    impairment: Impairment
    seed: int = 0
    start: float = 0.0
    stats: Counter = field(default_factory=Counter)
    queued: int = 0  # packets offered and not yet delivered (the Relay decrements on delivery)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._last_in_order = -math.inf
        self._manual_bursts: list[tuple[float, float]] = []

    def burst(self, now: float, seconds: float) -> None:
        """Drop everything from ``now`` for ``seconds``."""
        self._manual_bursts.append((now, now + max(0.0, float(seconds))))
        del self._manual_bursts[:-64]

    def in_burst(self, now: float) -> bool:
        t = now - self.start
        if any(a <= t < a + s for a, s in self.impairment.bursts):
            return True
        return any(a <= now < b for a, b in self._manual_bursts)

    def offer(self, now: float, data: bytes) -> list[tuple[float, bytes]]:
        """The (deliver_at, data) pairs for one packet arriving at ``now``: none if lost, two if duplicated."""
        imp, rng = self.impairment, self.rng
        self.stats["offered"] += 1
        # draw every random number for every packet, so decisions depend only on the seed and the count
        lost, jitter, reorder, duplicate, dup_jitter = (rng.random() for _ in range(5))
        if self.in_burst(now):
            self.stats["burst_dropped"] += 1
            return []
        if lost < imp.loss:
            self.stats["lost"] += 1
            return []
        if self.queued >= imp.max_queue:
            self.stats["queue_full"] += 1
            return []
        at = now + imp.latency + (2 * jitter - 1) * imp.jitter
        if reorder < imp.reorder:
            self.stats["held_back"] += 1
            at = max(at, self._last_in_order) + imp.reorder_delay
        else:
            at = max(at, self._last_in_order)  # jitter alone keeps the order
            self._last_in_order = at
        out = [(at, data)]
        if duplicate < imp.duplicate and self.queued + 1 < imp.max_queue:
            self.stats["duplicated"] += 1
            out.append((at + dup_jitter * max(imp.jitter, 0.001), data))
        self.queued += len(out)
        return out


class Lane:
    """One client's path through the relay: front socket (client side), back socket (server side)."""

    def __init__(self, index: int, impairment: Impairment, seed: int, server: tuple[str, int], now: float) -> None:
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        host = server[0]
        self.index = index
        self.impairment = impairment
        self.server = server
        self.front = socket.socket(family, socket.SOCK_DGRAM)
        self.back = socket.socket(family, socket.SOCK_DGRAM)
        for sock in (self.front, self.back):
            sock.bind((host, 0))
            sock.setblocking(False)
        self.client: tuple | None = None  # learnt from the first datagram on the front socket
        self.up = Shaper(impairment, seed * 2 + 1, now)  # client -> server
        self.down = Shaper(impairment, seed * 2 + 2, now)  # server -> client
        self.strays = 0  # datagrams on the front socket from anybody but the client

    @property
    def address(self) -> tuple[str, int]:
        """Where the client sends (instead of the server)."""
        host, port = self.front.getsockname()[:2]
        return host, port

    def burst(self, now: float, seconds: float) -> None:
        self.up.burst(now, seconds)
        self.down.burst(now, seconds)

    def stats(self) -> dict[str, Any]:
        return {
            "lane": self.index,
            "impairment": self.impairment.to_dict(),
            "up": dict(self.up.stats),
            "down": dict(self.down.stats),
            "strays": self.strays,
        }

    def close(self) -> None:
        self.front.close()
        self.back.close()


class Relay:
    """Lanes between clients and one server on loopback, pumped by one thread (``start``/``stop``)."""

    def __init__(self, server: tuple[str, int], *, max_seconds: float = 7200.0) -> None:
        if server[0] not in LOOPBACK:
            raise ValueError("the relay works on loopback only (127.0.0.1 or ::1)")
        self.server = (server[0], int(server[1]))
        self.max_seconds = max_seconds
        self.lanes: list[Lane] = []
        self._selector = selectors.DefaultSelector()
        self._heap: list[tuple[float, int, int, bool, bytes]] = []  # (at, n, lane, downstream, data)
        self._n = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: Counter[str] = Counter()

    def add_lane(self, impairment: Impairment | None = None, seed: int = 0) -> Lane:
        """A new lane (thread-safe; may be called while the relay runs)."""
        with self._lock:
            lane = Lane(len(self.lanes), impairment or Impairment(), seed, self.server, time.monotonic())
            self.lanes.append(lane)
            self._selector.register(lane.front, selectors.EVENT_READ, (lane, False))
            self._selector.register(lane.back, selectors.EVENT_READ, (lane, True))
        return lane

    def burst(self, lane: Lane | int, seconds: float) -> float:
        """Drop everything on a lane, both ways, from now for ``seconds``; returns when it ends (monotonic)."""
        target = self.lanes[lane] if isinstance(lane, int) else lane
        now = time.monotonic()
        with self._lock:
            target.burst(now, seconds)
        return now + seconds

    def start(self) -> Relay:
        self._thread = threading.Thread(target=self._run, name="impairment-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for lane in self.lanes:
                lane.close()
            self._selector.close()

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> list[dict[str, Any]]:
        with self._lock:
            return [lane.stats() for lane in self.lanes]

    # ------------------------------------------------------------------ the pump

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            timeout = 0.02
            if self._heap:
                timeout = min(timeout, max(0.0, self._heap[0][0] - time.monotonic()))
            try:
                ready = self._selector.select(timeout)
            except (OSError, ValueError):
                self.errors["select"] += 1
                time.sleep(0.01)
                continue
            with self._lock:
                for key, _ in ready:
                    lane, downstream = key.data
                    self._receive(lane, downstream)
                self._deliver_due()

    def _receive(self, lane: Lane, downstream: bool) -> None:
        sock = lane.back if downstream else lane.front
        shaper = lane.down if downstream else lane.up
        for _ in range(RECV_BATCH):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.errors["recv"] += 1
                return
            if downstream:
                if (addr[0], addr[1]) != self.server:
                    lane.strays += 1
                    continue
            else:
                if lane.client is None:
                    lane.client = addr
                elif addr != lane.client:
                    lane.strays += 1
                    continue
            for at, payload in shaper.offer(time.monotonic(), data):
                self._n += 1
                heapq.heappush(self._heap, (at, self._n, lane.index, downstream, payload))

    def _deliver_due(self) -> None:
        now = time.monotonic()
        for _ in range(100_000):
            if not self._heap or self._heap[0][0] > now:
                return
            _, _, index, downstream, data = heapq.heappop(self._heap)
            lane = self.lanes[index]
            shaper = lane.down if downstream else lane.up
            shaper.queued -= 1
            try:
                if downstream:
                    if lane.client is not None:
                        lane.front.sendto(data, lane.client)
                else:
                    lane.back.sendto(data, self.server)
                shaper.stats["delivered"] += 1
            except OSError:
                self.errors["send"] += 1
