"""Knots in a suture thread, found topologically: which knot (square, granny, surgeon's), its throws, and if tight.

`classify_knot(points, tension)` reads the thread's polyline as a knot: its two ends are closed far away (each
end extended along the ray from the polyline's centroid through it, the rays joined outside everything), so
the closed curve's knot type is the thread's. Per projection (the best-fit plane's normal first, then a few
fixed generic directions, so that one degenerate view cannot fool it):

1. the crossings of the projected polyline, each with over/under and its sign (right-hand rule) - a signed
   Gauss code;
2. Reidemeister I and II moves on the cyclic code remove kinks (loose loops, twists) and one strand lying
   over another (wraps that tie nothing); a monogon or bigon of the code is always a face of the diagram on
   the sphere (its edges carry no other crossing), so these moves are exact;
3. the reduced code splits into its connected summands (runs of the code that cross only themselves) and each
   summand's Jones polynomial comes from the Kauffman bracket (a state sum, 2^crossings states: a summand of
   more than MAX_SUMMAND_CROSSINGS crossings, or a diagram of more than MAX_REDUCED_CROSSINGS, is left
   unresolved, which bounds the cost of a heap of loose coils);
4. the knot's Jones polynomial (the product of its summands') is factored into throws: a single throw (a half
   knot) is a trefoil, a double throw (a surgeon's first throw: the end passes twice, two extra crossings)
   the 5_2 twist knot, a triple throw 7_2. A throw's handedness is its chirality: +1 when its crossings are
   positive (the factor with positive powers of t, e.g. t + t^3 - t^4), -1 for its mirror.

The views must agree on the polynomial (it is an invariant of the same closed curve); the first two views are
tried and more only when they disagree or one is degenerate (a crossing with no clear over/under, a crossing on
a vertex), and the majority wins. One view whose crossings the moves all undo settles it: no knot.

Kinds: "square" = opposite single throws (two or more throws, both handednesses present, no multiple wrap);
"surgeons" = a double (or triple) throw and an opposite throw; "granny" = two or more throws all of one
handedness (a slipping knot). One throw alone is a half knot: kind None, throws 1 (it holds nothing). A knot
the throws do not explain (a figure-eight, a summand too large to resolve) is kind None with resolved False.
The order of the throws along the thread is not topological (a connected sum commutes), so `handedness` and
`wraps` list the throws multiple wraps first.

Tight: the reduced diagram's crossings (both strands' 3D points) lie within an extent (largest distance) of
at most max(TIGHT_DIAMETERS thread diameters, TIGHT_SEGMENTS x the median segment length): a polyline cannot be
tighter than its segments, and a simulated thread of 3 mm segments ties a knot a few segments across; and the
thread's tension, when given (strain, as physics.suture_thread.Thread.tension() reports it), is at least
TIGHT_TENSION (0.2 %: pulled, not lying loose).

Cost (a 200-segment thread; measured on a loaded 2-core machine, so upper bounds): the crossings in one numba
pass over the segment pairs (tens of microseconds per view), the reduction linear in the crossings, the bracket
small once reduced; about 0.16 ms for a thread with no knot (one view settles it: the best-fit plane's SVD is a
third of it, the centroid is taken once and a knot's tightness only read when there is a knot), about 0.7 ms with a
square knot (two views), a few milliseconds for a heap of loose coils (bounded by the limits above).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numba as nb
import numpy as np

from physics.smallvec import norm3

MAX_SUMMAND_CROSSINGS = 14  # 2^14 bracket states at most per summand (about a millisecond)
MAX_REDUCED_CROSSINGS = 40  # a diagram still this tangled after the moves is left unresolved
TIGHT_DIAMETERS = 10.0
TIGHT_SEGMENTS = 5.0
TIGHT_TENSION = 0.002
THREAD_RADIUS = 0.00015  # m, physics.suture_thread.ThreadSpec's default
DEPTH_EPS = 1e-9  # relative: a crossing whose strands are closer in depth is degenerate in that view
_FAR = 1.0e3  # the closing rays reach this many polyline radii in the projection
_TILT = 0.1  # rad: the second try's closing rays

# Generic view directions (none near an axis or another), tried after the best-fit plane's normal.
_VIEWS = np.array(
    [
        [0.2673, 0.5345, 0.8018],
        [0.8729, -0.2182, 0.4364],
        [-0.3015, 0.9045, -0.3015],
        [0.5774, 0.5774, -0.5774],
        [0.0990, -0.6931, 0.7141],
    ]
)

# Jones polynomials of the throws, {power of t: coefficient}, positive (right-handed) chirality.
_TREFOIL = {1: 1, 3: 1, 4: -1}  # 3_1: a single throw
_FIVE_TWO = {1: 1, 2: -1, 3: 2, 4: -1, 5: 1, 6: -1}  # 5_2: a double throw (twist knot, 3 half-twists)
_SEVEN_TWO = {1: 1, 2: -1, 3: 2, 4: -2, 5: 2, 6: -1, 7: 1, 8: -1}  # 7_2: a triple throw (5 half-twists)
_THROWS = ((3, _SEVEN_TWO), (2, _FIVE_TWO), (1, _TREFOIL))  # wraps, polynomial: most wraps first


@dataclass(frozen=True)
class KnotResult:
    """What the thread's knot is: kind ("square", "granny", "surgeons" or None), throws (half knots), tight,
    crossings (of the reduced diagram), each throw's handedness (+1 right, -1 left) and wraps (1 single,
    2 double), whether the throws explain the whole knot, its centre and extent (m), and the Jones polynomial
    ({power of t: coefficient}; {0: 1} for no knot)."""

    kind: str | None
    throws: int
    tight: bool
    crossings: int
    handedness: tuple[int, ...] = ()
    wraps: tuple[int, ...] = ()
    resolved: bool = True
    centre: np.ndarray = field(default_factory=lambda: np.zeros(3), compare=False)
    extent: float = 0.0
    jones: dict = field(default_factory=lambda: {0: 1}, compare=False)

    @property
    def knotted(self) -> bool:
        return self.throws > 0 or not self.resolved


def classify_knot(points: np.ndarray, tension: float | None = None, radius: float = THREAD_RADIUS) -> KnotResult:
    """Classify the knot tied in a thread polyline ((n, 3) m; see the module docstring for how)."""
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape[0] < 2:
        raise ValueError(f"classify_knot: points must be (n >= 2, 3), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("classify_knot: points must be finite")
    if tension is not None and not math.isfinite(tension):
        raise ValueError(f"classify_knot: tension must be finite, got {tension!r}")
    if not (math.isfinite(radius) and radius > 0.0):
        raise ValueError(f"classify_knot: radius must be > 0 m, got {radius!r}")
    seg = np.linalg.norm(np.diff(x, axis=0), axis=1)
    repeated = seg <= 1e-12  # repeated points carry no direction
    if repeated.any():
        x = x[np.concatenate([[True], ~repeated])]
        seg = None
    else:
        x = x.copy()  # a copy as the filter made one: the projections below read the same fresh array
    if x.shape[0] < 4:
        return _none(x)
    mean = x.mean(axis=0)  # the centroid, for the fit, the closure and the result (x does not change below)
    views = [_best_fit_normal(x, mean), *_VIEWS]
    found: list[_View] = []
    for tilt in (0.0, _TILT):  # a closure through the curve itself (symmetric data) is retried a little askew
        closed = _closing_rays(x, tilt, mean)
        for v in views:
            view = _analyse(closed, v)
            if view is not None and view.crossings == 0:
                found = [view]  # the moves undid every crossing: a proof that there is no knot, no vote needed
                break
            if view is not None:
                found.append(view)
            if len(found) >= 2 and Counter(_key(f.jones) for f in found).most_common(1)[0][1] >= 2:
                break
        if found:
            break
    if not found:
        return KnotResult(None, 0, False, 0, resolved=False, centre=mean)
    best_key = Counter(_key(f.jones) for f in found).most_common(1)[0][0]
    view = min((f for f in found if _key(f.jones) == best_key), key=lambda f: f.crossings)
    return _result(view, x, tension, radius, mean, seg)


# --- the closed curve and its projections -------------------------------------------------------------------


@dataclass
class _View:
    jones: dict[int, int] | None  # None: a summand too large to resolve
    crossings: int
    points: np.ndarray  # (k, 3) 3D points of the reduced diagram's crossings (both strands)


def _none(x: np.ndarray) -> KnotResult:
    return KnotResult(None, 0, False, 0, centre=x.mean(axis=0) if x.size else np.zeros(3))


def _closing_rays(x: np.ndarray, tilt: float, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The polyline and the unit directions in which its two ends go off to be closed far away (turned by
    `tilt` rad about a fixed generic axis); c: the polyline's centroid."""
    dirs = []
    near = 1e-9 * max(1e-9, float(np.ptp(x, axis=0).max()))
    for end, inner in ((x[0], x[1]), (x[-1], x[-2])):
        d = end - c
        if norm3(d) < near:
            d = end - inner  # an end at the centroid goes on along its own tangent
        d = d / norm3(d)
        if tilt:
            k = _VIEWS[3]
            d = d * math.cos(tilt) + _cross(k, d) * math.sin(tilt) + k * (k @ d) * (1.0 - math.cos(tilt))
        dirs.append(d)
    return x, dirs[0], dirs[1]


