"""Suture thread: an XPBD rod (stretch and bending) swaged to the needle's tail, threaded through the stitches.

`Thread.step(model, state, needle, dt)` runs after the tissue step and the needle's (`Needle.step`), in one numba
kernel on flat arrays: per substep, the particles predict under gravity, then passes of each constraint:

* the needle end (particle 0) follows the needle's tail, grabbed particles follow their instrument's jaws;
* stretch between neighbours, bending as a distance between particles i and i + 2 (a straight rest shape);
  stretch sweeps forward and back, so a pulled end reaches the far particles in one pass;
* where the thread passes through a stitch's entry or exit (a `Slide`: the thread parameter nearest the tissue
  point, tracked as the thread slides through freely), the coupling to the tissue runs both ways across the
  solver: the tissue point is pulled to where the thread passes (`Slide.target`, through the solver's grasp
  constraints on a `suture_hold` pseudo-instrument, see physics/suturing.py), and the force that pull takes (the
  tissue's elastic resistance) acts back on the thread there, whose particles then move with the tissue point's
  mass. So a taut thread drags the wound's edges together and a slack one lets the tissue relax;
* collisions: the environment's planes, the tissue surface (one way; the triangles near each particle are found
  once per frame on a grid, in ascending id order, and a triangle is not tested again until the particle has
  moved far enough to reach it), the instruments' capsules, and itself (segment pairs found once per frame on a
  grid of the segments' midpoints).

Cost (200 segments, 10 substeps of 2 passes): the stretch and bending sweeps are chains, each projection reading
the particle the one before moved, so they run at the latency of one square root and one division a constraint
and are most of the frame; everything else is linear in the particles and the candidates near them. Of what runs
around the kernel, the surface candidates cost most (`thread_candidates`: every surface triangle's centre and
size once a frame, as the reach includes the largest triangle's, then a grid of those near the thread, about
0.06 ms at 20k tets with warm caches and twice that in the frame, which starts with the caches the tissue step
swept); most of the rest is the shell's numpy calls on a few 3-vectors (a few microseconds each with warm
caches, several times that right after the tissue step).

Twist is not modelled: a round monofilament's twist does not change where it lies or whether a knot holds.
Jaws closing near the thread grab the nearest particle (`thread_grasp`); opening lets go (`thread_release`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numba as nb
import numpy as np

from physics.cutting import blades_collide
from physics.grasping import CLOSED_BELOW, OPEN_ABOVE
from physics.instruments import quat_to_matrix
from physics.model import Model
from physics.needle import Needle, TissuePoint, grip_region
from physics.smallvec import norm3
from physics.solver import Event
from physics.state import State

SUBSTEPS = 10
MAX_HOLD_STEP = 0.001  # m a held tissue point is moved toward the thread per frame (6 cm/s at 60 Hz)
MAX_RELAX = 0.01  # m: the farthest a tissue point's rest estimate lies from where it is
THREAD_FRICTION_N = 0.01  # N: the grip of a puncture on the thread through it, with no pull across it
THREAD_MU = 0.2  # friction coefficient of the thread on tissue (monofilament nylon on wet tissue: about 0.1-0.3)
HOLE_REACH = 1.5  # segments: particles this near a puncture pass through its hole (no surface collision)
SKIP_MARGIN = 1e-9  # m: a tissue triangle's test is skipped only while the particle is this much short of it


@dataclass(frozen=True)
class ThreadSpec:
    """segments x segment_length is the thread's length (m); radius (m); mass per metre (kg/m); compliances
    (m/N) of stretch and bending; damping (1/s)."""

    segments: int = 200
    segment_length: float = 0.003
    radius: float = 0.00015
    mass_per_metre: float = 2.0e-4
    stretch_compliance: float = 1.0e-9
    bend_compliance: float = 1.0e-4
    damping: float = 2.0
    iterations: int = 2  # constraint passes per substep

    def __post_init__(self) -> None:
        checks = {
            "segments": isinstance(self.segments, int) and 1 <= self.segments <= 2000,  # 1: what a cut may leave
            "segment_length": 0.0005 <= self.segment_length <= 0.02,
            "radius": 0.00002 <= self.radius <= 0.002,
            "mass_per_metre": 0.0 < self.mass_per_metre <= 0.1,
            "stretch_compliance": 0.0 <= self.stretch_compliance <= 1.0,
            "bend_compliance": 0.0 <= self.bend_compliance <= 1e3,
            "damping": 0.0 <= self.damping <= 100.0,
            "iterations": isinstance(self.iterations, int) and 1 <= self.iterations <= 20,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not ok or not math.isfinite(value):
                raise ValueError(f"thread: invalid {name} = {value!r}")

    @property
    def length(self) -> float:
        return self.segments * self.segment_length


@dataclass
class Slide:
    """The thread passing through a tissue point at parameter u (particle index + fraction), sliding through it;
    friction drags the tissue along with the thread's material at `held` up to its limit (THREAD_FRICTION_N +
    THREAD_MU x the pull across the thread), then the thread slips through it."""

    point: TissuePoint
    u: float
    stitch: int  # which of the needle's stitches
    side: str  # "entry" or "exit"
    force: np.ndarray  # N the thread pulls on the tissue here (the solver's grasp force), last frame
    target: np.ndarray | None = None  # where the thread holds it now: the tissue point is pulled here
    held: float | None = None  # the thread's material the tissue holds (static friction; None: at u)
    gap: float = 0.0  # the least way (segments) along the thread to the point before it (it only grows)
    hold: int = -1  # the suture hold (pseudo-instrument id) that holds the point; -1: none yet (physics/suturing.py)


class Thread:
    """One thread: particle positions and velocities, its grabs, and where it passes through the tissue."""

    def __init__(self, spec: ThreadSpec, start: np.ndarray, direction=(-1.0, 0.0, 0.0)) -> None:
        self.spec = spec
        n = spec.segments + 1
        d = np.asarray(direction, dtype=np.float64)
        d = d / np.linalg.norm(d)
        self.x = np.asarray(start, dtype=np.float64).reshape(3) + np.arange(n)[:, None] * spec.segment_length * d
        self.v = np.zeros((n, 3))
        m = spec.mass_per_metre * spec.segment_length
        self.inv_mass = np.full(n, 1.0 / m)
        self.grabs: dict[int, tuple[int, np.ndarray]] = {}  # instrument -> (particle, point in its frame)
        self.slides: list[Slide] = []
        self._jaws: dict[int, float] = {}
        self._threaded: set[tuple[int, str]] = set()
        self._tail: np.ndarray | None = None
        self.counts = {"tissue_contacts": 0, "instrument_contacts": 0, "self_contacts": 0}

    def polyline(self) -> np.ndarray:
        return self.x

    def length(self) -> float:
        return float(np.linalg.norm(np.diff(self.x, axis=0), axis=1).sum())

    def tension(self) -> float:
        """Largest stretch of a segment as a strain (0 = slack or at rest length)."""
        seg = np.linalg.norm(np.diff(self.x, axis=0), axis=1)
        return float(max(0.0, seg.max() / self.spec.segment_length - 1.0))

    def step(self, model: Model, state: State, needle: Needle | None, dt: float, substeps: int = SUBSTEPS) -> list:
        """Advance the thread one frame after the tissue and the needle; returns its events."""
        events: list[Event] = []
        jaws_before = dict(self._jaws)
        self._grabbing(state, events)
        if needle is not None:
            self._thread_through(needle, state.x, events)
        spec = self.spec
        n = self.x.shape[0]
        tail = needle.tail() if needle is not None else self.x[0]
        start = self._tail if self._tail is not None else tail
        self._tail = tail.copy()
        g_idx, g_from, g_to = self._grab_arrays(state)
        self.slides.sort(key=lambda sl: -sl.u)  # along the thread from its free end (they keep this order)
        # Each tissue point as a spring (its local stiffness) anchored where it would rest without the thread's
        # pull: its position less the pull (last frame's) over the stiffness, at most MAX_RELAX away.
        here = np.array([sl.point.position(state.x) for sl in self.slides]).reshape(-1, 3)  # the tissue points now
        s_point = here.copy()
        s_alpha = np.zeros(len(self.slides))
        stiff = [tissue_stiffness(model, sl.point) for sl in self.slides]
        for row, sl in enumerate(self.slides):
            stiffness = stiff[row]
            relax = -sl.force / stiffness
            size = norm3(relax)
            if size > MAX_RELAX:
                relax *= MAX_RELAX / size
            s_point[row] += relax
            s_alpha[row] = 1.0 / stiffness
        s_u = np.array([s.u for s in self.slides], dtype=np.float64)
        s_held = np.array([s.u if s.held is None else s.held for s in self.slides], dtype=np.float64)
        s_slip, s_gap = self._slip_and_gap(stiff, here, s_u)
        anchors = needle._anchors(state.x) if needle is not None and needle.punctured else []
        holes = np.array([*here, *anchors]).reshape(-1, 3) if anchors else here  # read only
        inside = _inside(self.slides, n, self.x, holes, HOLE_REACH * spec.segment_length)
        reach = spec.radius + 2.0 * spec.segment_length
        c_start, c_tri = thread_candidates(self.x, state.x, model.surface, reach)
        pair_i, pair_j = self_pairs(self.x, 2.0 * spec.radius + spec.segment_length)
        cap_a, cap_b, cap_r = _capsules(state, jaws_before)
        s_target = here.copy()
        counts = np.zeros(3, dtype=np.int64)
        simulate_thread(
            self.x,
            self.v,
            self.inv_mass,
            substeps,
            spec.iterations,
            float(dt),
            model.gravity,
            spec.damping,
            spec.segment_length,
            spec.stretch_compliance,
            spec.bend_compliance,
            spec.radius,
            start,
            tail,
            needle is not None,
            g_idx,
            g_from,
            g_to,
            s_point,
            s_alpha,
            s_u,
            s_held,
            s_slip,
            s_gap,
            state.x,
            inside,
            model.surface,
            c_start,
            c_tri,
            cap_a,
            cap_b,
            cap_r,
            pair_i,
            pair_j,
            model.environment.planes,
            s_target,
            counts,
        )
        kept = []
        for s, u, held, target, now in zip(self.slides, s_u, s_held, s_target, here, strict=True):
            if u < 0.0:
                events.append(Event("thread_slipped", None, {"stitch": s.stitch, "side": s.side}))
                continue
            step = target - now
            size = norm3(step)
            s.u, s.held, s.target = (
                float(u),
                float(held),
                now + (step if size <= MAX_HOLD_STEP else step * (MAX_HOLD_STEP / size)),
            )
            kept.append(s)
        self.slides = kept
        for key, value in zip(self.counts, counts.tolist(), strict=True):
            self.counts[key] = value
        return events

    def _slip_and_gap(self, stiff: list[float], here: np.ndarray, s_u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per stitch point, in segments: how far the thread's place at the point may lag the frictionless one
        (static friction: the friction force limit, THREAD_FRICTION_N + THREAD_MU x last frame's normal pull,
        over the tissue's stiffness there), and how close it may come to the previous point's place: 0.9 x the way
        between the two points (through one bite, the most it has been: a ratchet, the thread through the tissue
        between two punctures does not get shorter as a pull draws them together; without it the points slid onto
        one place on the thread and it cut the stitch's corners), or as close as they are now if closer. stiff: each
        point's tissue stiffness (``tissue_stiffness``), in slide order."""
        seg = self.spec.segment_length
        slip = np.zeros(s_u.size)
        gap = np.zeros(s_u.size)
        last = self.x.shape[0] - 2
        for row, sl in enumerate(self.slides):
            i = min(int(s_u[row]), last)
            t = self.x[i + 1] - self.x[i]
            t /= max(norm3(t), 1e-12)
            along = float(sl.force @ t)
            normal = norm3(sl.force - along * t)
            limit = THREAD_FRICTION_N + THREAD_MU * normal
            slip[row] = limit / stiff[row] / seg
            if row > 0:
                way = min(0.9 * norm3(here[row] - here[row - 1]) / seg, s_u[row - 1] - s_u[row])
                # through one bite the way only grows (the tissue between its two punctures does not shrink)
                sl.gap = max(sl.gap, way) if self.slides[row - 1].stitch == sl.stitch else way
                gap[row] = max(0.0, min(sl.gap, s_u[row - 1] - s_u[row]))
        return slip, gap

    def _grabbing(self, state: State, events: list[Event]) -> None:
        for k in [k for k in self.grabs if k not in state.instruments]:
            del self.grabs[k]
            events.append(Event("thread_release", k, {"reason": "withdrawn"}))
        for k, inst in state.instruments.items():
            before = self._jaws.get(k, inst.jaw)
            if k in self.grabs and inst.jaw > OPEN_ABOVE:
                del self.grabs[k]
                events.append(Event("thread_release", k, {"reason": "opened"}))
            elif k not in self.grabs and before > CLOSED_BELOW >= inst.jaw:
                region = grip_region(inst.spec)
                if region is None:
                    continue
                R = quat_to_matrix(inst.orientation)
                local = (self.x - inst.position) @ R
                radial = np.hypot(local[:, 0], local[:, 1])
                ok = (local[:, 2] >= -region[1]) & (local[:, 2] <= region[0] + region[1]) & (radial <= region[1])
                if ok.any():
                    i = int(np.flatnonzero(ok)[np.argmin(radial[ok])])
                    self.grabs[k] = (i, np.array([0.0, 0.0, min(max(local[i, 2], 0.0), region[0])]))
                    events.append(Event("thread_grasp", k, {"particle": i}))
        self._jaws = {k: inst.jaw for k, inst in state.instruments.items()}

    def keep(self, x: np.ndarray, v: np.ndarray, slides: list[Slide]) -> None:
        """Keep only a piece of this thread (a cut, physics/thread_cut.py): its first particles (x, v), the slides on
        it; grabs of particles no longer on it let go; the spec says the piece's segments (its length)."""
        n = x.shape[0]
        if not 2 <= n <= self.x.shape[0]:
            raise ValueError(f"thread: a kept piece must have 2 to {self.x.shape[0]} particles, got {n}")
        self.spec = replace(self.spec, segments=n - 1)
        self.x, self.v = np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(v, dtype=np.float64)
        self.inv_mass = self.inv_mass[:n].copy()
        self.slides = list(slides)
        self.grabs = {k: g for k, g in self.grabs.items() if g[0] < n}

    def grab(self, instrument: int, particle: int, state: State) -> None:
        """Hold particle in an instrument's jaws as they are now (for scripts and tests)."""
        inst = state.instruments[instrument]
        local = quat_to_matrix(inst.orientation).T @ (self.x[particle] - inst.position)
        self.grabs[instrument] = (int(particle), local)

    def pass_through(self, point: TissuePoint, u: float, stitch: int, side: str) -> None:
        """Thread the tissue point at parameter u (for scripts and tests; the needle's stitches do it themselves)."""
        if not 0.0 <= u < self.x.shape[0] - 1:
            raise ValueError(f"thread: u must be in [0, {self.x.shape[0] - 1}), got {u!r}")
        self._threaded.add((stitch, side))
        self.slides.append(Slide(point, float(u), stitch, side, np.zeros(3)))

    def _grab_arrays(self, state: State) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = np.array([g[0] for g in self.grabs.values()], dtype=np.int64)
        to = np.zeros((idx.size, 3))
        for row, (k, (_, local)) in enumerate(self.grabs.items()):
            inst = state.instruments[k]
            to[row] = inst.position + quat_to_matrix(inst.orientation) @ local
        return idx, self.x[idx].copy() if idx.size else np.zeros((0, 3)), to

    def _needle_side_u(self, point: np.ndarray) -> float:
        """Where a newly threaded point lies on the thread: the nearest place between the needle and the points
        threaded before (the thread the tail drew through it; the needle may be well past it by now)."""
        below = min((sl.u for sl in self.slides), default=self.x.shape[0] - 1.0)
        return nearest_parameter(self.x, point, 0.0, max(0.0, below - 0.5))

    def _thread_through(self, needle: Needle, x: np.ndarray, events: list[Event]) -> None:
        """A placed stitch's entry takes the thread at once (the tail just passed it); its exit once the tail has
        passed it too (the needle is out)."""
        for i, stitch in enumerate(needle.passes):
            if (i, "entry") not in self._threaded and (stitch.tail_through or _tail_past(needle, stitch.entry, x)):
                self._threaded.add((i, "entry"))
                self.slides.append(Slide(stitch.entry, self._needle_side_u(stitch.entry.position(x)), i, "entry",
                                         np.zeros(3)))  # fmt: skip
                events.append(Event("threaded", needle.holder, {"stitch": i, "side": "entry"}))
            if (
                (i, "entry") in self._threaded
                and (i, "exit") not in self._threaded
                and _tail_past(needle, stitch.exit, x)
            ):
                self._threaded.add((i, "exit"))
                self.slides.append(Slide(stitch.exit, self._needle_side_u(stitch.exit.position(x)), i, "exit",
                                         np.zeros(3)))  # fmt: skip
                events.append(Event("threaded", needle.holder, {"stitch": i, "side": "exit"}))


