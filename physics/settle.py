"""Settling: step a model with no instruments until its tissue is at rest, so a world opens lying still.

A model is built at its rest shape, which gravity, the table and the ligaments do not hold: stepped from
there, the tissue falls and rings for up to two seconds (the liver lobe sags 19 mm and takes about 120 frames
to come below 1 mm/s). ``settle`` runs those frames before anyone sees the world; ``settled_state`` is the
same, remembered per model (``cache_key``: every array and constant the step reads, the frame's time step,
substeps and solver mode, and the rest test), so a second world of the same scenario costs a hash.

The outcome is deterministic for a given frame count (the solver gives the same bits on any thread count), and
``Settled.frames`` says how many were run: ``settle(..., frames=n)`` runs exactly n (a replay reproducing a
start that a time limit cut short on another machine).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, fields

import numpy as np

from physics.control import Control
from physics.model import Model
from physics.solver import MODES, Solver
from physics.state import State, new_state

CACHE_SIZE = 8  # settled starts kept (a few MB each at most: positions and velocities of one model)


@dataclass(frozen=True)
class RestTest:
    """When the tissue is at rest: its fastest vertex below ``speed`` (m/s) for ``hold_frames`` frames in a
    row; settling gives up after ``max_frames`` frames or ``max_seconds`` of wall time (counted from the end of
    the first frame, which may compile the kernels), whichever comes first.

    0.5 mm/s is 0.008 mm a frame at 60 Hz: a twelfth of the snapshot codec's 0.1 mm bound, so what is left of
    the motion reaches no client as change."""

    speed: float = 5e-4
    hold_frames: int = 5
    max_frames: int = 600
    max_seconds: float = 20.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed must be positive, got {self.speed!r}")
        for name in ("hold_frames", "max_frames"):
            value = getattr(self, name)
            if not (isinstance(value, int) and 1 <= value <= 100_000):
                raise ValueError(f"{name} must be an int in [1, 100000], got {value!r}")
        if not self.max_seconds > 0:  # inf: no time limit (an offline recording, where only the bits matter)
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds!r}")


DEFAULT_TEST = RestTest()


@dataclass(frozen=True)
class Settled:
    """What settling did: the start positions and velocities (read-only arrays), the frames stepped, why it
    stopped (``rest``: the test held; ``frames``: the frame limit or the exact count asked for; ``time``: the
    wall-time limit), the fastest vertex speed (m/s) in the last frame, and the wall time it took (s; 0 when
    remembered)."""

    x: np.ndarray
    v: np.ndarray
    frames: int
    reason: str
    max_speed: float
    seconds: float

    @property
    def at_rest(self) -> bool:
        return self.reason == "rest"

    def summary(self) -> dict:
        """Plain values for logs and status."""
        return {
            "frames": self.frames,
            "reason": self.reason,
            "max_speed_m_s": self.max_speed,
            "seconds": round(self.seconds, 3),
        }


def settle(
    model: Model,
    dt: float = 1.0 / 60.0,
    substeps: int = 20,
    mode: str = "xpbd",
    test: RestTest = DEFAULT_TEST,
    frames: int | None = None,
) -> Settled:
    """Step a fresh state of ``model`` with no instruments until ``test`` says it is at rest (or one of its
    limits), or exactly ``frames`` frames when given (0: the rest shape itself). The model is not changed."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if frames is not None and not (isinstance(frames, int) and 0 <= frames <= 100_000):
        raise ValueError(f"frames must be an int in [0, 100000], got {frames!r}")
    state = new_state(model)
    began = time.perf_counter()
    if frames == 0:
        return _settled(state, 0, "frames", 0.0, 0.0)
    solver = Solver(model, mode=mode)
    empty = Control([])
    limit = test.max_frames if frames is None else frames
    still, speed, reason, done = 0, math.inf, "frames", 0
    clock = began
    while done < limit:
        solver.step(state, empty, dt, substeps)
        done += 1
        if done == 1:  # the first frame may compile the kernels: the time limit counts from after it
            clock = time.perf_counter()
        speed = max_speed(state.v)
        if frames is not None:
            continue
        still = still + 1 if speed < test.speed else 0
        if still >= test.hold_frames:
            reason = "rest"
            break
        if time.perf_counter() - clock > test.max_seconds:
            reason = "time"
            break
    return _settled(state, done, reason, speed, time.perf_counter() - began)