def _best_fit_normal(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    centred = x - mean
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    n = vt[-1]
    return n / np.linalg.norm(n)


def _frame(v: np.ndarray) -> np.ndarray:
    """Rows e1, e2, v: a right-handed frame whose third axis points to the viewer."""
    v = v / norm3(np.ascontiguousarray(v))
    a = np.array([1.0, 0.0, 0.0]) if abs(v[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = _cross(a, v)
    e1 /= norm3(e1)
    return np.stack([e1, _cross(v, e1), v])


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _analyse(closed, v: np.ndarray) -> _View | None:
    """One projection: the reduced signed Gauss code and its Jones polynomial; None if the view is degenerate."""
    x, d0, d1 = closed
    frame = _frame(v)
    p = x @ frame.T  # (n, 3): plane coordinates and depth toward the viewer
    centre = p[:, :2].mean(axis=0)
    radius = max(float(np.linalg.norm(p[:, :2] - centre, axis=1).max()), 1e-12)
    far = _FAR * radius
    ends = []
    for end, d in ((p[0], frame @ d0), (p[-1], frame @ d1)):
        planar = float(np.hypot(d[0], d[1]))
        if planar < 0.2:
            return None  # the closing ray runs nearly along the view: its crossings would be ill-conditioned
        # Both rays end on the circle of radius `far` about the centre: the closure outside it crosses nothing.
        w = end[:2] - centre
        u = d[:2] / planar
        b = float(w @ u)
        s = -b + math.sqrt(b * b - float(w @ w) + far * far)
        ends.append(end + d * (s / planar))
    q = np.ascontiguousarray(np.vstack([ends[0], p, ends[1]]))
    seg_i, seg_j, t_i, t_j, bad = _crossings(q, DEPTH_EPS * radius)
    if bad:
        return None
    n_cross = seg_i.size
    if n_cross == 0:
        return _View({0: 1}, 0, np.zeros((0, 3)))
    # Over/under and sign per crossing; the word is the passages in order along the curve.
    z_i = q[seg_i, 2] + t_i * (q[seg_i + 1, 2] - q[seg_i, 2])
    z_j = q[seg_j, 2] + t_j * (q[seg_j + 1, 2] - q[seg_j, 2])
    i_over = z_i > z_j
    d_i = q[seg_i + 1, :2] - q[seg_i, :2]
    d_j = q[seg_j + 1, :2] - q[seg_j, :2]
    d_over = np.where(i_over[:, None], d_i, d_j)
    d_under = np.where(i_over[:, None], d_j, d_i)
    sign = np.where(d_over[:, 0] * d_under[:, 1] - d_over[:, 1] * d_under[:, 0] > 0.0, 1, -1)
    param = np.concatenate([seg_i + t_i, seg_j + t_j])
    cross = np.concatenate([np.arange(n_cross), np.arange(n_cross)])
    over = np.concatenate([i_over, ~i_over])
    order = np.argsort(param, kind="stable")
    word = [(int(cross[k]), bool(over[k])) for k in order]
    word = reduce_code(word)
    kept = sorted({c for c, _ in word})
    jones: dict[int, int] | None = {0: 1}
    for block in summands(word) if len(kept) <= MAX_REDUCED_CROSSINGS else [word]:
        poly = jones_polynomial(block, {c: int(sign[c]) for c, _ in block})
        if poly is None:
            jones = None
            break
        jones = _mul(jones, poly)
    pts = []
    world = frame.T  # plane coordinates back to 3D
    for c in kept:
        for s, t in ((seg_i[c], t_i[c]), (seg_j[c], t_j[c])):
            a = q[s] + t * (q[s + 1] - q[s])
            pts.append(world @ a)
    return _View(jones, len(kept), np.array(pts).reshape(-1, 3))


@nb.njit(nogil=True, cache=True)
def _crossings(q, depth_eps):
    """Every crossing of the projected polyline q ((m, 3): plane x, y and depth): segment ids i < j, the
    parameters on each, and whether any crossing is degenerate (depths too close, or through a vertex)."""
    m = q.shape[0] - 1
    lo_x = np.empty(m)
    hi_x = np.empty(m)
    lo_y = np.empty(m)
    hi_y = np.empty(m)
    for s in range(m):
        lo_x[s] = min(q[s, 0], q[s + 1, 0])
        hi_x[s] = max(q[s, 0], q[s + 1, 0])
        lo_y[s] = min(q[s, 1], q[s + 1, 1])
        hi_y[s] = max(q[s, 1], q[s + 1, 1])
    cap = 64
    out_i = np.empty(cap, np.int64)
    out_j = np.empty(cap, np.int64)
    out_ti = np.empty(cap)
    out_tj = np.empty(cap)
    count = 0
    bad = False
    for i in range(m):
        ax, ay = q[i, 0], q[i, 1]
        rx, ry = q[i + 1, 0] - ax, q[i + 1, 1] - ay
        for j in range(i + 2, m):
            if hi_x[j] < lo_x[i] or lo_x[j] > hi_x[i] or hi_y[j] < lo_y[i] or lo_y[j] > hi_y[i]:
                continue
            bx, by = q[j, 0], q[j, 1]
            sx, sy = q[j + 1, 0] - bx, q[j + 1, 1] - by
            den = rx * sy - ry * sx
            if den == 0.0:
                continue
            wx, wy = bx - ax, by - ay
            t = (wx * sy - wy * sx) / den
            u = (wx * ry - wy * rx) / den
            if t < 0.0 or t >= 1.0 or u < 0.0 or u >= 1.0:
                continue
            if t < 1e-12 or u < 1e-12 or t > 1.0 - 1e-12 or u > 1.0 - 1e-12:
                bad = True
            zi = q[i, 2] + t * (q[i + 1, 2] - q[i, 2])
            zj = q[j, 2] + u * (q[j + 1, 2] - q[j, 2])
            if abs(zi - zj) <= depth_eps:
                bad = True
            if count == cap:
                cap *= 2
                gi = np.empty(cap, np.int64)
                gj = np.empty(cap, np.int64)
                gti = np.empty(cap)
                gtj = np.empty(cap)
                gi[:count] = out_i[:count]
                gj[:count] = out_j[:count]
                gti[:count] = out_ti[:count]
                gtj[:count] = out_tj[:count]
                out_i, out_j, out_ti, out_tj = gi, gj, gti, gtj
            out_i[count] = i
            out_j[count] = j
            out_ti[count] = t
            out_tj[count] = u
            count += 1
    return out_i[:count].copy(), out_j[:count].copy(), out_ti[:count].copy(), out_tj[:count].copy(), bad


# --- the Gauss code: reduction and summands -----------------------------------------------------------------


def reduce_code(word: list[tuple[int, bool]]) -> list[tuple[int, bool]]:
    """Apply Reidemeister I (a crossing met twice in a row) and II (two crossings met in a row twice, one strand
    over both) to a cyclic Gauss code of (crossing, over) passages until neither applies."""
    m = len(word)
    if m == 0:
        return []
    nxt = [(k + 1) % m for k in range(m)]
    prv = [(k - 1) % m for k in range(m)]
    alive = [True] * m
    partner = [0] * m
    first: dict[int, int] = {}
    for k, (c, _) in enumerate(word):
        if c in first:
            partner[k], partner[first[c]] = first[c], k
        else:
            first[c] = k
    if len(first) * 2 != m:
        raise ValueError("reduce_code: every crossing must be passed exactly twice")
    left = m

    def drop(k: int) -> None:
        nonlocal left
        alive[k] = False
        nxt[prv[k]] = nxt[k]
        prv[nxt[k]] = prv[k]
        left -= 1

    todo = list(range(m))
    while todo and left > 0:
        k = todo.pop()
        if not alive[k] or left == 0:
            continue
        n = nxt[k]
        if n == partner[k]:  # R I: a kink
            before = prv[k]
            drop(k)
            drop(n)
            if left:
                todo.append(before)
            continue
        if n == k or word[k][1] != word[n][1]:
            continue
        pk, pn = partner[k], partner[n]
        if nxt[pk] == pn or nxt[pn] == pk:  # R II: one strand over (or under) both
            group = {k, n, pk, pn}
            for g in group:
                if alive[g]:
                    drop(g)
            for g in group:
                r = prv[g]
                while not alive[r] and left:
                    r = prv[r]
                if left:
                    todo.append(r)
    if left == 0:
        return []
    start = next(k for k in range(m) if alive[k])
    out, k = [], start
    while True:
        out.append(word[k])
        k = nxt[k]
        if k == start:
            return out


def summands(word: list[tuple[int, bool]]) -> list[list[tuple[int, bool]]]:
    """Split a cyclic Gauss code into its connected summands: a run of it whose crossings it passes twice
    crosses only itself, so the curve there is a ball's worth of knot summed onto the rest."""
    if not word:
        return []
    m = len(word)
    best: tuple[int, int] | None = None
    for s in range(m):
        open_: set[int] = set()
        for length in range(1, m - 1):
            c = word[(s + length - 1) % m][0]
            open_.symmetric_difference_update((c,))
            if not open_ and (best is None or length < best[1]):
                best = (s, length)
                break
    if best is None:
        return [word]
    s, length = best
    inner = [word[(s + k) % m] for k in range(length)]
    outer = [word[(s + k) % m] for k in range(length, m)]
    return summands(inner) + summands(outer)


# --- the Jones polynomial -----------------------------------------------------------------------------------


def jones_polynomial(word: list[tuple[int, bool]], signs: dict[int, int]) -> dict[int, int] | None:
    """Jones polynomial {power of t: coefficient} of a knot's cyclic signed Gauss code (Kauffman bracket state
    sum); None when it has more than MAX_SUMMAND_CROSSINGS crossings."""
    m = len(word)
    k = m // 2
    if k == 0:
        return {0: 1}
    if k > MAX_SUMMAND_CROSSINGS:
        return None
    # Edge e runs from passage e to passage e + 1; per crossing (PD code) the incoming under edge first, then
    # counterclockwise: positive [u-1, o, u, o-1], negative [u-1, o-1, u, o].
    index = {c: i for i, c in enumerate(sorted({c for c, _ in word}))}
    under = np.zeros(k, np.int64)
    over = np.zeros(k, np.int64)
    for pos, (c, is_over) in enumerate(word):
        (over if is_over else under)[index[c]] = pos
    pd = np.zeros((k, 4), np.int64)
    writhe = 0
    for c, i in index.items():
        u, o = under[i], over[i]
        if signs[c] > 0:
            pd[i] = ((u - 1) % m, o, u, (o - 1) % m)
        else:
            pd[i] = ((u - 1) % m, (o - 1) % m, u, o)
        writhe += signs[c]
    counts = _bracket_states(pd, m)
    # <K> = sum over states A^(a - b) d^(loops - 1), d = -A^2 - A^-2; V(t) = (-A^3)^-w <K>, t = A^-4.
    bracket: dict[int, int] = {}
    d_pow = [{0: 1}]
    for a in range(k + 1):
        for loops in range(1, counts.shape[1]):
            n = int(counts[a, loops])
            if n == 0:
                continue
            while len(d_pow) < loops:
                d_pow.append(_mul(d_pow[-1], {2: -1, -2: -1}))
            shift = a - (k - a)
            for e, coef in d_pow[loops - 1].items():
                bracket[e + shift] = bracket.get(e + shift, 0) + n * coef
    out: dict[int, int] = {}
    for e, coef in bracket.items():
        if coef == 0:
            continue
        e2 = e - 3 * writhe
        if e2 % 4:
            raise ArithmeticError("jones_polynomial: a knot's bracket has powers of A in steps of 4")
        out[-e2 // 4] = out.get(-e2 // 4, 0) + coef * (-1 if writhe % 2 else 1)
    return {e: c for e, c in out.items() if c}


@nb.njit(nogil=True, cache=True)
def _bracket_states(pd, m):
    """counts[a, loops]: how many states of the bracket smooth a crossings the A way and leave `loops` loops.
    A-smoothing of X[a, b, c, d] joins (a, b) and (c, d); B joins (a, d) and (b, c)."""
    k = pd.shape[0]
    counts = np.zeros((k + 1, m + 2), np.int64)
    parent = np.empty(m, np.int64)
    for state in range(1 << k):
        for e in range(m):
            parent[e] = e
        n_a = 0
        for c in range(k):
            if (state >> c) & 1:
                p0, p1, p2, p3 = pd[c, 0], pd[c, 3], pd[c, 1], pd[c, 2]
            else:
                n_a += 1
                p0, p1, p2, p3 = pd[c, 0], pd[c, 1], pd[c, 2], pd[c, 3]
            for x0, x1 in ((p0, p1), (p2, p3)):
                r0 = x0
                while parent[r0] != r0:
                    r0 = parent[r0]
                r1 = x1
                while parent[r1] != r1:
                    r1 = parent[r1]
                if r0 != r1:
                    parent[r0] = r1
        loops = 0
        for e in range(m):
            if parent[e] == e:
                loops += 1
        counts[n_a, loops] += 1
    return counts


def _mul(p: dict[int, int], q: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for a, ca in p.items():
        for b, cb in q.items():
            out[a + b] = out.get(a + b, 0) + ca * cb
    return {e: c for e, c in out.items() if c}


def _divide(p: dict[int, int], q: dict[int, int]) -> dict[int, int] | None:
    """p / q if q divides p exactly in Z[t, 1/t], else None."""
    rem = dict(p)
    quot: dict[int, int] = {}
    q_top = max(q)
    q_lead = q[q_top]
    q_low = min(q)
    while rem:
        top = max(rem)
        if top - q_top < min(p) - q_low:
            return None
        coef, r = divmod(rem[top], q_lead)
        if r:
            return None
        shift = top - q_top
        quot[shift] = coef
        for e, c in q.items():
            rem[e + shift] = rem.get(e + shift, 0) - coef * c
        rem = {e: c for e, c in rem.items() if c}
    return quot


def _mirror(p: dict[int, int]) -> dict[int, int]:
    return {-e: c for e, c in p.items()}


def _key(jones: dict[int, int] | None) -> tuple:
    return ("unresolved",) if jones is None else tuple(sorted(jones.items()))


def factor_throws(jones: dict[int, int]) -> tuple[list[tuple[int, int]], bool]:
    """The throws (wraps, handedness) whose polynomials multiply to `jones`, most wraps first, and whether they
    explain it all."""
    rest = dict(jones)
    throws: list[tuple[int, int]] = []
    for wraps, poly in _THROWS:
        for hand, p in ((1, poly), (-1, _mirror(poly))):
            while True:
                q = _divide(rest, p)
                if q is None:
                    break
                rest = q
                throws.append((wraps, hand))
    return throws, rest == {0: 1}


# --- the result ---------------------------------------------------------------------------------------------


def _result(view: _View, x: np.ndarray, tension: float | None, radius: float, mean: np.ndarray,
            seg: np.ndarray | None) -> KnotResult:  # fmt: skip
    """The result of the view chosen; mean: x's centroid; seg: x's segment lengths (None: not at hand)."""
    if view.jones is None:
        throws, resolved = [], False
        jones: dict[int, int] = {}
    else:
        throws, resolved = factor_throws(view.jones)
        jones = view.jones
    wraps = tuple(w for w, _ in throws)
    hands = tuple(h for _, h in throws)
    kind = None
    if resolved and len(throws) >= 2:
        if len(set(hands)) == 1:
            kind = "granny"
        elif max(wraps) >= 2:
            kind = "surgeons"
        else:
            kind = "square"
    pts = view.points
    if pts.shape[0]:
        centre = pts.mean(axis=0)
        extent = float(np.max(np.linalg.norm(pts[:, None, :] - pts[None, :, :], axis=2)))
    else:
        centre, extent = mean, 0.0
    tight = False
    if throws:  # how tight only matters for a knot
        if seg is None:
            seg = np.linalg.norm(np.diff(x, axis=0), axis=1)
        limit = max(TIGHT_DIAMETERS * 2.0 * radius, TIGHT_SEGMENTS * float(np.median(seg)))
        tight = resolved and extent <= limit and (tension is None or tension >= TIGHT_TENSION)
    return KnotResult(kind, len(throws), bool(tight), view.crossings, hands, wraps, resolved, centre, extent, jones)