def nearest_parameter(x: np.ndarray, point: np.ndarray, lo: float, hi: float) -> float:
    """The thread parameter (particle index + fraction) in [lo, hi] of the thread's point nearest a point."""
    first, last = max(0, int(lo)), min(x.shape[0] - 2, max(int(lo), math.ceil(hi) - 1))
    a, e = x[first : last + 1], np.diff(x[first : last + 2], axis=0)
    ee = np.maximum((e * e).sum(axis=1), 1e-30)
    t = np.clip(((point - a) * e).sum(axis=1) / ee, 0.0, 1.0)
    d = np.linalg.norm(a + t[:, None] * e - point, axis=1)
    k = int(np.argmin(d))
    return float(min(max(first + k + t[k], lo), hi))


def _tail_past(needle: Needle, point: TissuePoint, x: np.ndarray) -> bool:
    """The needle's tail has gone past a tissue point on its arc, or the needle is no longer through it (out of
    the tissue, it was lifted off its arc: the thread runs through the point from then on; waiting for the tail
    to pass it left the last exit unthreaded while the needle pulled the thread, and the far lip with it)."""
    p = point.position(x)
    local = needle.rotation.T @ (p - needle.position)
    if math.atan2(local[1], local[0]) < 0.0 or math.hypot(local[0], local[1]) > 1.5 * needle.spec.radius:
        return True
    wire = needle.polyline()
    return not needle.punctured and float(np.min(((wire - p) ** 2).sum(axis=1))) > (4.0 * needle.spec.wire_radius) ** 2


