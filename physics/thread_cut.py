"""Cutting the suture thread with scissors, and the tied pieces a cut leaves in the tissue.

An interrupted closure: each stitch is placed, tied, and its thread cut above the knot; the tied stitch stays (its
short piece keeps the lips together) and the surgeon goes on with the rest of the thread, still on the needle.

* ``crossed_segments``: the thread segments a closing pair of blades crosses this frame: a segment whose ends lie
  on either side of the blade plane (the instrument's local x-z plane), where it crosses that plane within the
  blade length, ahead of the hinge and inside the fans the blades swept (``physics.cutting.blades_cross``, the
  tissue cut's own test).
* ``split_thread``: a thread's particle arrays and its slides (stitch points) split at a segment: particles
  0..k on one side (the needle's, particle 0 is at the needle), k + 1.. on the other; the cut segment's length
  is lost (the cut happens at the thread's resolution), each slide goes with its side, its parameters shifted.
* ``plan_cut``: whether a cut at a parameter may happen and what it leaves, as a mentor would have it:

  - refused ``in_tissue``: the cut segment holds a stitch point, or the same stitch's points lie on both sides
    (between a stitch's two bites the thread runs through the tissue or across the wound: cutting it there
    undoes the stitch and frees nothing);
  - refused ``no_stitch``: the needle's thread cut with no stitch placed on it at all (the needle cut off its
    thread, nothing to show for it; trimming the free tail of a thread that holds stitches is allowed);
  - refused ``below_knot``: a tight knot on the thread, and the cut lies between it and the stitch points it
    ties (going from the cut towards the freed stitch points the thread reaches a stitch point before the knot:
    the cut would leave the stitch untied);
  - refused ``too_short``: the needle would keep less than one segment of thread; and (``physics.suturing``)
    ``too_many_threads`` when a piece to keep would pass ``MAX_THREADS``;
  - otherwise done: the piece holding stitch points (the side away from the needle on the live thread) is kept
    and frozen (``FrozenThread``), a piece holding none (a loose tail) is dropped; with a tight knot, the tail
    length is the way along the thread from the cut to the knot (where it enters the ball of the knot's extent
    about its centre).

  A loose tail cut off is dropped, not simulated: nothing holds it (no stitch point, no needle), a surgeon
  takes it out of the field, and a full rod simulation per frame for it would be most of a thread's cost.
* ``FrozenThread``: a tied piece cut off. It is no longer simulated: each frame its particles follow the tissue
  (each particle moved by the displacement of the stitch points, interpolated along the piece by parameter), and
  it keeps holding its stitch points through the same suture holds as the live thread (``HOLD_ID_BASE``
  pseudo-instruments, physics/suturing.py). A tied suture is an inextensible loop: its stitch points may come
  closer (slack) but not farther apart than they were when it was cut; per frame, consecutive stitch points
  along the piece (and the last and the first, closed through the knot) that are farther apart than that are
  pulled back toward each other (a hold each, at most ``MAX_HOLD_STEP`` a frame), and a slack pair is not held:
  its holds are left out of the solver's Control altogether (physics/suturing.py), so a tied stitch lying slack
  costs the solver nothing; one that pulls taut is held from the next frame on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from physics.cutting import blades_cross
from physics.knots import KnotResult
from physics.state import State
from physics.suture_thread import MAX_HOLD_STEP, Slide

MAX_THREADS = 16
"""Most threads a suturing world has at once (the live one and the tied pieces cut off it); a cut that would
keep one more is refused (``too_many_threads``). Bounds the holds, the snapshot's thread set and the client's."""
ROPE_SLACK = 0.02  # a frozen stitch's points may part this much (relative) beyond their distance at the cut
REFUSALS = ("in_tissue", "no_stitch", "below_knot", "too_short", "too_many_threads")


# --- which segments the blades cross ------------------------------------------------------------------------


def crossed_segments(
    x: np.ndarray,
    position: np.ndarray,
    rotation: np.ndarray,
    jaw_before: float,
    jaw_after: float,
    blade_length: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(segment indices ascending int64, where along each (0..1)) of a polyline x (n, 3) that blades closing from
    jaw_before to jaw_after (rad) at this pose cross (see the module doc). Nothing unless the blades close."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, 3)
    if not jaw_after < jaw_before or x.shape[0] < 2:
        return np.zeros(0, np.int64), np.zeros(0)
    local = (x - np.asarray(position, dtype=np.float64)) @ np.asarray(rotation, dtype=np.float64)
    a, b = local[:-1], local[1:]
    ya, yb = a[:, 1], b[:, 1]
    straddles = (np.minimum(ya, yb) <= 0.0) & (np.maximum(ya, yb) >= 0.0)
    dy = ya - yb
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(np.abs(dy) > 1e-15, ya / dy, 0.5)
    t = np.clip(t, 0.0, 1.0)
    p = a + t[:, None] * (b - a)
    angle = np.arctan2(p[:, 0], p[:, 2])
    within = np.hypot(p[:, 0], p[:, 2]) <= blade_length
    ahead = p[:, 2] > 0.0
    hit = straddles & within & ahead & blades_cross(angle, angle, jaw_before, jaw_after)
    segments = np.flatnonzero(hit)
    return segments.astype(np.int64), t[segments]


# --- splitting a thread ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """One side of a split thread: its particles (positions, velocities) and the slides on it (re-parametrised)."""

    x: np.ndarray
    v: np.ndarray
    slides: list[Slide]


def split_thread(x: np.ndarray, v: np.ndarray, slides: list[Slide], segment: int) -> tuple[Piece, Piece]:
    """The thread split at segment k (between particles k and k + 1): (particles 0..k, particles k + 1..), each
    with its slides (a slide at u goes to the first piece when u < k, to the second, at u - k - 1, when
    u >= k + 1; ValueError for a slide on the cut segment itself). A piece may be a single particle (a caller
    keeps only pieces of two or more: ``plan_cut`` refuses ``too_short`` otherwise)."""
    n = x.shape[0]
    k = int(segment)
    if not 0 <= k <= n - 2:
        raise ValueError(f"split_thread: no segment {k} in a thread of {n} particles")
    first, second = [], []
    for s in slides:
        if s.u < k:
            first.append(s)
        elif s.u >= k + 1:
            shift = float(k + 1)
            held = None if s.held is None else min(max(s.held - shift, 0.0), n - k - 2 - 1e-9)
            second.append(replace(s, u=s.u - shift, held=held))
        else:
            raise ValueError(f"split_thread: a stitch point lies on segment {k}")
    return (
        Piece(x[: k + 1].copy(), v[: k + 1].copy(), first),
        Piece(x[k + 1 :].copy(), v[k + 1 :].copy(), second),
    )


# --- whether a cut may happen ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CutPlan:
    """A cut at segment k (fraction t along it). ``kept``: which piece of ``split_thread`` is kept as a frozen
    thread ("first" / "second"; None: the piece past the cut on the live thread is a loose tail, dropped; the
    live thread always keeps the first, the needle's, piece). ``freed``: the stitches freed from the needle;
    ``tail``: the way (m) from the cut to the knot (None: no tight knot); ``tied``: a tight knot on the thread."""

    segment: int
    t: float
    kept: str | None
    freed: tuple[int, ...]
    tail: float | None
    tied: bool


@dataclass(frozen=True)
class CutRefusal:
    """A cut not made (nothing changed): reason (one of REFUSALS) and where."""

    reason: str
    segment: int


def plan_cut(
    x: np.ndarray, slides: list[Slide], segment: int, t: float, knot: KnotResult | None, live: bool
) -> CutPlan | CutRefusal:
    """Decide a cut at segment k of a thread (``live``: the needle's, its particle 0 at the needle; else a frozen
    piece), see the module doc for the rules. ``knot``: the thread's knot now (None or not tight: untied)."""
    k = int(segment)
    c = k + float(t)
    before = [s for s in slides if s.u < k]
    after = [s for s in slides if s.u >= k + 1]
    if len(before) + len(after) != len(slides) or {s.stitch for s in before} & {s.stitch for s in after}:
        return CutRefusal("in_tissue", k)
    if live and not slides:
        return CutRefusal("no_stitch", k)
    if live and k < 1:
        return CutRefusal("too_short", k)  # the needle would keep a single particle of thread
    if before and after and not live:
        return CutRefusal("in_tissue", k)  # a frozen piece is one tied unit: cut between its stitches, it unties
    # The side holding the stitch points the cut concerns: on the live thread what lies past the cut (freed from
    # the needle), or, past the last stitch point (a trim of the free tail), the needle's side; on a frozen piece
    # the side that holds them (the other is a tail, dropped).
    holding = after if after else before
    towards = 1 if after else -1
    tight = knot is not None and knot.tight and knot.kind is not None
    tail = None
    if tight:
        nearest = min(s.u for s in holding) if towards > 0 else max(s.u for s in holding)
        tail = way_to_knot(x, c, nearest, knot)
        if tail is None:
            return CutRefusal("below_knot", k)
    if live:
        kept = "second" if after else None
        freed = tuple(sorted({s.stitch for s in after}))
    else:
        kept, freed = ("second" if after else "first"), ()
    return CutPlan(k, float(t), kept, freed, tail, tight)


def way_to_knot(x: np.ndarray, c: float, stop: float, knot: KnotResult) -> float | None:
    """The way (m) along polyline x from parameter c towards parameter ``stop`` (a stitch point) to where it
    enters the knot's ball (its extent's half, at least a segment, about its centre); None when it reaches
    ``stop`` first (the cut lies below the knot)."""
    x = np.asarray(x, dtype=np.float64)
    seg = float(np.median(np.linalg.norm(np.diff(x, axis=0), axis=1)))
    radius = max(0.5 * knot.extent, seg)
    centre = np.asarray(knot.centre, dtype=np.float64)
    step = 1 if stop > c else -1
    samples = _walk(c, stop, step)
    pts = _at(x, samples)
    inside = np.linalg.norm(pts - centre, axis=1) <= radius
    if not inside.any():
        return None
    j = int(np.argmax(inside))
    if j == 0:
        return 0.0
    # between sample j - 1 (outside) and j (inside): where the ball's surface is crossed (bisection)
    lo, hi = samples[j - 1], samples[j]
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if np.linalg.norm(_at(x, np.array([mid]))[0] - centre) <= radius:
            hi = mid
        else:
            lo = mid
    way = _at(x, np.array([*samples[:j], hi]))
    return float(np.linalg.norm(np.diff(way, axis=0), axis=1).sum())


def _walk(c: float, stop: float, step: int) -> np.ndarray:
    """Parameters from c to stop (inclusive) through every particle between them."""
    if step > 0:
        inner = np.arange(math.floor(c) + 1, math.ceil(stop))
    else:
        inner = np.arange(math.ceil(c) - 1, math.floor(stop), -1)
    return np.array([c, *inner.tolist(), stop], dtype=np.float64)


def _at(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The polyline's points at parameters u."""
    i = np.clip(np.floor(u).astype(np.int64), 0, x.shape[0] - 2)
    f = (u - i)[:, None]
    return (1.0 - f) * x[i] + f * x[i + 1]


# --- a tied piece, frozen -------------------------------------------------------------------------------------


class FrozenThread:
    """A tied piece cut off the thread: its particles follow the tissue, its stitch points are held as a loop that
    does not stretch (see the module doc). ``id`` is its thread id (the live thread's is 0)."""

    def __init__(self, thread_id: int, x: np.ndarray, slides: list[Slide], state: State, radius: float) -> None:
        self.id = int(thread_id)
        self.radius = float(radius)
        self.slides = sorted(slides, key=lambda s: -s.u)
        self._x0 = np.asarray(x, dtype=np.float64).copy()
        self.x = self._x0.copy()
        self._u = np.array([s.u for s in self.slides], dtype=np.float64)
        self._p0 = self.points(state.x)
        self.rope = _rope(self._p0)  # (pairs (a, b), most each may part, m)
        self._order = np.argsort(self._u)
        self._s = np.arange(self._x0.shape[0], dtype=np.float64)
        self._d: np.ndarray | None = None  # the stitch points' displacement last followed
        for s in self.slides:
            s.target, s.held = None, None

    def points(self, tissue: np.ndarray) -> np.ndarray:
        """The stitch points' positions now (k, 3)."""
        return np.array([s.point.position(tissue) for s in self.slides]).reshape(-1, 3)

    def polyline(self) -> np.ndarray:
        return self.x

    def frame(self, tissue: np.ndarray) -> list[np.ndarray | None]:
        """The frame's update after the tissue's step: ``follow`` the tissue, then the holds' ``targets``, from the
        stitch points' positions found once."""
        p = self.points(tissue) if self.slides else None
        self.follow(tissue, p)
        return self.targets(tissue, p)

    def targets(self, tissue: np.ndarray, points: np.ndarray | None = None) -> list[np.ndarray | None]:
        """Per stitch point: where its hold pulls it this frame (None: slack, not held). points: the stitch
        points' positions in tissue (``points``), if the caller has them."""
        out: list[np.ndarray | None] = [None] * len(self.slides)
        pairs, most = self.rope
        if not len(most):
            return out
        p = self.points(tissue) if points is None else points
        a, b = pairs[:, 0], pairs[:, 1]
        d = p[b] - p[a]
        size = np.sqrt((d * d).sum(axis=1))
        over = size > most
        if not over.any():
            return out  # slack everywhere: nothing held (the common case, checked in one pass)
        half = np.where(over, 0.5 * (size - most) / np.maximum(size, 1e-30), 0.0)[:, None] * d
        move = np.zeros_like(p)
        np.add.at(move, a, half)
        np.add.at(move, b, -half)
        for i in np.unique(np.concatenate([a[over], b[over]])):
            step = move[i]
            length = float(np.linalg.norm(step))
            out[i] = p[i] + (step if length <= MAX_HOLD_STEP else step * (MAX_HOLD_STEP / length))
        return out

    def follow(self, tissue: np.ndarray, points: np.ndarray | None = None) -> None:
        """The frame's cheap update: every particle moved by the stitch points' displacement since the cut,
        interpolated along the piece by parameter (beyond the first and last, theirs). points: as in ``targets``."""
        if not self.slides:
            return
        d = (self.points(tissue) if points is None else points) - self._p0
        if self._d is not None and np.array_equal(d, self._d):
            return  # the tissue under it did not move
        self._d = d
        u, d = self._u[self._order], d[self._order]
        plan = getattr(self, "_plan", None)  # (a piece from a checkpoint written before it had one)
        if plan is None:
            plan = self._plan = _interp_plan(self._s, u)
        if plan is False or not np.isfinite(d).all():
            for axis in range(3):
                self.x[:, axis] = self._x0[:, axis] + np.interp(self._s, u, d[:, axis])
            return
        # np.interp's own arithmetic on the three axes at once: slope x (s - u[j]) + d[j] between the points,
        # d[j] on one of them, the end's value beyond either end (the same bits, checked against np.interp)
        j, off, at, left, right = plan
        slope = (d[1:] - d[:-1]) / (u[1:] - u[:-1])[:, None]
        moved = slope[j] * off[:, None] + d[j]
        moved[at] = d[j[at]]
        moved[left] = d[0]
        moved[right] = d[-1]
        self.x[:] = self._x0 + moved


def _interp_plan(s: np.ndarray, u: np.ndarray) -> tuple | bool:
    """What np.interp(s, u, .) looks up, made once for a piece (s and its points' ascending u do not change): per
    particle the interval j (u[j] <= s < u[j + 1]), s - u[j], and which particles lie on a point, before the first
    or at or past the last; False where np.interp's own path is kept (fewer than two points, or two at one u)."""
    if u.size < 2 or not np.all(np.diff(u) > 0.0):
        return False
    j = np.clip(np.searchsorted(u, s, side="right") - 1, 0, u.size - 2)
    return j, s - u[j], s == u[j], s < u[0], s >= u[-1]


def _rope(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The loop of a tied stitch: consecutive points and the last with the first, each at most as far apart as
    now (times 1 + ROPE_SLACK): (pairs (m, 2) int64, most (m,) m)."""
    k = p.shape[0]
    if k < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    pairs = [(i, i + 1) for i in range(k - 1)]
    if k > 2:
        pairs.append((k - 1, 0))
    ab = np.array(pairs, dtype=np.int64)
    return ab, np.linalg.norm(p[ab[:, 1]] - p[ab[:, 0]], axis=1) * (1.0 + ROPE_SLACK)
