"""A simulated round trip for the haptic loop: a 60 Hz server computing a force law on delayed device positions.

Why: the loop's stability and accuracy under latency are judged against a server that sees the hand late and
answers late, faster than real time (tests and benches step a simulated clock). ``simulate`` runs a
``HapticLoop`` on a ``SimulatedHand`` with such a server and returns what happened (``SimulationResult``).
Force laws: ``wall_law`` (a stiff wall) and ``trace_law`` (a recorded grasp-and-pull force, replayed against
the displacement along the pull).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netcode.protocol.fixtures import FixtureSet
from netcode.protocol.forces import FORCE_QUANTUM
from netcode.thin_client.haptics import HapticConfig, HapticLoop
from netcode.thin_client.haptics_devices import SimulatedHand

ForceLaw = Callable[[np.ndarray], np.ndarray]  # instrument position (m) -> force tissue exerts on it (N)
INSTRUMENT = 32768


def wall_law(stiffness: float = 1000.0, height: float = 0.0) -> ForceLaw:
    """A wall below ``height`` along +y pushing up with ``stiffness`` (N/m) times the penetration."""

    def law(x: np.ndarray) -> np.ndarray:
        depth = height - float(x[1])
        return np.array([0.0, stiffness * depth, 0.0]) if depth > 0 else np.zeros(3)

    return law


def trace_law(displacement: np.ndarray, forces: np.ndarray, direction: np.ndarray) -> ForceLaw:
    """A recorded force (N, (k, 3)) against displacement along ``direction`` (m, increasing), interpolated."""
    d = np.asarray(displacement, dtype=np.float64)
    f = np.asarray(forces, dtype=np.float64)
    u = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)

    def law(x: np.ndarray) -> np.ndarray:
        s = float(u @ x)
        return np.array([np.interp(s, d, f[:, i]) for i in range(3)])

    return law


def load_trace(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(displacement, forces, direction, meta) of a recorded grasp-and-pull trace (JSON: positions, forces)."""
    data = json.loads(Path(path).read_text())
    positions = np.asarray(data["positions"], dtype=np.float64)
    forces = np.asarray(data["forces"], dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or forces.shape != positions.shape or len(positions) < 2:
        raise ValueError(f"{path}: positions and forces must be equal (k >= 2, 3) arrays")
    direction = positions[-1] - positions[0]
    direction = direction / np.linalg.norm(direction)
    s = (positions - positions[0]) @ direction
    order = np.argsort(s, kind="stable")
    s, forces = np.maximum.accumulate(s[order]), forces[order]
    keep = np.concatenate([[True], np.diff(s) > 1e-9])
    return s[keep], forces[keep], direction, data.get("meta", {})


@dataclass
class SimulationResult:
    """Sampled every loop cycle: time, device position, rendered force, the law's force at the device now."""

    times: np.ndarray
    positions: np.ndarray
    rendered: np.ndarray
    truth: np.ndarray
    work: float  # J the rendered force put into the hand (> 0: the environment generated energy)
    loop: HapticLoop = field(repr=False)

    def force_error(self, start: float = 0.0) -> float:
        """RMS |rendered - law at the device| over RMS |law| (from ``start`` s on)."""
        m = self.times >= start
        diff = np.linalg.norm(self.rendered[m] - self.truth[m], axis=1)
        ref = np.linalg.norm(self.truth[m], axis=1)
        return float(np.sqrt(np.mean(diff**2)) / max(np.sqrt(np.mean(ref**2)), 1e-9))

    def buzz(self, start: float = 0.0) -> float:
        """RMS of the rendered force's second difference per cycle (N): high where it chatters."""
        f = self.rendered[self.times >= start]
        return float(np.sqrt(np.mean(np.sum(np.diff(f, 2, axis=0) ** 2, axis=1)))) if len(f) > 2 else 0.0


def simulate(
    law: ForceLaw,
    intent: Callable[[float], np.ndarray],
    *,
    duration: float,
    rtt: float = 0.1,
    tick_hz: float = 60.0,
    config: HapticConfig | None = None,
    hand: dict | None = None,
    jitter: float = 0.0,
    seed: int = 0,
    fixtures: FixtureSet | None = None,
) -> SimulationResult:
    """Run ``duration`` s of the loop at its rate: each server tick takes the newest device position that has
    arrived (rtt/2 up), computes ``law`` there, quantizes it as the wire does and delivers it rtt/2 later
    (+ U(0, jitter) each way). ``fixtures``: virtual fixtures the loop renders from the start (the device point
    is the tip); the law stays the tissue's, and ``truth`` with it."""
    cfg = config or HapticConfig()
    device = SimulatedHand(intent, **(hand or {}))
    loop = HapticLoop(device, INSTRUMENT, cfg)
    if fixtures is not None:
        loop.on_fixtures(fixtures)
    rng = np.random.default_rng(seed)
    period, tick = 1.0 / cfg.rate_hz, 1.0 / tick_hz
    n = round(duration / period)
    times, positions, rendered, truth = np.empty(n), np.empty((n, 3)), np.empty((n, 3)), np.empty((n, 3))
    uplink: list[tuple[float, int, np.ndarray]] = []  # (arrival at the server, order, position)
    downlink: list[tuple[float, int, np.ndarray, np.ndarray]] = []  # (arrival at the client, order, F, x)
    server_x: np.ndarray | None = None
    next_tick, order = 0.0, 0
    for i in range(n):
        now = i * period
        x = device.read_position(now)
        if i % max(1, round(cfg.rate_hz / tick_hz)) == 0:  # the client's input packets go at the tick rate
            heapq.heappush(uplink, (now + rtt / 2 + rng.uniform(0, jitter), order, x.copy()))
            order += 1
        while next_tick <= now:
            while uplink and uplink[0][0] <= next_tick:
                server_x = heapq.heappop(uplink)[2]
            if server_x is not None:
                f = np.rint(law(server_x) / FORCE_QUANTUM) * FORCE_QUANTUM
                arrival = next_tick + rtt / 2 + rng.uniform(0, jitter)
                heapq.heappush(downlink, (arrival, order, f, server_x.copy()))
                order += 1
            next_tick += tick
        while downlink and downlink[0][0] <= now:
            _, _, f, xs = heapq.heappop(downlink)
            loop.on_force(f, xs)
        rendered[i] = loop.step(now)
        times[i], positions[i], truth[i] = now, x, law(x)
    device.advance(n * period)
    return SimulationResult(times, positions, rendered, truth, device.work, loop)
