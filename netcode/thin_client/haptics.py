"""The 1 kHz haptic loop: renders the server's 60 Hz instrument force on a device, locally modelled and kept passive.

Why: the server measures the force tissue exerts on an instrument once per tick and it arrives a round trip
late; a hand feels 1 kHz. Between server forces the loop renders a local linear model about the pose the force
was measured at (``LocalForceModel``: F = F_s - k n n.(x - x_s), k estimated from the server's own force and
position stream), smoothed (no 60 Hz staircase), capped, and passed through a time-domain passivity
observer/controller (``PassivityController``, Hannaford & Ryu 2002): the rendered environment never puts out
more energy than it has taken in, so latency cannot make a stiff contact buzz or push the hand away.

``HapticLoop.step(now)`` is one cycle (tests and benches drive it with a simulated clock);
``HapticLoop.start()`` runs it on its own daemon thread at ``rate_hz`` until ``stop()`` (bounded join).
Virtual fixtures (``netcode.protocol.fixtures``, from the server's ``fixtures`` message): ``FixtureForces``
renders each active forbidden region as a wall (its stiffness times the tip's depth, along the outward
normal) and each active guide as a spring towards the nearest point of its plane or path, at the instrument
tip, every cycle, added after the smoothing (they are local: no staircase to smooth, and a low-pass would
only lag the wall) and before the passivity controller, whose bookkeeping covers them too.

Devices: ``netcode.thin_client.haptics_devices``. Specification for ports: CLIENT.md section 8.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from netcode.protocol.fixtures import Fixture, FixtureSet, FixtureSetError, fixture_set_from_fields
from netcode.protocol.forces import ForceReport
from netcode.protocol.response_model import ResponseModel
from netcode.thin_client.haptics_devices import HapticDevice


@dataclass(frozen=True, slots=True)
class HapticConfig:
    """Loop rate, device limits and local-model parameters (SI units).

    max_force: the device's continuous force limit (N); max_stiffness: the stiffest local model the device
    renders stably (N/m); max_damping: the strongest damping the passivity controller may add (N s/m);
    smoothing: time constant of the low-pass on the model's force (s); energy_reserve: the most energy the
    observer credits (J), so a long absorbing contact cannot bank energy for a later burst; contact_force:
    below this server force (N) there is no contact and no local stiffness; stiffness_gain: how fast the
    stiffness estimate follows a new sample (0..1); stiffness_window: the server samples (ticks) one stiffness
    sample is fitted over; min_probe: the smallest spread of their positions along the force (m) that yields a
    stiffness sample; energy_margin: the energy (J) the passivity controller keeps in hand."""

    rate_hz: float = 1000.0
    max_force: float = 3.3
    max_stiffness: float = 1000.0
    max_damping: float = 50.0
    smoothing: float = 0.004
    energy_reserve: float = 0.02
    energy_margin: float = 1e-4
    contact_force: float = 0.02
    stiffness_gain: float = 0.5
    stiffness_window: int = 4
    min_probe: float = 2e-4
    passivity: bool = True  # off only to show what it prevents (tests, benches)
    local_model: bool = True  # off: hold the newest server force (the naive baseline)

    def __post_init__(self) -> None:
        positive = ("rate_hz", "max_force", "max_stiffness", "smoothing", "contact_force", "min_probe")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"HapticConfig.{name} must be a positive finite number, got {value!r}")
        if not (0 <= self.max_damping < math.inf and 0 <= self.energy_margin <= self.energy_reserve < math.inf):
            raise ValueError("HapticConfig: max_damping >= 0 and 0 <= energy_margin <= energy_reserve, all finite")
        if not 0 < self.stiffness_gain <= 1:
            raise ValueError("HapticConfig.stiffness_gain must be in (0, 1]")
        if not (isinstance(self.stiffness_window, int) and 2 <= self.stiffness_window <= 64):
            raise ValueError("HapticConfig.stiffness_window must be an int in [2, 64]")


class LocalForceModel:
    """The server's newest force F_s at the instrument position x_s, extended to nearby positions with a stiffness
    k along the force's direction n: F(x) = F_s - k n (n . (x - x_s)), its component along n kept between 0 and
    the device limit (contact pushes, grasps pull: neither flips sign). k is the slope -dF.n / dx.n fitted by least
    squares over the last ``stiffness_window`` server samples once their positions spread ``min_probe`` along n
    (a window, not successive pairs: a slow start moves less than ``min_probe`` a tick, and 0.01 N quantization
    over one tick's motion is noise), followed with ``stiffness_gain``; reset when contact ends or a grasp
    starts or ends."""

    def __init__(self, config: HapticConfig) -> None:
        self.config = config
        self.force = np.zeros(3)
        self.position: np.ndarray | None = None
        self.normal = np.zeros(3)
        self.stiffness = 0.0
        self.updates = 0
        self._window: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=config.stiffness_window)

    def reset(self) -> None:
        """Forget the stiffness (a new grasp or release: the old law says nothing about the new one)."""
        self.stiffness = 0.0
        self._window.clear()

    def update(self, force: np.ndarray, position: np.ndarray) -> None:
        """A server force (N, on the instrument) measured at the instrument's position (m)."""
        force = np.asarray(force, dtype=np.float64)
        position = np.asarray(position, dtype=np.float64)
        if not (np.all(np.isfinite(force)) and np.all(np.isfinite(position))):
            return  # never render garbage
        cfg = self.config
        magnitude = float(np.linalg.norm(force))
        if magnitude < cfg.contact_force:
            self.stiffness = 0.0
            self._window.clear()
            normal = np.zeros(3)
        else:
            normal = force / magnitude
            self._window.append((position, force))
            if len(self._window) >= 2:
                s = np.array([float(normal @ x) for x, _ in self._window])
                f = np.array([float(normal @ g) for _, g in self._window])
                if float(s.max() - s.min()) >= cfg.min_probe:
                    ds = s - s.mean()
                    sample = -float(ds @ (f - f.mean())) / float(ds @ ds)
                    sample = min(max(sample, 0.0), cfg.max_stiffness)
                    self.stiffness += cfg.stiffness_gain * (sample - self.stiffness)
        self.force, self.position, self.normal = force, position, normal
        self.updates += 1

    def at(self, x: np.ndarray) -> np.ndarray:
        """The modelled force at device position x (N)."""
        if self.position is None or self.stiffness == 0.0:
            return self.force
        n = self.normal
        along = float(n @ self.force) - self.stiffness * float(n @ (x - self.position))
        along = min(max(along, 0.0), self.config.max_force * 4)
        return self.force + (along - float(n @ self.force)) * n


class PassivityController:
    """Time-domain passivity observer and controller (Hannaford & Ryu 2002) at the device port.

    The observer sums the energy the rendered environment absorbed, W = -sum F(n-1).(x(n) - x(n-1)) (exact for a
    force held between samples); credit is capped at ``energy_reserve``. Before a force F goes out, if it would
    drive W below 0 at the current velocity v while doing work on the hand (F.v >= 0), the controller adds the
    damping that brings W back to 0 (a force resisting the motion only adds to W: damping it would only add
    error, as in a grasp pulled on):
    F' = F - beta v, beta = (F.v dt + margin - W) / (|v|^2 dt), at most ``max_damping`` (a discrete damper is
    stable below 2 m / dt: 200 N s/m for a 0.1 kg hand at 1 kHz; a real device states its own limit).
    The margin keeps W above 0 despite the one-cycle-old velocity the prediction uses."""

    def __init__(self, config: HapticConfig) -> None:
        self.config = config
        self.energy = 0.0  # J absorbed by the rendered environment (>= 0: passive so far)
        self.dissipated = 0.0  # J the controller removed
        self.active_cycles = 0
        self._last_x: np.ndarray | None = None
        self._last_f = np.zeros(3)

    def filter(self, force: np.ndarray, x: np.ndarray, dt: float) -> np.ndarray:
        """The force to send given the device's position now; updates the observer with the last cycle."""
        cfg = self.config
        if self._last_x is None or dt <= 0:
            self._last_x, self._last_f = x.copy(), np.zeros(3)
            return np.zeros(3)  # no velocity yet: start from rest
        dx = x - self._last_x
        self.energy = min(self.energy - float(self._last_f @ dx), cfg.energy_reserve)
        out = force
        if cfg.passivity:
            v = dx / dt
            vv = float(v @ v)
            power = float(force @ v)  # > 0: the force would do work on the hand this cycle
            predicted = self.energy - power * dt - cfg.energy_margin
            if predicted < 0 and vv > 1e-12 and power >= 0:
                beta = min(-predicted / (vv * dt), cfg.max_damping)
                out = force - beta * v
                self.dissipated += beta * vv * dt
                self.active_cycles += 1
        self._last_x, self._last_f = x.copy(), out
        return out


class FixtureForces:
    """The forces of the active virtual fixtures at a tip (N): walls out of forbidden regions, springs onto
    guides, each stiffness capped at ``HapticConfig.max_stiffness`` (the stiffest the device renders stably).
    A region's distance is computed only while the tip is inside its bounding box (a mesh's distance costs
    O(triangles) a cycle; away from it, nothing)."""

    def __init__(self, config: HapticConfig) -> None:
        self.config = config
        self.walls: list[Fixture] = []
        self.guides: list[Fixture] = []
        self._bounds: list[tuple[np.ndarray, np.ndarray]] = []
        self.revision = -1
        self.contact = False  # the tip was inside a forbidden region at the last ``at``

    def update(self, fixtures: FixtureSet) -> bool:
        """Take a newer set (an older revision is ignored: reordered or repeated); True when taken."""
        if fixtures.revision <= self.revision:
            return False
        self.revision = fixtures.revision
        self.walls = fixtures.active("forbidden")
        self._bounds = [wall.shape.bounds() for wall in self.walls]
        self.guides = fixtures.active("guide")
        return True

    def at(self, tip: np.ndarray) -> np.ndarray:
        """The fixtures' force on the hand with the instrument tip at ``tip`` (m, world)."""
        force = np.zeros(3)
        self.contact = False
        cap = self.config.max_stiffness
        for wall, (lo, hi) in zip(self.walls, self._bounds, strict=True):
            if np.any(tip < lo) or np.any(tip > hi):
                continue  # outside the box: outside the region, no wall
            depth, normal = wall.shape.distance(tip)
            if depth < 0:
                force += min(wall.stiffness, cap) * -depth * normal
                self.contact = True
        for guide in self.guides:
            force += min(guide.stiffness, cap) * (guide.shape.closest(tip) - tip)
        return force


@dataclass(slots=True)
class HapticStats:
    """What the loop did: cycles, their period jitter (s), energy (J) and passivity controller activity."""

    cycles: int = 0
    late_cycles: int = 0
    energy_absorbed: float = 0.0
    energy_dissipated: float = 0.0
    passivity_cycles: int = 0
    fixture_contact_cycles: int = 0  # cycles with the tip inside a forbidden region (a wall rendered)
    fixture_messages_dropped: int = 0  # ``fixtures`` messages that did not decode


class HapticLoop:
    """One device rendering one instrument's force (see the module doc). Feed it the server's forces with
    ``on_forces`` (any thread) and grasps with ``on_grasp`` / ``on_release``; ``step(now)`` is one cycle."""

    def __init__(self, device: HapticDevice, instrument: int, config: HapticConfig | None = None) -> None:
        self.device = device
        self.instrument = int(instrument)
        self.config = config or HapticConfig()
        self.model = LocalForceModel(self.config)
        self.passivity = PassivityController(self.config)
        self.rendered = np.zeros(3)
        self.fixtures = FixtureForces(self.config)
        self.tip_offset = np.zeros(3)  # world vector from the device point to the instrument tip (set_tip_offset)
        self._smoothed = np.zeros(3)
        self._inbox: deque[tuple[str, object]] = deque(maxlen=64)  # other threads -> the loop's thread
        self._last_now: float | None = None
        self._last_tick = -1
        self.periods: deque[float] = deque(maxlen=100_000)  # s between cycle starts (for jitter figures)
        self.stats = HapticStats()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None

    # --- inputs (any thread) -----------------------------------------------------------------------------

    def on_forces(self, report: ForceReport) -> None:
        """A ``forces`` message: takes this loop's instrument from it (others are ignored)."""
        if report.tick <= self._last_tick:
            return  # older than one already taken (reordered by the network)
        self._last_tick = report.tick
        entry = report.of(self.instrument)
        if entry is not None:
            force, _grasp, position = entry
            self._inbox.append(("force", (force.copy(), position.copy())))

    def on_force(self, force: np.ndarray, position: np.ndarray) -> None:
        """One server force on this instrument (N) and where it was measured (m)."""
        self._inbox.append(("force", (np.asarray(force, float).copy(), np.asarray(position, float).copy())))

    def on_grasp(self, model: ResponseModel) -> None:
        """This instrument grasped: the contact law changes, so the stiffness is estimated afresh."""
        if model.instrument == self.instrument:
            self._inbox.append(("reset", None))

    def on_release(self) -> None:
        self._inbox.append(("reset", None))

    def on_fixtures(self, fixtures: FixtureSet) -> None:
        """The room's virtual fixtures and their state (any thread): rendered from the next cycle on."""
        self._inbox.append(("fixtures", fixtures))

    def on_fixtures_message(self, fields: dict) -> bool:
        """A ``fixtures`` message's fields; False (counted, nothing changes) when they do not decode."""
        try:
            self.on_fixtures(fixture_set_from_fields(fields))
        except (FixtureSetError, KeyError, TypeError, ValueError):
            self.stats.fixture_messages_dropped += 1
            return False
        return True

    def set_tip_offset(self, offset: np.ndarray) -> None:
        """Where the instrument's tip is relative to the device point (m, world; the client updates it as the
        instrument turns): fixtures act on the tip."""
        offset = np.asarray(offset, dtype=np.float64).reshape(3)
        if np.all(np.isfinite(offset)):
            self._inbox.append(("tip", offset.copy()))

    # --- one cycle ---------------------------------------------------------------------------------------

    def step(self, now: float) -> np.ndarray:
        """Read the device, render the force for this cycle, send it; returns the force sent (N)."""
        cfg = self.config
        while self._inbox:
            kind, payload = self._inbox.popleft()
            if kind == "force":
                self.model.update(*payload)
            elif kind == "fixtures":
                self.fixtures.update(payload)
            elif kind == "tip":
                self.tip_offset = payload
            else:
                self.model.reset()
        dt = 1.0 / cfg.rate_hz if self._last_now is None else now - self._last_now
        if self._last_now is not None:
            self.periods.append(dt)
        self._last_now = now
        x = np.asarray(self.device.read_position(now), dtype=np.float64)
        if not np.all(np.isfinite(x)):
            self.device.apply_force(np.zeros(3), now)  # a glitching encoder: render nothing this cycle
            return np.zeros(3)
        target = self.model.at(x) if cfg.local_model else self.model.force
        a = min(max(dt, 0.0) / cfg.smoothing, 1.0)
        self._smoothed = self._smoothed + a * (target - self._smoothed)
        force = self._smoothed
        if self.fixtures.walls or self.fixtures.guides:
            force = force + self.fixtures.at(x + self.tip_offset)
            self.stats.fixture_contact_cycles += self.fixtures.contact
        magnitude = float(np.linalg.norm(force))
        if magnitude > cfg.max_force:
            force = force * (cfg.max_force / magnitude)
        force = self.passivity.filter(force, x, dt)  # may exceed max_force briefly: damping, never active
        self.rendered = force
        self.device.apply_force(force, now)
        s = self.stats
        s.cycles += 1
        s.energy_absorbed = self.passivity.energy
        s.energy_dissipated = self.passivity.dissipated
        s.passivity_cycles = self.passivity.active_cycles
        return force

    # --- its own thread ----------------------------------------------------------------------------------

    def start(self, clock: Callable[[], float] = time.perf_counter) -> None:
        """Run ``step`` at ``rate_hz`` on a daemon thread (sleep, then spin the last 0.3 ms) until ``stop()``."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the haptic loop is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(clock,), name="haptic-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the thread (bounded wait) and zero the device's force; True when the thread ended."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        ended = thread is None or not thread.is_alive()
        if ended:
            self._thread = None
        return ended

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, clock: Callable[[], float]) -> None:
        period = 1.0 / self.config.rate_hz
        deadline = clock()
        try:
            while not self._stop.is_set():
                self.step(clock())
                deadline += period
                now = clock()
                if now > deadline + period:  # fell behind by a whole cycle: skip, do not catch up in a burst
                    self.stats.late_cycles += 1
                    deadline = now
                    continue
                rest = deadline - now - 0.0003
                if rest > 0:
                    time.sleep(rest)
                while clock() < deadline:
                    pass
        except Exception as exc:  # a device error ends the loop; it is kept for the caller, not raised here
            self.error = exc
        finally:
            try:
                self.device.apply_force(np.zeros(3), clock())
            except Exception as exc:  # the device is gone: nothing more to zero
                self.error = self.error or exc