def tissue_stiffness(model: Model, point: TissuePoint) -> float:
    """The tissue's stiffness (N/m) against a point pulled out of it: E x the size of its vertex's tets."""
    return tissue_at(model, point)[0]


def tissue_at(model: Model, point: TissuePoint) -> tuple[float, int]:
    """(stiffness N/m, material region) of the tissue a point is in, from its main vertex's live tets.

    A scan of every tet, so it is cached per vertex until the model's topology changes (model.epoch)."""
    vertex = int(point.vertices[int(np.argmax(point.weights))])
    cache = _TISSUE_CACHE.get(id(model))
    if cache is None or cache[0] != model.epoch or cache[1] is not model.tets:
        if len(_TISSUE_CACHE) >= 8:  # bounded: models come and go (each entry keeps its tets array alive)
            _TISSUE_CACHE.clear()
        cache = (model.epoch, model.tets, {})
        _TISSUE_CACHE[id(model)] = cache
    hit = cache[2].get(vertex)
    if hit is not None:
        return hit
    tets = np.flatnonzero((model.tets == vertex).any(axis=1) & model.alive)
    if tets.size == 0:
        hit = (1.0, 0)
    else:
        young = float(np.mean([model.materials[r].young for r in model.regions[tets]]))
        size = float(np.cbrt(np.mean(model.rest_volume[tets]) * 6.0))
        hit = (2.0 * young * size, int(model.regions[tets[0]]))
    if len(cache[2]) < 4096:
        cache[2][vertex] = hit
    return hit