def max_speed(v: np.ndarray) -> float:
    """The fastest vertex's speed (m/s); 0 for no vertices, inf if any velocity is not finite."""
    if v.shape[0] == 0:
        return 0.0
    fastest = float(np.sqrt(np.einsum("ij,ij->i", v, v).max()))
    return fastest if math.isfinite(fastest) else math.inf


def _settled(state: State, frames: int, reason: str, speed: float, seconds: float) -> Settled:
    x, v = state.x.copy(), state.v.copy()
    x.flags.writeable = False
    v.flags.writeable = False
    return Settled(x, v, frames, reason, float(speed), float(seconds))


def cache_key(model: Model, dt: float, substeps: int, mode: str) -> str:
    """A digest of everything a settled start depends on but the rest test: every array and constant of the
    model (rest shape, topology and sweep order, materials, masses, damping, pins and anchors, environment,
    gravity) and the step's settings."""
    digest = hashlib.blake2b(digest_size=20)
    for f in fields(model):
        value = getattr(model, f.name)
        digest.update(f.name.encode() + b"\0")
        if isinstance(value, np.ndarray):
            digest.update(str((value.dtype.str, value.shape)).encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        elif f.name == "environment":
            for a in (value.planes, value.spheres, value.boxes):
                digest.update(np.ascontiguousarray(a, np.float64).tobytes())
            digest.update(repr(float(value.friction)).encode())
        else:  # materials (frozen dataclasses with a stable repr), ints and floats
            digest.update(repr(value).encode())
    digest.update(repr((float(dt), int(substeps), str(mode))).encode())
    return digest.hexdigest()


# (cache_key, RestTest or an exact frame count) -> Settled; a start the test reached after n frames is also kept
# under n, since stepping exactly n frames gives the same bits (what a replay of it asks for)
_cache: OrderedDict[tuple[str, RestTest | int], Settled] = OrderedDict()
_lock = threading.Lock()


def settled_state(
    model: Model,
    dt: float = 1.0 / 60.0,
    substeps: int = 20,
    mode: str = "xpbd",
    test: RestTest = DEFAULT_TEST,
    frames: int | None = None,
) -> tuple[State, Settled]:
    """``settle`` remembered: a fresh State at the settled start of ``model`` (own arrays) and what settling
    did (``seconds`` is 0 when it came from memory). Keeps the newest ``CACHE_SIZE`` starts; thread-safe (two
    threads asking for the same new start may both compute it: the same bits)."""
    if frames == 0:  # the rest shape: nothing to step or remember
        return new_state(model), settle(model, dt, substeps, mode, test, 0)
    base = cache_key(model, dt, substeps, mode)
    key = (base, test if frames is None else frames)
    with _lock:
        known = _cache.get(key)
        if known is not None:
            _cache.move_to_end(key)
    if known is not None:
        remembered = Settled(known.x, known.v, known.frames, known.reason, known.max_speed, 0.0)
        return _fresh(known, model), remembered
    done = settle(model, dt, substeps, mode, test, frames)
    with _lock:
        _cache[key] = done
        if frames is None:
            _cache[(base, done.frames)] = Settled(done.x, done.v, done.frames, "frames", done.max_speed, done.seconds)
        while len(_cache) > 2 * CACHE_SIZE:
            _cache.popitem(last=False)
    return _fresh(done, model), done


def _fresh(settled: Settled, model: Model) -> State:
    state = new_state(model)
    state.x[:] = settled.x
    state.v[:] = settled.v
    return state


def forget() -> None:
    """Drop every remembered start (tests, or a process that wants the memory back)."""
    with _lock:
        _cache.clear()