_TISSUE_CACHE: dict[int, tuple[int, np.ndarray, dict[int, tuple[float, int]]]] = {}


@nb.njit(nogil=True, cache=True)
def _near_holes(x, holes, reach):
    """Per particle: within reach of any of the holes (k, 3)? One pass instead of a numpy call per hole."""
    n = x.shape[0]
    r2 = reach * reach
    out = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        for h in range(holes.shape[0]):
            dx = x[i, 0] - holes[h, 0]
            dy = x[i, 1] - holes[h, 1]
            dz = x[i, 2] - holes[h, 2]
            if dx * dx + dy * dy + dz * dz <= r2:
                out[i] = True
                break
    return out


def _inside(slides: list[Slide], n: int, x: np.ndarray, holes: np.ndarray, reach: float) -> np.ndarray:
    """Particles between a stitch's exit and entry run inside the tissue, and particles within reach of a
    puncture (a stitch point, the needle's entry and exit in the pass under way) go through its hole: they skip
    the surface collision. (Without the holes the surface pushed the thread following the needle's tail back out
    of the entry, the segment at the tail stretched to 2-3 times its length, and the stitch points threaded on
    the one segment at the tail.)"""
    inside = _near_holes(x, holes, reach)
    by_stitch: dict[int, list[float]] = {}
    for s in slides:
        by_stitch.setdefault(s.stitch, []).append(s.u)
    for us in by_stitch.values():
        if len(us) == 2:
            lo, hi = sorted(us)
            inside[math.ceil(lo) : math.floor(hi) + 1] = True
        else:
            inside[: math.floor(us[0]) + 1] = True  # the tail end is still in the needle's track
    return inside


def _capsules(state: State, jaws_before: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World end points and radii of every instrument's capsules at the frame's end (jaws closed). Scissor blades
    only while closed and not closing (``physics.cutting.blades_collide``, the tissue's rule): open blades are
    placed across the thread without pushing it aside, and closing ones cut it (physics/thread_cut.py)."""
    a, b, r = [], [], []
    for k, inst in state.instruments.items():
        caps = inst.spec.capsules
        if caps.shape[0] == 0:  # the suture holds' pseudo-instruments have no shape
            continue
        if inst.spec.cuts and not blades_collide((jaws_before or {}).get(k, inst.jaw), inst.jaw):
            caps = caps[caps[:, 7] == 0]  # the shaft only
        R = quat_to_matrix(inst.orientation)
        a.append(inst.position + caps[:, 0:3] @ R.T)
        b.append(inst.position + caps[:, 3:6] @ R.T)
        r.append(caps[:, 6])
    if not a:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0)
    if len(a) == 1:  # one instrument with a shape (the usual frame): its own fresh arrays, no joining copies
        return a[0], b[0], np.concatenate(r)
    return np.concatenate(a), np.concatenate(b), np.concatenate(r)


GRID_CELLS_PER_ITEM = 8  # a broad-phase grid has at most this many cells per binned item (+ GRID_CELLS_MIN)
GRID_CELLS_MIN = 4096


@nb.njit(nogil=True, cache=True)
def _grid(points, items, h):
    """A dense grid over the box of points[items] with cubic cells of at least h (grown until there are at most
    GRID_CELLS_PER_ITEM per item + GRID_CELLS_MIN, so a long thread or a large tissue stays small): returns
    (lo, cell size, dims, cell start offsets, items by cell, ascending within a cell). A counting sort: O(items)."""
    k = items.size
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for q in range(k):
        for d in range(3):
            lo[d] = min(lo[d], points[items[q], d])
            hi[d] = max(hi[d], points[items[q], d])
    cap = GRID_CELLS_PER_ITEM * k + GRID_CELLS_MIN
    c = h
    for d in range(3):
        if not 0.0 <= hi[d] - lo[d] < 1e6:  # no items, or a non-finite one: everything in one cell
            lo[d], hi[d] = 0.0, 0.0
    while (hi[0] - lo[0] + c) * (hi[1] - lo[1] + c) * (hi[2] - lo[2] + c) > cap * c * c * c:
        c *= 1.5
    dims = np.ones(3, dtype=np.int64)
    total = 1
    for d in range(3):
        dims[d] = int((hi[d] - lo[d]) / c) + 1
        total *= dims[d]
    cell = np.empty(k, dtype=np.int64)
    start = np.zeros(total + 1, dtype=np.int64)
    for q in range(k):
        key = 0
        for d in range(3):
            f = (points[items[q], d] - lo[d]) / c
            key = key * dims[d] + (min(dims[d] - 1, int(f)) if f >= 0.0 else 0)
        cell[q] = key
        start[key + 1] += 1
    for b in range(total):
        start[b + 1] += start[b]
    fill = start[:-1].copy()
    binned = np.empty(k, dtype=np.int64)
    for q in range(k):
        binned[fill[cell[q]]] = items[q]
        fill[cell[q]] += 1
    return lo, c, dims, start, binned


@nb.njit(nogil=True, cache=True)
def _cell_range(v, h, lo, c, cells):
    """The grid's cells along one axis that a ball of radius h about coordinate v overlaps, the axis starting at
    lo with ``cells`` cells of size c (first, last; empty if first > last). Scalars only: an array view or a
    small-array argument per call would cost reference-count updates in the callers' per-particle loops."""
    fa = (v - h - lo) / c
    fb = (v + h - lo) / c
    if not (fb >= 0.0 and fa < cells):  # outside (or not finite)
        return 1, 0
    return (int(fa) if fa > 0.0 else 0), min(cells - 1, int(fb))


@nb.njit(nogil=True, cache=True)
def _sort_tail(buf, a, b):
    """Insertion sort of buf[a:b] (a particle's few candidates), so they come in ascending id order."""
    for q in range(a + 1, b):
        v = buf[q]
        r = q - 1
        while r >= a and buf[r] > v:
            buf[r + 1] = buf[r]
            r -= 1
        buf[r + 1] = v


@nb.njit(nogil=True, cache=True)
def thread_candidates(xt, x, tris, reach):
    """Per thread particle, the surface triangles whose centre lies within reach + the largest triangle's
    radius of it (CSR: start offsets, triangle ids ascending), via a grid of the triangles near the thread."""
    n = xt.shape[0]
    lo = np.empty(3)
    hi = np.empty(3)
    for d in range(3):
        lo[d] = xt[:, d].min()
        hi[d] = xt[:, d].max()
    m = tris.shape[0]
    cent = np.empty((m, 3))
    tri_r2 = 0.0
    for t in range(m):
        a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
        ax, ay, az = x[a, 0], x[a, 1], x[a, 2]
        bx, by, bz = x[b, 0], x[b, 1], x[b, 2]
        cx, cy, cz = x[c, 0], x[c, 1], x[c, 2]
        mx, my, mz = (ax + bx + cx) / 3.0, (ay + by + cy) / 3.0, (az + bz + cz) / 3.0
        cent[t, 0], cent[t, 1], cent[t, 2] = mx, my, mz
        ra = (ax - mx) ** 2 + (ay - my) ** 2 + (az - mz) ** 2
        rb = (bx - mx) ** 2 + (by - my) ** 2 + (bz - mz) ** 2
        rc = (cx - mx) ** 2 + (cy - my) ** 2 + (cz - mz) ** 2
        tri_r2 = max(tri_r2, ra, rb, rc)
    h = reach + math.sqrt(tri_r2)
    near = np.empty(m, dtype=np.int64)
    k = 0
    for t in range(m):
        ok = True
        for d in range(3):
            if cent[t, d] < lo[d] - h or cent[t, d] > hi[d] + h:
                ok = False
        if ok:
            near[k] = t
            k += 1
    g_lo, c, dims, g_start, binned = _grid(cent, near[:k], h)
    # The grid's box and sizes as scalars, and each particle's coordinates too: no array views or small-array
    # arguments in the loop below (each costs reference-count updates).
    lo0, lo1, lo2 = g_lo[0], g_lo[1], g_lo[2]
    n0, n1, n2 = dims[0], dims[1], dims[2]
    hh = h * h
    start = np.zeros(n + 1, dtype=np.int64)
    found = np.empty(max(1, 16 * n), dtype=np.int64)
    total = 0
    for i in range(n):
        px, py, pz = xt[i, 0], xt[i, 1], xt[i, 2]
        ax, bx = _cell_range(px, h, lo0, c, n0)
        ay, by = _cell_range(py, h, lo1, c, n1)
        az, bz = _cell_range(pz, h, lo2, c, n2)
        first = total
        for ix in range(ax, bx + 1):
            for iy in range(ay, by + 1):
                row = (ix * n1 + iy) * n2
                for q in range(g_start[row + az], g_start[row + bz + 1]):
                    t = binned[q]
                    e = (cent[t, 0] - px) ** 2
                    e += (cent[t, 1] - py) ** 2
                    e += (cent[t, 2] - pz) ** 2
                    if e <= hh:
                        if total >= found.size:
                            grown = np.empty(found.size * 2, dtype=np.int64)
                            grown[: found.size] = found
                            found = grown
                        found[total] = t
                        total += 1
        _sort_tail(found, first, total)
        start[i + 1] = total
    return start, found[:total].copy()


@nb.njit(nogil=True, cache=True)
def self_pairs(xt, reach):
    """Segment pairs (i, j), j > i + 2, whose midpoints lie within reach + segment i's length of each other, in
    (i, j) order; the midpoints binned in a grid, so a thread costs O(n) plus its near pairs."""
    n = xt.shape[0] - 1
    if n < 4:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    mid = np.empty((n, 3))
    r = np.empty(n)
    r_max = 0.0
    for i in range(n):
        seg = 0.0
        for d in range(3):
            mid[i, d] = 0.5 * (xt[i, d] + xt[i + 1, d])
            seg += (xt[i + 1, d] - xt[i, d]) ** 2
        r[i] = reach + math.sqrt(seg)
        r_max = max(r_max, r[i])
    g_lo, c, dims, g_start, binned = _grid(mid, np.arange(n), r_max)
    out_i = np.empty(4 * n, dtype=np.int64)
    out_j = np.empty(4 * n, dtype=np.int64)
    total = 0
    for i in range(n):
        ax, bx = _cell_range(mid[i, 0], r[i], g_lo[0], c, dims[0])
        ay, by = _cell_range(mid[i, 1], r[i], g_lo[1], c, dims[1])
        az, bz = _cell_range(mid[i, 2], r[i], g_lo[2], c, dims[2])
        first = total
        for ix in range(ax, bx + 1):
            for iy in range(ay, by + 1):
                row = (ix * dims[1] + iy) * dims[2]
                for q in range(g_start[row + az], g_start[row + bz + 1]):
                    j = binned[q]
                    if j < i + 3:
                        continue
                    e = 0.0
                    for d in range(3):
                        e += (mid[i, d] - mid[j, d]) ** 2
                    if e <= r[i] * r[i]:
                        if total >= out_j.size:
                            grown = np.empty(out_j.size * 2, dtype=np.int64)
                            grown[: out_j.size] = out_j
                            out_j = grown
                        out_j[total] = j
                        total += 1
        _sort_tail(out_j, first, total)
        if total > out_i.size:
            grown = np.empty(out_j.size, dtype=np.int64)
            grown[: out_i.size] = out_i
            out_i = grown
        out_i[first:total] = i
    return out_i[:total].copy(), out_j[:total].copy()


# The stretch and bending sweeps are chains (each constraint moves the particle the next one reads), so their
# speed is the latency of one projection: the shared particle stays in registers from one constraint to the next
# and each projection takes one square root and one division, s = (rest - d) / ((w_i + w_j + alpha) d).


@nb.njit(nogil=True, cache=True)
def _stretch_forward(x, w, rest, alpha):
    """Distance constraints (i, i + 1) for i = 0, 1, ..., n - 2 in order."""
    n = x.shape[0]
    px, py, pz, wp = x[0, 0], x[0, 1], x[0, 2], w[0]
    for i in range(n - 1):
        qx, qy, qz, wq = x[i + 1, 0], x[i + 1, 1], x[i + 1, 2], w[i + 1]
        dx, dy, dz = qx - px, qy - py, qz - pz
        d = math.sqrt(dx * dx + dy * dy + dz * dz)
        ws = wp + wq
        if d >= 1e-12 and ws > 0.0:
            s = (rest - d) / ((ws + alpha) * d)
            px, py, pz = px - wp * s * dx, py - wp * s * dy, pz - wp * s * dz
            qx, qy, qz = qx + wq * s * dx, qy + wq * s * dy, qz + wq * s * dz
        x[i, 0], x[i, 1], x[i, 2] = px, py, pz
        px, py, pz, wp = qx, qy, qz, wq
    x[n - 1, 0], x[n - 1, 1], x[n - 1, 2] = px, py, pz


@nb.njit(nogil=True, cache=True)
def _stretch_backward(x, w, rest, alpha):
    """Distance constraints (i, i + 1) for i = n - 2, ..., 0 in order."""
    n = x.shape[0]
    qx, qy, qz, wq = x[n - 1, 0], x[n - 1, 1], x[n - 1, 2], w[n - 1]
    for i in range(n - 2, -1, -1):
        px, py, pz, wp = x[i, 0], x[i, 1], x[i, 2], w[i]
        dx, dy, dz = qx - px, qy - py, qz - pz
        d = math.sqrt(dx * dx + dy * dy + dz * dz)
        ws = wp + wq
        if d >= 1e-12 and ws > 0.0:
            s = (rest - d) / ((ws + alpha) * d)
            px, py, pz = px - wp * s * dx, py - wp * s * dy, pz - wp * s * dz
            qx, qy, qz = qx + wq * s * dx, qy + wq * s * dy, qz + wq * s * dz
        x[i + 1, 0], x[i + 1, 1], x[i + 1, 2] = qx, qy, qz
        qx, qy, qz, wq = px, py, pz, wp
    x[0, 0], x[0, 1], x[0, 2] = qx, qy, qz


@nb.njit(nogil=True, cache=True)
def _bend_backward(x, w, rest, alpha):
    """Distance constraints (i, i + 2) for i = n - 3, ..., 0 in order (two interleaved chains: x[i + 2] and
    x[i + 1] are carried)."""
    n = x.shape[0]
    ax, ay, az, wa = x[n - 1, 0], x[n - 1, 1], x[n - 1, 2], w[n - 1]  # x[i + 2]
    bx, by, bz, wb = x[n - 2, 0], x[n - 2, 1], x[n - 2, 2], w[n - 2]  # x[i + 1]
    for i in range(n - 3, -1, -1):
        px, py, pz, wp = x[i, 0], x[i, 1], x[i, 2], w[i]
        dx, dy, dz = ax - px, ay - py, az - pz
        d = math.sqrt(dx * dx + dy * dy + dz * dz)
        ws = wp + wa
        if d >= 1e-12 and ws > 0.0:
            s = (rest - d) / ((ws + alpha) * d)
            px, py, pz = px - wp * s * dx, py - wp * s * dy, pz - wp * s * dz
            ax, ay, az = ax + wa * s * dx, ay + wa * s * dy, az + wa * s * dz
        x[i + 2, 0], x[i + 2, 1], x[i + 2, 2] = ax, ay, az
        ax, ay, az, wa = bx, by, bz, wb
        bx, by, bz, wb = px, py, pz, wp
    x[1, 0], x[1, 1], x[1, 2] = ax, ay, az
    x[0, 0], x[0, 1], x[0, 2] = bx, by, bz


@nb.njit(nogil=True, cache=True)
def simulate_thread(
    x,
    v,
    w,
    substeps,
    iterations,
    dt,
    gravity,
    damping,
    seg,
    stretch_alpha,
    bend_alpha,
    radius,
    pin_from,
    pin_to,
    pinned,
    g_idx,
    g_from,
    g_to,
    s_point,
    s_alpha,
    s_u,
    s_held,
    s_slip,
    s_gap,
    tx,
    inside,
    tris,
    c_start,
    c_tri,
    cap_a,
    cap_b,
    cap_r,
    pair_i,
    pair_j,
    planes,
    out_slide_point,
    out_counts,
):
    """One frame of the thread in `substeps` XPBD substeps of one pass each (see the module docstring)."""
    n = x.shape[0]
    h = dt / substeps
    inv_h2 = 1.0 / (h * h)
    x_prev = np.empty_like(x)
    wk = w.copy()  # kinematic particles (the needle end, grabbed ones) get no inverse mass
    if pinned:
        wk[0] = 0.0
    for g in range(g_idx.size):
        wk[g_idx[g]] = 0.0
    damp = 1.0 / (1.0 + damping * h)
    a_s = stretch_alpha * inv_h2
    a_b = bend_alpha * inv_h2
    # The tissue does not move during the thread's frame: each candidate triangle's plane and barycentric
    # terms once (a corner, unit normal, edges, the Gram terms and 1 / det), not per particle and pass.
    m_c = c_tri.size
    c_geo = np.zeros((m_c, 14))
    for e in range(m_c):
        t = c_tri[e]
        a, b, cc = tris[t, 0], tris[t, 1], tris[t, 2]
        e1x, e1y, e1z = tx[b, 0] - tx[a, 0], tx[b, 1] - tx[a, 1], tx[b, 2] - tx[a, 2]
        e2x, e2y, e2z = tx[cc, 0] - tx[a, 0], tx[cc, 1] - tx[a, 1], tx[cc, 2] - tx[a, 2]
        nx, ny, nz = e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x
        ln = math.sqrt(nx * nx + ny * ny + nz * nz)
        d00 = e1x * e1x + e1y * e1y + e1z * e1z
        d01 = e1x * e2x + e1y * e2y + e1z * e2z
        d11 = e2x * e2x + e2y * e2y + e2z * e2z
        den = d00 * d11 - d01 * d01
        if ln <= 0.0 or den <= 0.0:
            c_geo[e, 13] = 0.0  # degenerate: never touched
            continue
        c_geo[e, 0], c_geo[e, 1], c_geo[e, 2] = tx[a, 0], tx[a, 1], tx[a, 2]
        c_geo[e, 3], c_geo[e, 4], c_geo[e, 5] = nx / ln, ny / ln, nz / ln
        c_geo[e, 6], c_geo[e, 7], c_geo[e, 8] = e1x, e1y, e1z
        c_geo[e, 9], c_geo[e, 10], c_geo[e, 11] = e2x, e2y, e2z
        c_geo[e, 12] = d01
        c_geo[e, 13] = 1.0 / den
    c_d00 = np.empty(m_c)
    c_d11 = np.empty(m_c)
    for e in range(m_c):
        g = c_geo[e]
        c_d00[e] = g[6] * g[6] + g[7] * g[7] + g[8] * g[8]
        c_d11[e] = g[9] * g[9] + g[10] * g[10] + g[11] * g[11]
    # How far each particle must move from where it starts the frame before a candidate triangle can touch it
    # (out of the plane into the contact band, or in the plane into the triangle's circle): until it has, the
    # test is skipped, as it could only fail. Squared; below zero: always tested.
    c_far2 = np.full(m_c, -1.0)
    for i in range(n):
        for e in range(c_start[i], c_start[i + 1]):
            g = c_geo[e]
            if g[13] == 0.0:
                continue
            nx, ny, nz = g[3], g[4], g[5]
            rx, ry, rz = x[i, 0] - g[0], x[i, 1] - g[1], x[i, 2] - g[2]
            dist = rx * nx + ry * ny + rz * nz
            band = max(dist - radius, -2.0 * seg - dist)
            # the triangle's centre and circle radius, the particle's projection's distance from the centre
            mx = (g[6] + g[9]) / 3.0
            my = (g[7] + g[10]) / 3.0
            mz = (g[8] + g[11]) / 3.0
            r2 = max(mx * mx + my * my + mz * mz, (g[6] - mx) ** 2 + (g[7] - my) ** 2 + (g[8] - mz) ** 2,
                     (g[9] - mx) ** 2 + (g[10] - my) ** 2 + (g[11] - mz) ** 2)  # fmt: skip
            px, py, pz = rx - dist * nx - mx, ry - dist * ny - my, rz - dist * nz - mz
            lateral = math.sqrt(px * px + py * py + pz * pz) - math.sqrt(r2)
            far = max(band, lateral) - SKIP_MARGIN
            if far > 0.0:
                c_far2[e] = far * far
    x_start = x.copy()
    # Each capsule's axis and a bounding sphere (centre, radius) that rejects far particles at once.
    n_cap = cap_r.size
    cap_mid = np.empty((n_cap, 3))
    cap_reach2 = np.empty(n_cap)
    for j in range(n_cap):
        half = 0.0
        for d in range(3):
            cap_mid[j, d] = 0.5 * (cap_a[j, d] + cap_b[j, d])
            half += (0.5 * (cap_b[j, d] - cap_a[j, d])) ** 2
        cap_reach2[j] = (math.sqrt(half) + cap_r[j] + radius) ** 2
    for s in range(substeps):
        f = (s + 1.0) / substeps
        for i in range(n):
            for d in range(3):
                x_prev[i, d] = x[i, d]
                if wk[i] > 0.0:
                    v[i, d] += gravity[d] * h
                    x[i, d] += v[i, d] * h
        if pinned:
            for d in range(3):
                x[0, d] = pin_from[d] + f * (pin_to[d] - pin_from[d])
        # Where the thread passes each tissue point now: it slides through it as far as friction lets it.
        _slide_points(x, s_point, s_u, s_held, s_slip, s_gap)
        for g in range(g_idx.size):
            for d in range(3):
                x[g_idx[g], d] = g_from[g, d] + f * (g_to[g, d] - g_from[g, d])
        for _ in range(iterations):
            # The tissue's hold first: the thread point at u pulled toward where the tissue point would rest (a
            # spring); the stretch sweeps after it have the last word, so a hand's pull on the thread wins.
            for c in range(s_u.size):
                if s_u[c] < 0.0:
                    continue
                i = int(s_u[c])
                t = s_u[c] - i
                wt = (1.0 - t) ** 2 * wk[i] + t * t * wk[i + 1]
                if wt <= 0.0:
                    continue
                k = 1.0 / (wt + s_alpha[c] * inv_h2)
                for d in range(3):
                    lam = -((1.0 - t) * x[i, d] + t * x[i + 1, d] - s_point[c, d]) * k
                    x[i, d] += wk[i] * (1.0 - t) * lam
                    x[i + 1, d] += wk[i + 1] * t * lam
            # Stretch and bending, swept forward then backward (an end's pull crosses the thread in one pass).
            _stretch_forward(x, wk, seg, a_s)
            _bend_backward(x, wk, 2.0 * seg, a_b)
            _stretch_backward(x, wk, seg, a_s)
            # The tissue surface (one way), near triangles only, for particles outside the tissue.
            for i in range(n):
                if wk[i] <= 0.0 or inside[i] or c_start[i + 1] == c_start[i]:
                    continue
                moved2 = (
                    (x[i, 0] - x_start[i, 0]) ** 2 + (x[i, 1] - x_start[i, 1]) ** 2 + (x[i, 2] - x_start[i, 2]) ** 2
                )
                for e in range(c_start[i], c_start[i + 1]):
                    if moved2 < c_far2[e]:
                        continue
                    g = c_geo[e]
                    if g[13] == 0.0:
                        continue
                    nx, ny, nz = g[3], g[4], g[5]
                    rx, ry, rz = x[i, 0] - g[0], x[i, 1] - g[1], x[i, 2] - g[2]
                    dist = rx * nx + ry * ny + rz * nz
                    if dist >= radius or dist < -2.0 * seg:
                        continue
                    vx, vy, vz = rx - dist * nx, ry - dist * ny, rz - dist * nz
                    d20 = vx * g[6] + vy * g[7] + vz * g[8]
                    d21 = vx * g[9] + vy * g[10] + vz * g[11]
                    bv = (c_d11[e] * d20 - g[12] * d21) * g[13]
                    bw = (c_d00[e] * d21 - g[12] * d20) * g[13]
                    if bv < 0.0 or bw < 0.0 or bv + bw > 1.0:
                        continue
                    push = radius - dist
                    x[i, 0] += push * nx
                    x[i, 1] += push * ny
                    x[i, 2] += push * nz
                    out_counts[0] += 1
            # Instruments' capsules and the environment's planes (the table).
            for i in range(n):
                if wk[i] <= 0.0:
                    continue
                for k in range(planes.shape[0]):
                    dist = x[i, 0] * planes[k, 0] + x[i, 1] * planes[k, 1] + x[i, 2] * planes[k, 2] - planes[k, 3]
                    if dist < radius:
                        for d in range(3):
                            x[i, d] += (radius - dist) * planes[k, d]
                for j in range(n_cap):
                    mx, my, mz = x[i, 0] - cap_mid[j, 0], x[i, 1] - cap_mid[j, 1], x[i, 2] - cap_mid[j, 2]
                    if mx * mx + my * my + mz * mz > cap_reach2[j]:
                        continue
                    ex, ey, ez = cap_b[j, 0] - cap_a[j, 0], cap_b[j, 1] - cap_a[j, 1], cap_b[j, 2] - cap_a[j, 2]
                    rx, ry, rz = x[i, 0] - cap_a[j, 0], x[i, 1] - cap_a[j, 1], x[i, 2] - cap_a[j, 2]
                    ee = ex * ex + ey * ey + ez * ez
                    t = 0.0 if ee <= 0.0 else min(1.0, max(0.0, (rx * ex + ry * ey + rz * ez) / ee))
                    rx, ry, rz = rx - t * ex, ry - t * ey, rz - t * ez
                    dist = math.sqrt(rx * rx + ry * ry + rz * rz)
                    depth = cap_r[j] + radius - dist
                    if depth > 0.0 and dist > 1e-12:
                        x[i, 0] += rx / dist * depth
                        x[i, 1] += ry / dist * depth
                        x[i, 2] += rz / dist * depth
                        out_counts[1] += 1
            # Itself: closest points of candidate segment pairs kept two radii apart.
            for p in range(pair_i.size):
                i, j = pair_i[p], pair_j[p]
                d1x, d1y, d1z = x[i + 1, 0] - x[i, 0], x[i + 1, 1] - x[i, 1], x[i + 1, 2] - x[i, 2]
                d2x, d2y, d2z = x[j + 1, 0] - x[j, 0], x[j + 1, 1] - x[j, 1], x[j + 1, 2] - x[j, 2]
                rx, ry, rz = x[i, 0] - x[j, 0], x[i, 1] - x[j, 1], x[i, 2] - x[j, 2]
                a = d1x * d1x + d1y * d1y + d1z * d1z
                e = d2x * d2x + d2y * d2y + d2z * d2z
                ff = d2x * rx + d2y * ry + d2z * rz
                cc = d1x * rx + d1y * ry + d1z * rz
                b = d1x * d2x + d1y * d2y + d1z * d2z
                den = a * e - b * b
                sa = 0.0 if den <= 1e-30 else min(1.0, max(0.0, (b * ff - cc * e) / den))
                tb = 0.0 if e <= 0.0 else (b * sa + ff) / e
                if tb < 0.0:
                    tb = 0.0
                    sa = 0.0 if a <= 0.0 else min(1.0, max(0.0, -cc / a))
                elif tb > 1.0:
                    tb = 1.0
                    sa = 0.0 if a <= 0.0 else min(1.0, max(0.0, (b - cc) / a))
                qx = x[i, 0] + sa * d1x - x[j, 0] - tb * d2x
                qy = x[i, 1] + sa * d1y - x[j, 1] - tb * d2y
                qz = x[i, 2] + sa * d1z - x[j, 2] - tb * d2z
                dist = math.sqrt(qx * qx + qy * qy + qz * qz)
                depth = 2.0 * radius - dist
                if depth <= 0.0 or dist < 1e-12:
                    continue
                w1 = (1.0 - sa) ** 2 * wk[i] + sa * sa * wk[i + 1]
                w2 = (1.0 - tb) ** 2 * wk[j] + tb * tb * wk[j + 1]
                if w1 + w2 <= 0.0:
                    continue
                k = depth / (w1 + w2) / dist
                for idx, bb, sign in ((i, 1.0 - sa, 1.0), (i + 1, sa, 1.0), (j, 1.0 - tb, -1.0), (j + 1, tb, -1.0)):
                    m = sign * wk[idx] * bb * k
                    x[idx, 0] += m * qx
                    x[idx, 1] += m * qy
                    x[idx, 2] += m * qz
                out_counts[2] += 1
        for i in range(n):
            for d in range(3):
                v[i, d] = (x[i, d] - x_prev[i, d]) / h * damp
            if not (abs(v[i, 0]) + abs(v[i, 1]) + abs(v[i, 2]) < 1e6):  # NaN/Inf: back to the last good place
                for d in range(3):
                    x[i, d] = x_prev[i, d]
                    v[i, d] = 0.0
    _slide_points(x, s_point, s_u, s_held, s_slip, s_gap)  # where the frame's last sweeps left the thread
    for c in range(s_u.size):
        if s_u[c] >= 0.0:
            i = min(int(s_held[c]), n - 2)
            t = s_held[c] - i
            for d in range(3):
                out_slide_point[c, d] = (1.0 - t) * x[i, d] + t * x[i + 1, d]


@nb.njit(nogil=True, cache=True)
def _slide_points(x, points, s_u, s_held, s_slip, s_gap):
    """Each stitch point's parameter on the thread, in order from the free end: the nearest parameter to the
    point (the thread slides through it), kept s_gap[c] segments short of the previous point's (the thread
    between two punctures is at least as long as the way between them, so two points never take the same place
    on it; a parameter past the free end: pulled out, -1); and the thread's material the tissue there holds on
    to, s_held[c]: it stays put while it is within s_slip[c] segments of where the thread passes (static
    friction), else it slips along, that far behind."""
    n = x.shape[0]
    prev = -1.0
    for c in range(s_u.size):
        if s_u[c] < 0.0:
            continue
        u = _nearest_u(x, points, c, s_u[c])
        if u >= n - 1 - 1e-9:
            s_u[c] = -1.0  # pulled out through the free end
            continue
        if prev >= 0.0:
            u = min(u, prev - s_gap[c])
        s_u[c] = max(0.0, u)
        s_held[c] = min(max(s_held[c], s_u[c] - s_slip[c]), s_u[c] + s_slip[c])
        prev = s_u[c]


@nb.njit(nogil=True, cache=True)
def _nearest_u(x, points, c, u):
    """The thread parameter nearest points[c], searched within two segments of u."""
    n = x.shape[0]
    px, py, pz = points[c, 0], points[c, 1], points[c, 2]
    base = int(u)
    best_u, best_d = u, 1e30
    for i in range(max(0, base - 2), min(n - 1, base + 3)):
        ex, ey, ez = x[i + 1, 0] - x[i, 0], x[i + 1, 1] - x[i, 1], x[i + 1, 2] - x[i, 2]
        ee = ex * ex + ey * ey + ez * ez
        t = 0.0
        if ee > 0.0:
            t = min(1.0, max(0.0, ((px - x[i, 0]) * ex + (py - x[i, 1]) * ey + (pz - x[i, 2]) * ez) / ee))
        qx, qy, qz = x[i, 0] + t * ex - px, x[i, 1] + t * ey - py, x[i, 2] + t * ez - pz
        dd = qx * qx + qy * qy + qz * qz
        if dd < best_d:
            best_d, best_u = dd, i + t
    return best_u
