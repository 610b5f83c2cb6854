"""The implicit frame kernel: backward Euler over the whole frame, Newton steps solved by preconditioned CG.

The alternative to XPBD's small steps for stiff tissue (as SOFA does it): per frame, minimise the incremental
potential

    E(x) = sum_i m_i / (2 h^2) |x_i - y_i|^2 + elastic(x) + springs(x),   y = x + h v + h^2 g

(elastic: the same stable Neo-Hookean energy as physics.reference; springs: anchors and grasp points with the
XPBD solver's compliances) with `newton_steps` Newton steps, each solved by `cg_iterations` of conjugate
gradients preconditioned by the 3x3 diagonal blocks of the Hessian (exact: the det term adds nothing to them).
The Hessian is never assembled: CG multiplies by it tet by tet, its det term with a coefficient limited so each
tet's part stays positive semi-definite. The gradient is exact, so at rest the frame's fixed point is the static
equilibrium of the energy whatever the iteration counts: the error XPBD carries (stiffness x h^2 / mass) is not
there. Environment and instrument contact enter the solve as a stick/slide filter decided at the frame's
start (the held vertices' reaction is the instrument force reported), and are projected once more after the
solve (frame-start to frame-end capsules, so friction sees the capsules' motion).

Deterministic for any thread count: the tet passes run as TET_PARTS fixed runs of tets (the parallel tasks,
whatever the thread count); a vertex whose tets all lie in one run gets their rows added straight in by that
run, in tet order, and only the shared vertices (on the runs' borders) have their corner rows written and then
gathered in tet order (an incidence list built with the model); springs are added serially and dot products
sum fixed blocks in order. On one thread every corner is added straight in, in tet order: the same sums.
(Gathering every vertex, as this kernel once did, cost two threads more than the one-thread kernel's work.)

Cost (per frame, 20k tets): one setup pass (F, cof F, energy, gradient and diagonal blocks; after the contact
filter moved a few vertices' start, only their neighbourhood again: _local_refresh), then per CG iteration
three parallel passes (the tets' product in vectorised chunks; the vertices' gather with inertia, springs,
contact filter and p.q; the update with the preconditioner and r.z) around a serial 192-unknown coarse solve,
then the line search's energy pass, and the contact reaction at the held vertices alone. Its arrays live in
the FrameTopology's workspace: a frame allocates none of its large ones.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from physics.coarse_space import COARSE_AGGREGATES, aggregates, cholesky, coarse_matrix, solve_coarse
from physics.contact import environment_contact, instrument_contacts, segment_offset
from physics.kinematics import grasp_targets, interpolate_frames, world_capsules
from physics.neo_hookean import serial_twin
from physics.velocity_guard import CLAMPED, RESET, guard_velocity

FAST = {"nogil": True, "error_model": "numpy"}  # no fastmath: compiled and cached kernels give the same bits
DOT_BLOCKS = 64  # dot products add this many fixed blocks in order (independent of the thread count)
TET_PARTS = 8  # the tet passes run over this many fixed runs of tets (independent of the thread count; see
# shared_vertices): a vertex whose tets all lie in one run gets their rows added straight in, in tet order
CG_ITERATIONS = 10  # with the coarse space: at rest within 1%; fewer lets a held grasp jitter (8: 10x the force noise)
NEWTON_STEPS = 1
CONTACT_TOLERANCE = 1e-5  # m: a vertex this close to an environment shape (or inside it) may rest on it
INSTRUMENT_REACH = 2e-4  # m: a tissue point this close to an instrument's capsule (or inside it) may rest on it
STATS = ("newton_steps", "cg_iterations", "line_search_halvings")  # what a frame reports it did (out_stats)
LINE_SEARCH_HALVINGS = 6  # a Newton step that raises the frame's energy is halved up to this many times
LOCAL_REFRESH = 0.2  # contact that moved a few vertices refreshes their neighbourhood alone while the vertices
# to re-sum have at most this fraction of all corner slots (a local corner costs about 4x one of the full pass)


class FrameTopology:
    """What the implicit frame derives from the model's topology (a Solver holds one, rebuilt when notified):
    the live tets and their rest data, each vertex's corner slots, the coarse space's aggregates, and the
    coarse factor for the last frame length and stiffness (rebuilt when either changes)."""

    def __init__(self, model, previous: FrameTopology | None = None, coarse_aggregates: int = COARSE_AGGREGATES):
        """previous: the topology this one replaces; its incidence of all the model's tets (dead or alive) is
        reused when the model still has the same tets array, so a cut or burn only filters it (no sort)."""
        if previous is not None and previous._all_tets is model.tets and previous._n_vertices == model.n_vertices:
            self._all_tets, self._all_slots, self._slot_vertex = (
                previous._all_tets, previous._all_slots, previous._slot_vertex
            )  # fmt: skip
        else:
            self._all_tets = model.tets
            _, self._all_slots = incidence(model.tets.astype(np.int64), model.n_vertices)
            self._slot_vertex = model.tets.ravel()[self._all_slots]
        self._n_vertices = model.n_vertices
        alive = model.alive
        self.live = np.flatnonzero(alive)
        self.tets = np.ascontiguousarray(model.tets[self.live], dtype=np.int64)
        self.B = np.ascontiguousarray(model.dm_inv[self.live])
        self.Bt = np.ascontiguousarray(self.B.T)  # component-major for the Hessian products
        self.gamma = np.ascontiguousarray(model.gamma[self.live])
        # The live tets' incidence, as incidence(self.tets) would sort it: the kept slots stay in vertex order
        # and, within a vertex, in tet order; only their numbers change to the live tets' compact ids.
        owner = self._all_slots // 4
        keep = alive[owner]
        compact = np.cumsum(alive) - 1
        self.slots = compact[owner[keep]] * 4 + self._all_slots[keep] % 4
        self.start = np.zeros(model.n_vertices + 1, np.int64)
        np.cumsum(np.bincount(self._slot_vertex[keep], minlength=model.n_vertices), out=self.start[1:])
        # Vertices with tets in more than one of the parallel runs: the only ones whose rows are gathered.
        self.shared = shared_vertices(self.tets, model.n_vertices)
        self.shared_ids = np.flatnonzero(self.shared).astype(np.int64)
        movable = model.inv_mass > 0
        if (
            previous is not None
            and previous._rest is model.rest_positions
            and previous._n_vertices == model.n_vertices
            and previous._coarse_aggregates == coarse_aggregates
            and np.array_equal(previous._movable, movable)
        ):  # a cut or burn that adds no vertex: the same lattice (it depends on rest positions and pins alone)
            self.agg, self.n_agg = previous.agg, previous.n_agg
        else:
            self.agg, self.n_agg = aggregates(model.rest_positions, movable, coarse_aggregates)
        self._rest, self._movable, self._coarse_aggregates = model.rest_positions, movable, coarse_aggregates
        self.anchors = np.ascontiguousarray(model.anchor_vertex, dtype=np.int64)
        self._key: tuple | None = None
        self._stiffness: tuple | None = None
        self._factor = np.zeros((0, 0))
        self._work = frame_workspace(self.tets.shape[0], model.n_vertices, None if previous is None else previous._work)

    def workspace(self, n_vertices: int) -> tuple[np.ndarray, ...]:
        """The frame kernel's arrays (kept: a frame allocates none of its large ones), for states of n_vertices."""
        if self._work[6].shape[0] != n_vertices:
            raise ValueError(f"the state has {n_vertices} vertices, the model {self._work[6].shape[0]}")
        return self._work

    def stiffness(self, model) -> tuple[np.ndarray, np.ndarray]:
        """The live tets' k_dev = 1 / alpha_dev and k_hyd = 1 / alpha_hyd, read every frame (scale_stiffness needs no
        notice) but recomputed only when the model's compliances differ from the last frame's."""
        kept = self._stiffness
        if kept is None or not (np.array_equal(kept[0], model.alpha_dev) and np.array_equal(kept[1], model.alpha_hyd)):
            live = self.live
            kept = (
                model.alpha_dev.copy(),
                model.alpha_hyd.copy(),
                1.0 / model.alpha_dev[live],
                1.0 / model.alpha_hyd[live],
            )
            self._stiffness = kept
        return kept[2], kept[3]

    def coarse(self, model, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """(aggregate per vertex, Cholesky factor of P^T A P at rest) for frames of dt seconds."""
        k_dev, k_hyd = self.stiffness(model)
        key = self._key
        if key is None or key[0] != dt or key[1] != model.anchor_compliance or key[2] is not self._stiffness:
            if self.n_agg == 0:
                self._factor = np.zeros((0, 0))
            else:
                A = coarse_matrix(
                    model.rest_positions, self.tets, self.B, k_dev, k_hyd, self.gamma,
                    self.agg, self.n_agg, model.mass, 1.0 / (dt * dt), self.anchors, 1.0 / model.anchor_compliance,
                )  # fmt: skip
                self._factor = cholesky(A)
            self._key = (dt, model.anchor_compliance, self._stiffness)
        return self.agg, self._factor


def incidence(tets: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of each vertex's corner slots (t * 4 + corner) over the given tets, in increasing slot order."""
    slots = np.argsort(tets.ravel(), kind="stable").astype(np.int64)
    counts = np.bincount(tets.ravel(), minlength=n_vertices)
    start = np.zeros(n_vertices + 1, np.int64)
    np.cumsum(counts, out=start[1:])
    return start, slots


@nb.njit(inline="always", **FAST)
def _column(x, tets, B, t, c):
    """Column c of the deformation gradient of tet t: sum_r (x_{r+1} - x_0) B[r, c] (scalars: no allocation)."""
    i0, i1, i2, i3 = tets[t, 0], tets[t, 1], tets[t, 2], tets[t, 3]
    b1, b2, b3 = B[t, c], B[t, 3 + c], B[t, 6 + c]
    fx = (x[i1, 0] - x[i0, 0]) * b1 + (x[i2, 0] - x[i0, 0]) * b2 + (x[i3, 0] - x[i0, 0]) * b3
    fy = (x[i1, 1] - x[i0, 1]) * b1 + (x[i2, 1] - x[i0, 1]) * b2 + (x[i3, 1] - x[i0, 1]) * b3
    fz = (x[i1, 2] - x[i0, 2]) * b1 + (x[i2, 2] - x[i0, 2]) * b2 + (x[i3, 2] - x[i0, 2]) * b3
    return fx, fy, fz


@nb.njit(inline="always", **FAST)
def _cross(a0, a1, a2, b0, b1, b2):
    return a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0


@nb.njit(inline="always", **FAST)
def _add_row(out, v, a, b, c):
    out[v, 0] += a
    out[v, 1] += b
    out[v, 2] += c


@nb.njit(inline="always", **FAST)
def _put_row(rows, k, a, b, c):
    rows[k, 0] = a
    rows[k, 1] = b
    rows[k, 2] = c


@nb.njit(inline="always", **FAST)
def _energy_of(f0x, f0y, f0z, f1x, f1y, f1z, f2x, f2y, f2z, kd, kh, gamma):
    """k_dev / 2 |F|^2 + k_hyd / 2 (det F - gamma)^2 (as physics.reference), F by its columns."""
    c0x, c0y, c0z = _cross(f1x, f1y, f1z, f2x, f2y, f2z)
    j = f0x * c0x + f0y * c0y + f0z * c0z - gamma
    nf2 = f0x * f0x + f0y * f0y + f0z * f0z + f1x * f1x + f1y * f1y + f1z * f1z + f2x * f2x + f2y * f2y + f2z * f2z
    return 0.5 * kd * nf2 + 0.5 * kh * j * j


@nb.njit(inline="always", **FAST)
def _tet_energy_at(x, tets, B, k_dev, k_hyd, gamma, t):
    """Elastic energy of tet t at x."""
    f0x, f0y, f0z = _column(x, tets, B, t, 0)
    f1x, f1y, f1z = _column(x, tets, B, t, 1)
    f2x, f2y, f2z = _column(x, tets, B, t, 2)
    return _energy_of(f0x, f0y, f0z, f1x, f1y, f1z, f2x, f2y, f2z, k_dev[t], k_hyd[t], gamma[t])


def _tet_energies(x, tets, B, k_dev, k_hyd, gamma, out):
    for t in nb.prange(tets.shape[0]):
        out[t] = _tet_energy_at(x, tets, B, k_dev, k_hyd, gamma, t)


@nb.njit(inline="always", **FAST)
def _state_from_edges(e1x, e1y, e1z, e2x, e2y, e2z, e3x, e3y, e3z, b0, b1, b2, b3, b4, b5, b6, b7, b8, kd, kh, gm):
    """A tet from its edge vectors e_r = x_r - x_0 and rest matrix B (row-major b0..b8): F's columns
    (f_c = sum_r e_r B[r-1, c]), cof F's columns (c0 = f1 x f2, c1 = f2 x f0, c2 = f0 x f1), the det term's
    coefficient s = k_hyd (det F - gamma), |F|^2 and the energy. The one place these are computed: the setup
    pass (vectorised over a chunk), the local refresh and the contact reaction (one tet) give the same bits."""
    f0x = e1x * b0 + e2x * b3 + e3x * b6
    f0y = e1y * b0 + e2y * b3 + e3y * b6
    f0z = e1z * b0 + e2z * b3 + e3z * b6
    f1x = e1x * b1 + e2x * b4 + e3x * b7
    f1y = e1y * b1 + e2y * b4 + e3y * b7
    f1z = e1z * b1 + e2z * b4 + e3z * b7
    f2x = e1x * b2 + e2x * b5 + e3x * b8
    f2y = e1y * b2 + e2y * b5 + e3y * b8
    f2z = e1z * b2 + e2z * b5 + e3z * b8
    c0x, c0y, c0z = _cross(f1x, f1y, f1z, f2x, f2y, f2z)
    c1x, c1y, c1z = _cross(f2x, f2y, f2z, f0x, f0y, f0z)
    c2x, c2y, c2z = _cross(f0x, f0y, f0z, f1x, f1y, f1z)
    j = f0x * c0x + f0y * c0y + f0z * c0z - gm
    s = kh * j
    nf2 = (
        f0x * f0x + f0y * f0y + f0z * f0z + f1x * f1x + f1y * f1y + f1z * f1z + f2x * f2x + f2y * f2y + f2z * f2z
    )  # fmt: skip
    energy = 0.5 * kd * nf2 + 0.5 * kh * j * j
    return (
        f0x, f0y, f0z, f1x, f1y, f1z, f2x, f2y, f2z, c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z, s, nf2, energy
    )  # fmt: skip


@nb.njit(inline="always", **FAST)
def _tet_state(x, tets, B, k_dev, k_hyd, gamma, t):
    """_state_from_edges for tet t at x."""
    i0, i1, i2, i3 = tets[t, 0], tets[t, 1], tets[t, 2], tets[t, 3]
    return _state_from_edges(
        x[i1, 0] - x[i0, 0], x[i1, 1] - x[i0, 1], x[i1, 2] - x[i0, 2],
        x[i2, 0] - x[i0, 0], x[i2, 1] - x[i0, 1], x[i2, 2] - x[i0, 2],
        x[i3, 0] - x[i0, 0], x[i3, 1] - x[i0, 1], x[i3, 2] - x[i0, 2],
        B[t, 0], B[t, 1], B[t, 2], B[t, 3], B[t, 4], B[t, 5], B[t, 6], B[t, 7], B[t, 8],
        k_dev[t], k_hyd[t], gamma[t],
    )  # fmt: skip


@nb.njit(inline="always", **FAST)
def _gradient_rows(b0, b1, b2, b3, b4, b5, b6, b7, b8, kd, s, f0x, f0y, f0z, f1x, f1y, f1z, f2x, f2y, f2z,
                   c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z):  # fmt: skip
    """The tet's gradient corner rows 0-3: P = k_dev F + s cof F, r_a = sum_c B[a-1, c] P_c for a = 1..3 and
    corner 0 minus their sum (so a tet's rows add up to exactly zero)."""
    p0x, p0y, p0z = kd * f0x + s * c0x, kd * f0y + s * c0y, kd * f0z + s * c0z
    p1x, p1y, p1z = kd * f1x + s * c1x, kd * f1y + s * c1y, kd * f1z + s * c1z
    p2x, p2y, p2z = kd * f2x + s * c2x, kd * f2y + s * c2y, kd * f2z + s * c2z
    r1x, r1y, r1z = b0 * p0x + b1 * p1x + b2 * p2x, b0 * p0y + b1 * p1y + b2 * p2y, b0 * p0z + b1 * p1z + b2 * p2z
    r2x, r2y, r2z = b3 * p0x + b4 * p1x + b5 * p2x, b3 * p0y + b4 * p1y + b5 * p2y, b3 * p0z + b4 * p1z + b5 * p2z
    r3x, r3y, r3z = b6 * p0x + b7 * p1x + b8 * p2x, b6 * p0y + b7 * p1y + b8 * p2y, b6 * p0z + b7 * p1z + b8 * p2z
    r0x, r0y, r0z = -(r1x + r2x + r3x), -(r1y + r2y + r3y), -(r1z + r2z + r3z)
    return r0x, r0y, r0z, r1x, r1y, r1z, r2x, r2y, r2z, r3x, r3y, r3z


@nb.njit(inline="always", **FAST)
def _pick(a, rows):
    """Corner a's row of _gradient_rows' four."""
    if a == 0:
        return rows[0], rows[1], rows[2]
    if a == 1:
        return rows[3], rows[4], rows[5]
    if a == 2:
        return rows[6], rows[7], rows[8]
    return rows[9], rows[10], rows[11]


@nb.njit(inline="always", **FAST)
def _diagonal_parts(a0, a1, a2, kd, c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z):
    """A corner's diagonal block parts from its shape gradient (a0, a1, a2: row a of the full shape-gradient
    matrix; corner 0's is minus the sum of the others): k_dev |b_a|^2 and g_a = dJ/dx_a (the block:
    k_dev |b_a|^2 I + k_hyd g g^T)."""
    bb = kd * (a0 * a0 + a1 * a1 + a2 * a2)
    g0 = a0 * c0x + a1 * c1x + a2 * c2x
    g1 = a0 * c0y + a1 * c1y + a2 * c2y
    g2 = a0 * c0z + a1 * c1z + a2 * c2z
    return bb, g0, g1, g2


@nb.njit(inline="always", **FAST)
def _add_diagonal(diag, v, bb, kh, g0, g1, g2):
    diag[v, 0] += bb + kh * g0 * g0
    diag[v, 1] += kh * g0 * g1
    diag[v, 2] += kh * g0 * g2
    diag[v, 3] += bb + kh * g1 * g1
    diag[v, 4] += kh * g1 * g2
    diag[v, 5] += bb + kh * g2 * g2


@nb.njit(inline="always", **FAST)
def _limited(kd, s, nf2):
    """The det term's coefficient limited so the tet's Hessian product stays positive: its Hessian has eigenvalues up
    to about the largest singular value times s; k_dev I outweighs it when |s| <= k_dev / sigma (sigma: here the
    RMS singular value |F| / sqrt 3, exact at rest where the limit is not reached). The gradient stays exact."""
    lim = kd / max(math.sqrt(nf2 / 3.0), 1e-6)
    return min(max(s, -lim), lim)


@nb.njit(inline="always", **FAST)
def _keep_state(Fs, Cs, geo, energy, t, kd, st):
    """Store tet t's F, cof F (component-major, for the Hessian products), limited coefficient and energy."""
    f0x, f0y, f0z, f1x, f1y, f1z, f2x, f2y, f2z, c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z, s, nf2, e = st
    Fs[0, t], Fs[1, t], Fs[2, t], Fs[3, t], Fs[4, t] = f0x, f0y, f0z, f1x, f1y
    Fs[5, t], Fs[6, t], Fs[7, t], Fs[8, t] = f1z, f2x, f2y, f2z
    Cs[0, t], Cs[1, t], Cs[2, t], Cs[3, t], Cs[4, t] = c0x, c0y, c0z, c1x, c1y
    Cs[5, t], Cs[6, t], Cs[7, t], Cs[8, t] = c1z, c2x, c2y, c2z
    energy[t] = e
    geo[t] = _limited(kd, s, nf2)


@nb.njit(inline="always", **FAST)
def _corner_values(x, tets, B, k_dev, k_hyd, gamma, t, a):
    """Corner a of tet t at x: its gradient row and diagonal block parts (bb, g), as tet_setup computes them."""
    st = _tet_state(x, tets, B, k_dev, k_hyd, gamma, t)
    f0x, f0y, f0z, f1x, f1y, f1z, f2x, f2y, f2z, c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z, s, _, _ = st
    kd = k_dev[t]
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = B[t, 0], B[t, 1], B[t, 2], B[t, 3], B[t, 4], B[t, 5], B[t, 6], B[t, 7], B[t, 8]
    rr = _gradient_rows(
        b0, b1, b2, b3, b4, b5, b6, b7, b8, kd, s, f0x, f0y, f0z, f1x, f1y, f1z, f2x, f2y, f2z,
        c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z,
    )  # fmt: skip
    gx, gy, gz = _pick(a, rr)
    if a == 0:
        a0, a1, a2 = -(b0 + b3 + b6), -(b1 + b4 + b7), -(b2 + b5 + b8)
    elif a == 1:
        a0, a1, a2 = b0, b1, b2
    elif a == 2:
        a0, a1, a2 = b3, b4, b5
    else:
        a0, a1, a2 = b6, b7, b8
    bb, g0, g1, g2 = _diagonal_parts(a0, a1, a2, kd, c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z)
    return gx, gy, gz, bb, g0, g1, g2


SETUP_CHUNK = 64  # tets the setup pass handles at once (as the product: corners in, vectorised arithmetic, rows out)


def _tet_setup(x, tets, B, Bt, k_dev, k_hyd, gamma, Fs, Cs, geo, energy, rows, grad, diag, direct, shared):
    """Per tet at x: F and cof F (kept for the Hessian products, component-major: Fs[k, t]), the det term's
    limited coefficient, the tet's energy (the line search's start), its gradient's corner rows and its diagonal
    3x3 blocks' parts per corner (k_dev |b_a|^2 and g_a = dJ/dx_a: the block is k_dev |b_a|^2 I + k_hyd g_a g_a^T,
    the det term's skew blocks cancel). A corner at a vertex that is not `shared` (all its tets in one of the
    TET_PARTS runs, which are the parallel tasks) is added to grad and diag (n, 6: xx xy xz yy yz zz; zero
    before) in tet order; a shared one is written to rows (tets * 4, 7) for gather_setup, which sums it in the
    same order. With direct (one thread only) every corner is added: a vertex's sums in the same order, so the
    same bits whatever the thread count. Per run, chunks of SETUP_CHUNK tets in three loops: the corners' edge
    vectors in, the arithmetic over component-major arrays (Bt; vectorised), the corners out in tet order."""
    m = tets.shape[0]
    for part in nb.prange(TET_PARTS):
        lo, hi = _part(part, m)
        # E: edge vectors in (0-8); out F 0-8, cof F 9-17, energy 18, limited coefficient 19, gradient rows
        # 20-31, (bb, g) per corner 32-47. The arithmetic writes E alone (LLVM vectorises a loop only while it
        # needs at most 8 runtime alias checks), then one short loop per destination array.
        E = np.empty((48, SETUP_CHUNK))
        for c0 in range(lo, hi, SETUP_CHUNK):
            w = min(hi, c0 + SETUP_CHUNK) - c0
            for j in range(w):
                t = np.uint64(c0 + j)  # unsigned: no wraparound, contiguous loads (see tet_product)
                i0, i1, i2, i3 = tets[t, 0], tets[t, 1], tets[t, 2], tets[t, 3]
                for d in range(3):
                    E[d, j] = x[i1, d] - x[i0, d]
                    E[3 + d, j] = x[i2, d] - x[i0, d]
                    E[6 + d, j] = x[i3, d] - x[i0, d]
            for j in range(w):
                t = np.uint64(c0 + j)
                b0, b1, b2, b3, b4, b5 = Bt[0, t], Bt[1, t], Bt[2, t], Bt[3, t], Bt[4, t], Bt[5, t]
                b6, b7, b8 = Bt[6, t], Bt[7, t], Bt[8, t]
                kd = k_dev[t]
                st = _state_from_edges(
                    E[0, j], E[1, j], E[2, j], E[3, j], E[4, j], E[5, j], E[6, j], E[7, j], E[8, j],
                    b0, b1, b2, b3, b4, b5, b6, b7, b8, kd, k_hyd[t], gamma[t],
                )  # fmt: skip
                f0x, f0y, f0z, f1x, f1y, f1z, f2x, f2y, f2z, c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z, s, nf2, e = st
                E[0, j], E[1, j], E[2, j], E[3, j], E[4, j] = f0x, f0y, f0z, f1x, f1y
                E[5, j], E[6, j], E[7, j], E[8, j] = f1z, f2x, f2y, f2z
                E[9, j], E[10, j], E[11, j], E[12, j], E[13, j] = c0x, c0y, c0z, c1x, c1y
                E[14, j], E[15, j], E[16, j], E[17, j] = c1z, c2x, c2y, c2z
                E[18, j] = e
                E[19, j] = _limited(kd, s, nf2)
                rr = _gradient_rows(
                    b0, b1, b2, b3, b4, b5, b6, b7, b8, kd, s, f0x, f0y, f0z, f1x, f1y, f1z, f2x, f2y, f2z,
                    c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z,
                )  # fmt: skip
                E[20, j], E[21, j], E[22, j], E[23, j], E[24, j], E[25, j] = rr[0], rr[1], rr[2], rr[3], rr[4], rr[5]
                E[26, j], E[27, j], E[28, j], E[29, j], E[30, j], E[31, j] = rr[6], rr[7], rr[8], rr[9], rr[10], rr[11]
                bb, g0, g1, g2 = _diagonal_parts(
                    -(b0 + b3 + b6), -(b1 + b4 + b7), -(b2 + b5 + b8), kd, c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z
                )
                E[32, j], E[33, j], E[34, j], E[35, j] = bb, g0, g1, g2
                bb, g0, g1, g2 = _diagonal_parts(b0, b1, b2, kd, c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z)
                E[36, j], E[37, j], E[38, j], E[39, j] = bb, g0, g1, g2
                bb, g0, g1, g2 = _diagonal_parts(b3, b4, b5, kd, c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z)
                E[40, j], E[41, j], E[42, j], E[43, j] = bb, g0, g1, g2
                bb, g0, g1, g2 = _diagonal_parts(b6, b7, b8, kd, c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z)
                E[44, j], E[45, j], E[46, j], E[47, j] = bb, g0, g1, g2
            for j in range(w):
                t = np.uint64(c0 + j)
                Fs[0, t], Fs[1, t], Fs[2, t], Fs[3, t], Fs[4, t] = E[0, j], E[1, j], E[2, j], E[3, j], E[4, j]
                Fs[5, t], Fs[6, t], Fs[7, t], Fs[8, t] = E[5, j], E[6, j], E[7, j], E[8, j]
            for j in range(w):
                t = np.uint64(c0 + j)
                Cs[0, t], Cs[1, t], Cs[2, t], Cs[3, t], Cs[4, t] = E[9, j], E[10, j], E[11, j], E[12, j], E[13, j]
                Cs[5, t], Cs[6, t], Cs[7, t], Cs[8, t] = E[14, j], E[15, j], E[16, j], E[17, j]
            for j in range(w):
                t = np.uint64(c0 + j)
                energy[t] = E[18, j]
                geo[t] = E[19, j]
            for j in range(w):
                t = c0 + j
                kh = k_hyd[t]
                for a in range(4):
                    v = tets[t, a]
                    gx, gy, gz = E[20 + 3 * a, j], E[21 + 3 * a, j], E[22 + 3 * a, j]
                    bb, g0, g1, g2 = E[32 + 4 * a, j], E[33 + 4 * a, j], E[34 + 4 * a, j], E[35 + 4 * a, j]
                    if direct or shared[v] == 0:
                        _add_row(grad, v, gx, gy, gz)
                        _add_diagonal(diag, v, bb, kh, g0, g1, g2)
                    else:
                        k = 4 * t + a
                        rows[k, 0], rows[k, 1], rows[k, 2], rows[k, 3] = gx, gy, gz, bb
                        rows[k, 4], rows[k, 5], rows[k, 6] = g0, g1, g2


def _gather_setup(rows, start, slots, k_hyd, grad, diag, ids):
    """grad and diag of the vertices ids (the shared ones) from tet_setup's corner rows: each sums its slots in
    slot (tet) order."""
    for j in nb.prange(ids.shape[0]):
        i = ids[j]
        a0 = a1 = a2 = 0.0
        d0 = d1 = d2 = d3 = d4 = d5 = 0.0
        for k in range(start[i], start[i + 1]):
            s = slots[k]
            kh = k_hyd[s // 4]
            a0 += rows[s, 0]
            a1 += rows[s, 1]
            a2 += rows[s, 2]
            bb, g0, g1, g2 = rows[s, 3], rows[s, 4], rows[s, 5], rows[s, 6]
            d0 += bb + kh * g0 * g0
            d1 += kh * g0 * g1
            d2 += kh * g0 * g2
            d3 += bb + kh * g1 * g1
            d4 += kh * g1 * g2
            d5 += bb + kh * g2 * g2
        grad[i, 0], grad[i, 1], grad[i, 2] = a0, a1, a2
        diag[i, 0], diag[i, 1], diag[i, 2], diag[i, 3], diag[i, 4], diag[i, 5] = d0, d1, d2, d3, d4, d5


PRODUCT_CHUNK = 256  # tets a product handles at once: corner values in, the arithmetic over contiguous rows, rows out


def _tet_product(z, p, beta, tets, Bt, k_dev, k_hyd, Fs, Cs, geo, rows, q, direct, shared):
    """The tets' Hessian (det term limited) times the CG direction z + beta p (formed per corner, as
    finish_product then stores it): a corner at a vertex that is not shared added to q (zero before) in tet
    order, a shared one into rows (tets * 4, 3) for gather_rows or finish_product; with direct (one thread only)
    every corner added to q (the same sums as the gather, so the same bits). Per TET_PARTS run (a parallel
    task), chunks of PRODUCT_CHUNK tets in three loops: gather the corners' edge vectors, the arithmetic on
    arrays laid out component-major (Bt, Fs, Cs: [k, t]; the compiler vectorises it), then the corner rows out."""
    m = tets.shape[0]
    for part in nb.prange(TET_PARTS):
        lo, hi = _part(part, m)
        E = np.empty((12, PRODUCT_CHUNK))
        for c0 in range(lo, hi, PRODUCT_CHUNK):
            w = min(hi, c0 + PRODUCT_CHUNK) - c0
            for j in range(w):
                t = np.uint64(c0 + j)  # unsigned: no negative-index wraparound (see the next loop)
                i0, i1, i2, i3 = tets[t, 0], tets[t, 1], tets[t, 2], tets[t, 3]
                for d in range(3):
                    p0 = z[i0, d] + beta * p[i0, d]
                    E[d, j] = (z[i1, d] + beta * p[i1, d]) - p0
                    E[3 + d, j] = (z[i2, d] + beta * p[i2, d]) - p0
                    E[6 + d, j] = (z[i3, d] + beta * p[i3, d]) - p0
            for j in range(w):
                # An unsigned t: a signed one that LLVM cannot prove non-negative (c0 starts at a run's lo) gets
                # numba's negative-index wraparound, and the vectorised loop then loads Bt, Fs, Cs, k_dev, k_hyd and
                # geo by AVX-512 gathers instead of contiguous loads: twice this product's time on one thread.
                t = np.uint64(c0 + j)
                b0, b1, b2, b3, b4, b5 = Bt[0, t], Bt[1, t], Bt[2, t], Bt[3, t], Bt[4, t], Bt[5, t]
                b6, b7, b8 = Bt[6, t], Bt[7, t], Bt[8, t]
                # dF's columns: sum_r (p_{r+1} - p_0) B[r, c]
                d0x = E[0, j] * b0 + E[3, j] * b3 + E[6, j] * b6
                d0y = E[1, j] * b0 + E[4, j] * b3 + E[7, j] * b6
                d0z = E[2, j] * b0 + E[5, j] * b3 + E[8, j] * b6
                d1x = E[0, j] * b1 + E[3, j] * b4 + E[6, j] * b7
                d1y = E[1, j] * b1 + E[4, j] * b4 + E[7, j] * b7
                d1z = E[2, j] * b1 + E[5, j] * b4 + E[8, j] * b7
                d2x = E[0, j] * b2 + E[3, j] * b5 + E[6, j] * b8
                d2y = E[1, j] * b2 + E[4, j] * b5 + E[7, j] * b8
                d2z = E[2, j] * b2 + E[5, j] * b5 + E[8, j] * b8
                c0x, c0y, c0z, c1x, c1y = Cs[0, t], Cs[1, t], Cs[2, t], Cs[3, t], Cs[4, t]
                c1z, c2x, c2y, c2z = Cs[5, t], Cs[6, t], Cs[7, t], Cs[8, t]
                f0x, f0y, f0z, f1x, f1y = Fs[0, t], Fs[1, t], Fs[2, t], Fs[3, t], Fs[4, t]
                f1z, f2x, f2y, f2z = Fs[5, t], Fs[6, t], Fs[7, t], Fs[8, t]
                cd = (
                c0x * d0x + c0y * d0y + c0z * d0z + c1x * d1x + c1y * d1y + c1z * d1z
                + c2x * d2x + c2y * d2y + c2z * d2z
            )  # fmt: skip
                kd, kh, s = k_dev[t], k_hyd[t] * cd, geo[t]
                # d(cof F)[dF]: c0 = f1 x f2, c1 = f2 x f0, c2 = f0 x f1.
                q0x = kd * d0x + kh * c0x + s * ((d1y * f2z - d1z * f2y) + (f1y * d2z - f1z * d2y))
                q0y = kd * d0y + kh * c0y + s * ((d1z * f2x - d1x * f2z) + (f1z * d2x - f1x * d2z))
                q0z = kd * d0z + kh * c0z + s * ((d1x * f2y - d1y * f2x) + (f1x * d2y - f1y * d2x))
                q1x = kd * d1x + kh * c1x + s * ((d2y * f0z - d2z * f0y) + (f2y * d0z - f2z * d0y))
                q1y = kd * d1y + kh * c1y + s * ((d2z * f0x - d2x * f0z) + (f2z * d0x - f2x * d0z))
                q1z = kd * d1z + kh * c1z + s * ((d2x * f0y - d2y * f0x) + (f2x * d0y - f2y * d0x))
                q2x = kd * d2x + kh * c2x + s * ((d0y * f1z - d0z * f1y) + (f0y * d1z - f0z * d1y))
                q2y = kd * d2y + kh * c2y + s * ((d0z * f1x - d0x * f1z) + (f0z * d1x - f0x * d1z))
                q2z = kd * d2z + kh * c2z + s * ((d0x * f1y - d0y * f1x) + (f0x * d1y - f0y * d1x))
                # Corner rows 1-3 (r_a = sum_c B[a-1, c] Q_c) in E[0:9], corner 0 (minus their sum) in E[9:12].
                E[0, j] = b0 * q0x + b1 * q1x + b2 * q2x
                E[1, j] = b0 * q0y + b1 * q1y + b2 * q2y
                E[2, j] = b0 * q0z + b1 * q1z + b2 * q2z
                E[3, j] = b3 * q0x + b4 * q1x + b5 * q2x
                E[4, j] = b3 * q0y + b4 * q1y + b5 * q2y
                E[5, j] = b3 * q0z + b4 * q1z + b5 * q2z
                E[6, j] = b6 * q0x + b7 * q1x + b8 * q2x
                E[7, j] = b6 * q0y + b7 * q1y + b8 * q2y
                E[8, j] = b6 * q0z + b7 * q1z + b8 * q2z
                E[9, j] = -(E[0, j] + E[3, j] + E[6, j])
                E[10, j] = -(E[1, j] + E[4, j] + E[7, j])
                E[11, j] = -(E[2, j] + E[5, j] + E[8, j])
            if direct:  # every corner added, in tet order
                for j in range(w):
                    t = np.uint64(c0 + j)
                    i0, i1, i2, i3 = tets[t, 0], tets[t, 1], tets[t, 2], tets[t, 3]
                    _add_row(q, i0, E[9, j], E[10, j], E[11, j])
                    _add_row(q, i1, E[0, j], E[1, j], E[2, j])
                    _add_row(q, i2, E[3, j], E[4, j], E[5, j])
                    _add_row(q, i3, E[6, j], E[7, j], E[8, j])
            else:
                for j in range(w):
                    t = c0 + j
                    for a in range(4):
                        v = tets[t, a]
                        r = 9 if a == 0 else 3 * (a - 1)
                        if shared[v] == 0:
                            _add_row(q, v, E[r, j], E[r + 1, j], E[r + 2, j])
                        else:
                            _put_row(rows, 4 * t + a, E[r, j], E[r + 1, j], E[r + 2, j])


def _gather_rows(rows, start, slots, out, ids):
    """out[i] = sum of vertex i's corner rows (rows: tets * 4, 3) in slot order, for the vertices ids."""
    for j in nb.prange(ids.shape[0]):
        i = ids[j]
        a0 = a1 = a2 = 0.0
        for k in range(start[i], start[i + 1]):
            s = slots[k]
            a0 += rows[s, 0]
            a1 += rows[s, 1]
            a2 += rows[s, 2]
        out[i, 0], out[i, 1], out[i, 2] = a0, a1, a2


@nb.njit(inline="always", **FAST)
def _part(k, m):
    """Tets lo..hi of fixed run k of TET_PARTS (the same runs for any thread count; shared_vertices uses them)."""
    size = (m + TET_PARTS - 1) // TET_PARTS
    return min(m, k * size), min(m, (k + 1) * size)


@nb.njit(cache=True, **FAST)
def shared_vertices(tets, n_vertices):
    """1 for each vertex whose tets lie in more than one of the TET_PARTS runs (their rows are gathered in tet
    order after the pass), 0 for the others (added straight in by the one task that owns all their tets)."""
    m = tets.shape[0]
    first = np.full(n_vertices, -1, np.int64)
    out = np.zeros(n_vertices, np.uint8)
    for k in range(TET_PARTS):
        lo, hi = _part(k, m)
        for t in range(lo, hi):
            for a in range(4):
                v = tets[t, a]
                if first[v] < 0:
                    first[v] = k
                elif first[v] != k:
                    out[v] = 1
    return out


@nb.njit(inline="always", **FAST)
def _block(k, n):
    """Vertices (or tets) lo..hi of fixed block k of DOT_BLOCKS: the same blocks for any thread count."""
    size = (n + DOT_BLOCKS - 1) // DOT_BLOCKS
    return k * size, min(n, (k + 1) * size)


@nb.njit(inline="always", **FAST)
def _sum_blocks(partial, offset):
    total = 0.0
    for k in range(DOT_BLOCKS):
        total += partial[offset + k]
    return total


def _dot(a, b, partial):
    """sum a * b over (n, 3) arrays, each fixed block of vertices in order, then the blocks in order."""
    n = a.shape[0]
    for k in nb.prange(DOT_BLOCKS):
        lo, hi = _block(k, n)
        acc = 0.0
        for i in range(lo, hi):
            acc += a[i, 0] * b[i, 0]
            acc += a[i, 1] * b[i, 1]
            acc += a[i, 2] * b[i, 2]
        partial[k] = acc
    return _sum_blocks(partial, 0)


def _finish_product(z, p, beta, q, sq, mh, free, S, rows, start, slots, gather, shared, partial):
    """p = z + beta p (the new direction) and q = S ((H p + springs + m / h^2 p) free): the tets' part gathered
    from rows at shared vertices (with gather), already in q at the others, the springs' from sq; returns p . q
    (fixed vertex blocks in order)."""
    n = p.shape[0]
    for k in nb.prange(DOT_BLOCKS):
        lo, hi = _block(k, n)
        acc = 0.0
        for i in range(lo, hi):
            if gather and shared[i] != 0:
                a0 = a1 = a2 = 0.0
                for s in range(start[i], start[i + 1]):
                    slot = slots[s]
                    a0 += rows[slot, 0]
                    a1 += rows[slot, 1]
                    a2 += rows[slot, 2]
            else:
                a0, a1, a2 = q[i, 0], q[i, 1], q[i, 2]
            p0 = z[i, 0] + beta * p[i, 0]
            p1 = z[i, 1] + beta * p[i, 1]
            p2 = z[i, 2] + beta * p[i, 2]
            p[i, 0], p[i, 1], p[i, 2] = p0, p1, p2
            a = (a0 + sq[i, 0] + mh[i] * p0) * free[i]
            b = (a1 + sq[i, 1] + mh[i] * p1) * free[i]
            c = (a2 + sq[i, 2] + mh[i] * p2) * free[i]
            a, b, c = _filter(S, i, a, b, c)
            q[i, 0], q[i, 1], q[i, 2] = a, b, c
            acc += p0 * a
            acc += p1 * b
            acc += p2 * c
        partial[k] = acc
    return _sum_blocks(partial, 0)


def _update_precondition(dx, r, p, q, alpha, inv_diag, S, z, agg, yc, nc, clear, partial):
    """dx += alpha p, r -= alpha q (q then zeroed when clear: a direct product adds into it), and
    z = S (D^-1 r + P yc): block Jacobi plus the coarse correction yc (solved for P^T r beforehand); returns
    r . z (fixed vertex blocks in order)."""
    n = r.shape[0]
    for k in nb.prange(DOT_BLOCKS):
        lo, hi = _block(k, n)
        acc = 0.0
        for i in range(lo, hi):
            for d in range(3):
                dx[i, d] += alpha * p[i, d]
                r[i, d] -= alpha * q[i, d]
                if clear:
                    q[i, d] = 0.0
            a = inv_diag[i, 0] * r[i, 0] + inv_diag[i, 1] * r[i, 1] + inv_diag[i, 2] * r[i, 2]
            b = inv_diag[i, 3] * r[i, 0] + inv_diag[i, 4] * r[i, 1] + inv_diag[i, 5] * r[i, 2]
            c = inv_diag[i, 6] * r[i, 0] + inv_diag[i, 7] * r[i, 1] + inv_diag[i, 8] * r[i, 2]
            g = agg[i]
            if nc > 0 and g >= 0:
                a += yc[3 * g]
                b += yc[3 * g + 1]
                c += yc[3 * g + 2]
            a, b, c = _filter(S, i, a, b, c)
            z[i, 0], z[i, 1], z[i, 2] = a, b, c
            acc += r[i, 0] * a
            acc += r[i, 1] * b
            acc += r[i, 2] * c
        partial[k] = acc
    return _sum_blocks(partial, 0)


@nb.njit(inline="always", **FAST)
def _restrict(v, agg, out):
    """out = P^T v: each aggregate's sum of its vertices' rows, serially in vertex order."""
    for j in range(out.shape[0]):
        out[j] = 0.0
    for i in range(v.shape[0]):
        g = agg[i]
        if g >= 0:
            for d in range(3):
                out[3 * g + d] += v[i, d]


@nb.njit(inline="always", **FAST)
def _trial_energy(x, dx, step, tets, B, k_dev, k_hyd, gamma, t):
    """Elastic energy of tet t at x + step dx (the corners' positions computed as the accepted step does)."""
    i0, i1, i2, i3 = tets[t, 0], tets[t, 1], tets[t, 2], tets[t, 3]
    e1x = (x[i1, 0] + step * dx[i1, 0]) - (x[i0, 0] + step * dx[i0, 0])
    e1y = (x[i1, 1] + step * dx[i1, 1]) - (x[i0, 1] + step * dx[i0, 1])
    e1z = (x[i1, 2] + step * dx[i1, 2]) - (x[i0, 2] + step * dx[i0, 2])
    e2x = (x[i2, 0] + step * dx[i2, 0]) - (x[i0, 0] + step * dx[i0, 0])
    e2y = (x[i2, 1] + step * dx[i2, 1]) - (x[i0, 1] + step * dx[i0, 1])
    e2z = (x[i2, 2] + step * dx[i2, 2]) - (x[i0, 2] + step * dx[i0, 2])
    e3x = (x[i3, 0] + step * dx[i3, 0]) - (x[i0, 0] + step * dx[i0, 0])
    e3y = (x[i3, 1] + step * dx[i3, 1]) - (x[i0, 1] + step * dx[i0, 1])
    e3z = (x[i3, 2] + step * dx[i3, 2]) - (x[i0, 2] + step * dx[i0, 2])
    b = B
    f0x = e1x * b[t, 0] + e2x * b[t, 3] + e3x * b[t, 6]
    f0y = e1y * b[t, 0] + e2y * b[t, 3] + e3y * b[t, 6]
    f0z = e1z * b[t, 0] + e2z * b[t, 3] + e3z * b[t, 6]
    f1x = e1x * b[t, 1] + e2x * b[t, 4] + e3x * b[t, 7]
    f1y = e1y * b[t, 1] + e2y * b[t, 4] + e3y * b[t, 7]
    f1z = e1z * b[t, 1] + e2z * b[t, 4] + e3z * b[t, 7]
    f2x = e1x * b[t, 2] + e2x * b[t, 5] + e3x * b[t, 8]
    f2y = e1y * b[t, 2] + e2y * b[t, 5] + e3y * b[t, 8]
    f2z = e1z * b[t, 2] + e2z * b[t, 5] + e3z * b[t, 8]
    return _energy_of(f0x, f0y, f0z, f1x, f1y, f1z, f2x, f2y, f2z, k_dev[t], k_hyd[t], gamma[t])


def _trial_change(x, dx, step, tets, B, k_dev, k_hyd, gamma, e_old, partial, ga, gb, with_dot):
    """The tets' energy change from x to x + step dx (e_old: their energies at x) and sum |e_old| (the
    round-off scale), each summed in fixed blocks of tets, the blocks in order; with_dot, in the same parallel
    pass, ga . gb as _dot sums it (partial: 3 * DOT_BLOCKS), else 0."""
    m = tets.shape[0]
    n = ga.shape[0]
    for k in nb.prange(DOT_BLOCKS):
        lo, hi = _block(k, m)
        acc = 0.0
        mag = 0.0
        for t in range(lo, hi):
            acc += _trial_energy(x, dx, step, tets, B, k_dev, k_hyd, gamma, t) - e_old[t]
            mag += abs(e_old[t])
        partial[k] = acc
        partial[DOT_BLOCKS + k] = mag
        dot = 0.0
        if with_dot:
            lo, hi = _block(k, n)
            for i in range(lo, hi):
                dot += ga[i, 0] * gb[i, 0]
                dot += ga[i, 1] * gb[i, 1]
                dot += ga[i, 2] * gb[i, 2]
        partial[2 * DOT_BLOCKS + k] = dot
    return _sum_blocks(partial, 0), _sum_blocks(partial, DOT_BLOCKS), _sum_blocks(partial, 2 * DOT_BLOCKS)


@nb.njit(inline="always", **FAST)
def _environment_normal(x, i, planes, spheres, boxes, tol):
    """The outward normal of the first environment shape vertex i touches (within tol) or is inside, else 0."""
    for k in range(planes.shape[0]):
        nx, ny, nz = planes[k, 0], planes[k, 1], planes[k, 2]
        if x[i, 0] * nx + x[i, 1] * ny + x[i, 2] * nz - planes[k, 3] <= tol:
            return True, nx, ny, nz
    for k in range(spheres.shape[0]):
        rx, ry, rz = x[i, 0] - spheres[k, 0], x[i, 1] - spheres[k, 1], x[i, 2] - spheres[k, 2]
        dist = math.sqrt(rx * rx + ry * ry + rz * rz)
        if dist <= spheres[k, 3] + tol and dist > 1e-12:
            return True, rx / dist, ry / dist, rz / dist
    for k in range(boxes.shape[0]):
        best = 1e30
        axis = -1
        sign = 1.0
        for a in range(3):
            local = x[i, a] - boxes[k, a]
            pen = boxes[k, 3 + a] + tol - abs(local)
            if pen < 0.0:
                axis = -2
                break
            if pen < best:
                best = pen
                axis = a
                sign = 1.0 if local >= 0.0 else -1.0
        if axis >= 0:
            return True, sign if axis == 0 else 0.0, sign if axis == 1 else 0.0, sign if axis == 2 else 0.0
    return False, 0.0, 0.0, 0.0


@nb.njit(inline="always", **FAST)
def _environment_filter(x, x_prev, v, r, free, S, touching, i, planes, spheres, boxes, env_mu, h):
    """Environment contact enters the solve as a filter (Baraff and Witkin 1998) decided from the frame's start
    alone: vertex i touching a shape and pressed into it by the frame's forces r (the gradient at the start)
    sticks where it is while static friction can hold it, slides along the surface otherwise. Its start moves
    (to where it was, or off its motion into the surface): then the gradient again (_local_refresh)."""
    if free[i] == 0.0:
        return
    hit, nx, ny, nz = _environment_normal(x_prev, i, planes, spheres, boxes, CONTACT_TOLERANCE)
    if not hit:
        return
    fn = -(r[i, 0] * nx + r[i, 1] * ny + r[i, 2] * nz)  # the push into the surface (N)
    if fn <= 0.0:
        return
    tx = r[i, 0] + fn * nx
    ty = r[i, 1] + fn * ny
    tz = r[i, 2] + fn * nz
    touching[i] = 1
    if tx * tx + ty * ty + tz * tz <= (env_mu * fn) * (env_mu * fn):
        for q_ in range(9):
            S[i, q_] = 0.0
        for d in range(3):
            x[i, d] = x_prev[i, d]
    else:
        S[i, 0], S[i, 1], S[i, 2] = 1.0 - nx * nx, -nx * ny, -nx * nz
        S[i, 3], S[i, 4], S[i, 5] = -ny * nx, 1.0 - ny * ny, -ny * nz
        S[i, 6], S[i, 7], S[i, 8] = -nz * nx, -nz * ny, 1.0 - nz * nz
        vn = v[i, 0] * nx + v[i, 1] * ny + v[i, 2] * nz
        if vn < 0.0:
            x[i, 0] -= h * vn * nx
            x[i, 1] -= h * vn * ny
            x[i, 2] -= h * vn * nz


@nb.njit(**FAST)
def _start_force(x_prev, i, mass, gravity, tets, B, k_dev, k_hyd, gamma, start, slots,
                 anchor_verts, anchor_weights, anchor_targets, k_anchor,
                 g_verts, g_weights, targets, k_grasp):  # fmt: skip
    """The static force on vertex i at the frame's start positions (elastic, springs, gravity; no inertia): for a
    vertex the last frame held on a capsule, its contact reaction there plus its own mass times acceleration."""
    a0, a1, a2, _, _, _, _, _, _ = _corner_sums(x_prev, tets, B, k_dev, k_hyd, gamma, start, slots, i)
    for springs in range(2):
        verts = anchor_verts if springs == 0 else g_verts
        weights = anchor_weights if springs == 0 else g_weights
        tg = anchor_targets if springs == 0 else targets
        k = k_anchor if springs == 0 else k_grasp
        for g in range(verts.shape[0]):
            for c in range(3):
                if verts[g, c] == i:
                    w = weights[g, c]
                    a0 += w * k * (_spring_point(x_prev, verts, weights, g, 0) - tg[g, 0])
                    a1 += w * k * (_spring_point(x_prev, verts, weights, g, 1) - tg[g, 1])
                    a2 += w * k * (_spring_point(x_prev, verts, weights, g, 2) - tg[g, 2])
    return mass[i] * gravity[0] - a0, mass[i] * gravity[1] - a1, mass[i] * gravity[2] - a2


@nb.njit(**FAST)
def _instrument_filter(x, x_prev, free, cand_verts, cand_weights, cand_inst, cap_inst, cap_r, cap_active, wa, wb, S,
                       touching, mass, gravity, tets, B, k_dev, k_hyd, gamma, start, slots,
                       anchor_verts, anchor_weights, anchor_targets, k_anchor,
                       g_verts, g_weights, targets, k_grasp):  # fmt: skip
    """Contact candidates (vertices, surface triangles' centres) that at the frame's start (x_prev) are at or
    inside an instrument's capsule in its end-of-frame pose (wa-wb): each of their vertices that the static force
    at the start positions (_start_force) presses into the capsule slides along it (S = I - n n^T, n the
    capsule's normal at the point), touching = 2 + the instrument's row; a vertex candidate starts where it was,
    moved onto the capsule's surface (not where its velocity would take it: a stiff body's one-frame rebound
    would carry it through a thin capsule).

    Pressed is judged at the start positions, not at the Newton start x + h v: at a vertex the last frame held,
    that force is the last frame's contact reaction (plus its own inertia, small where the capsule holds it), so
    the contact set carries over while the capsule pushes. Judged at x + h v, the neighbours' momentum flipped
    it: a soft block pressed by a lying shaft chattered with a row of vertices in one frame and out the next,
    never at rest, its force 12% low on the frames out. Within INSTRUMENT_REACH of the surface counts: sliding
    along the tangent plane of a round capsule, and the projection of triangles' centres, leave points a little
    off it. (A triangle's centre filters each of its vertices, the far one too: on stiff tissue that holds a
    little more than the point itself would, see physics.fidelity.press.)"""
    for c in range(cand_inst.size):
        k = cand_inst[c]
        vertex = cand_weights[c, 0] == 1.0
        for j in range(cap_inst.size):
            if cap_inst[j] != k or not cap_active[j]:
                continue
            px = py = pz = 0.0
            for q in range(3):
                v, w = cand_verts[c, q], cand_weights[c, q]
                px += w * x_prev[v, 0]
                py += w * x_prev[v, 1]
                pz += w * x_prev[v, 2]
            _, rx, ry, rz = segment_offset(px, py, pz, wa, wb, j)
            dist = math.sqrt(rx * rx + ry * ry + rz * rz)
            if dist > cap_r[j] + INSTRUMENT_REACH or dist < 1e-12:
                continue
            nx, ny, nz = rx / dist, ry / dist, rz / dist
            for q in range(1 if vertex else 3):
                i = cand_verts[c, q]
                if free[i] == 0.0 or touching[i] != 0:
                    continue
                f0, f1, f2 = _start_force(
                    x_prev, i, mass, gravity, tets, B, k_dev, k_hyd, gamma, start, slots,
                    anchor_verts, anchor_weights, anchor_targets, k_anchor, g_verts, g_weights, targets, k_grasp,
                )  # fmt: skip
                if f0 * nx + f1 * ny + f2 * nz >= 0.0:  # not pressed into it: free to leave
                    continue
                if vertex:
                    push = cap_r[j] - dist
                    x[i, 0] = x_prev[i, 0] + push * nx
                    x[i, 1] = x_prev[i, 1] + push * ny
                    x[i, 2] = x_prev[i, 2] + push * nz
                touching[i] = 2 + k
                S[i, 0], S[i, 1], S[i, 2] = 1.0 - nx * nx, -nx * ny, -nx * nz
                S[i, 3], S[i, 4], S[i, 5] = -ny * nx, 1.0 - ny * ny, -ny * nz
                S[i, 6], S[i, 7], S[i, 8] = -nz * nx, -nz * ny, 1.0 - nz * nz
            break


@nb.njit(inline="always", **FAST)
def _filter(S, i, a, b, c):
    """(a, b, c) through vertex i's contact filter S[i] (3x3 row-major: identity, I - n n^T or zero)."""
    return (
        S[i, 0] * a + S[i, 1] * b + S[i, 2] * c,
        S[i, 3] * a + S[i, 4] * b + S[i, 5] * c,
        S[i, 6] * a + S[i, 7] * b + S[i, 8] * c,
    )


@nb.njit(inline="always", **FAST)
def _spring_point(x, verts, weights, g, d):
    return weights[g, 0] * x[verts[g, 0], d] + weights[g, 1] * x[verts[g, 1], d] + weights[g, 2] * x[verts[g, 2], d]


@nb.njit(**FAST)
def _springs_gradient(x, verts, weights, targets, stiffness, grad, diag):
    """Add the springs' gradient (stiffness * (p - target) spread by weight) and diagonal blocks (diag: n, 6),
    serially."""
    for g in range(verts.shape[0]):
        for d in range(3):
            r = stiffness * (_spring_point(x, verts, weights, g, d) - targets[g, d])
            for c in range(3):
                grad[verts[g, c], d] += weights[g, c] * r
        for c in range(3):
            w2 = weights[g, c] * weights[g, c] * stiffness
            v = verts[g, c]
            diag[v, 0] += w2
            diag[v, 3] += w2
            diag[v, 5] += w2


@nb.njit(**FAST)
def _springs_change(x, dx, t, verts, weights, targets, stiffness):
    """Change of the springs' energy from x to x + t dx: k/2 t dp . (t dp + 2 (p - target)), serially."""
    total = 0.0
    for g in range(verts.shape[0]):
        for d in range(3):
            dp = t * _spring_point(dx, verts, weights, g, d)
            total += 0.5 * stiffness * dp * (dp + 2.0 * (_spring_point(x, verts, weights, g, d) - targets[g, d]))
    return total


@nb.njit(**FAST)
def _springs_direction(z, p, beta, verts, weights, stiffness, out):
    """Add the springs' Hessian times the direction z + beta p to out, serially."""
    for g in range(verts.shape[0]):
        for d in range(3):
            point = 0.0
            for c in range(3):
                v = verts[g, c]
                point += weights[g, c] * (z[v, d] + beta * p[v, d])
            r = stiffness * point
            for c in range(3):
                out[verts[g, c], d] += weights[g, c] * r


@nb.njit(**FAST)
def _springs_clear(verts, out):
    for g in range(verts.shape[0]):
        for c in range(3):
            for d in range(3):
                out[verts[g, c], d] = 0.0


@nb.njit(**FAST)
def _corner_sums(x, tets, B, k_dev, k_hyd, gamma, start, slots, v):
    """Vertex v's elastic gradient and diagonal block (xx xy xz yy yz zz) at x: its tets' corner rows summed in
    slot (tet) order, each tet evaluated as tet_setup does, so the same bits as that pass."""
    a0 = a1 = a2 = 0.0
    d0 = d1 = d2 = d3 = d4 = d5 = 0.0
    for k in range(start[v], start[v + 1]):
        t = slots[k] // 4
        a = slots[k] % 4
        gx, gy, gz, bb, g0, g1, g2 = _corner_values(x, tets, B, k_dev, k_hyd, gamma, t, a)
        kh = k_hyd[t]
        a0 += gx
        a1 += gy
        a2 += gz
        d0 += bb + kh * g0 * g0
        d1 += kh * g0 * g1
        d2 += kh * g0 * g2
        d3 += bb + kh * g1 * g1
        d4 += kh * g1 * g2
        d5 += bb + kh * g2 * g2
    return a0, a1, a2, d0, d1, d2, d3, d4, d5


@nb.njit(**FAST)
def _springs_gradient_at(x, verts, weights, targets, stiffness, mark, grad, diag):
    """_springs_gradient for the marked vertices alone: the same adds in the same order."""
    for g in range(verts.shape[0]):
        if mark[verts[g, 0]] == 0 and mark[verts[g, 1]] == 0 and mark[verts[g, 2]] == 0:
            continue
        for d in range(3):
            r = stiffness * (_spring_point(x, verts, weights, g, d) - targets[g, d])
            for c in range(3):
                if mark[verts[g, c]] != 0:
                    grad[verts[g, c], d] += weights[g, c] * r
        for c in range(3):
            w2 = weights[g, c] * weights[g, c] * stiffness
            v = verts[g, c]
            if mark[v] != 0:
                diag[v, 0] += w2
                diag[v, 3] += w2
                diag[v, 5] += w2


@nb.njit(**FAST)
def _marked_gradient(x, tets, B, k_dev, k_hyd, gamma, start, slots, mark, grad, diag,
                     anchor_verts, anchor_weights, anchor_targets, k_anchor,
                     g_verts, g_weights, targets, k_grasp):  # fmt: skip
    """grad and diag (elastic and springs, not inertia) of the marked vertices at x, as the full pass gives them."""
    for v in range(x.shape[0]):
        if mark[v] != 0:
            a0, a1, a2, d0, d1, d2, d3, d4, d5 = _corner_sums(x, tets, B, k_dev, k_hyd, gamma, start, slots, v)
            grad[v, 0], grad[v, 1], grad[v, 2] = a0, a1, a2
            diag[v, 0], diag[v, 1], diag[v, 2], diag[v, 3], diag[v, 4], diag[v, 5] = d0, d1, d2, d3, d4, d5
    _springs_gradient_at(x, anchor_verts, anchor_weights, anchor_targets, k_anchor, mark, grad, diag)
    _springs_gradient_at(x, g_verts, g_weights, targets, k_grasp, mark, grad, diag)


@nb.njit(**FAST)
def _local_refresh(x, y, mh, free, tets, B, k_dev, k_hyd, gamma, start, slots, touching, Fs, Cs, geo, energy,
                   grad, diag, r, dx, mark, anchor_verts, anchor_weights, anchor_targets, k_anchor,
                   g_verts, g_weights, targets, k_grasp, limit):  # fmt: skip
    """After the contact filter moved the touching vertices' start: the setup pass again for what that changed
    alone (the touching vertices' tets' state; gradient, diagonal, residual of every vertex of those tets and of
    the springs on a moved vertex), the same bits as the full pass. False (nothing done) when the vertices to
    re-sum have more than `limit` of all corner slots: then the full pass is cheaper."""
    n = x.shape[0]
    for i in range(n):
        mark[i] = 0
    for i in range(n):
        if touching[i] != 0:
            for k in range(start[i], start[i + 1]):
                t = slots[k] // 4
                for a in range(4):
                    mark[tets[t, a]] = 1
    for springs in range(2):
        verts = anchor_verts if springs == 0 else g_verts
        for g in range(verts.shape[0]):
            if touching[verts[g, 0]] != 0 or touching[verts[g, 1]] != 0 or touching[verts[g, 2]] != 0:
                for c in range(3):
                    mark[verts[g, c]] = 1
    corners = 0
    for i in range(n):
        if mark[i] != 0:
            corners += start[i + 1] - start[i]
    if corners > limit * start[n]:
        return False
    for i in range(n):
        if touching[i] != 0:
            for k in range(start[i], start[i + 1]):
                t = slots[k] // 4
                _keep_state(Fs, Cs, geo, energy, t, k_dev[t], _tet_state(x, tets, B, k_dev, k_hyd, gamma, t))
    _marked_gradient(
        x, tets, B, k_dev, k_hyd, gamma, start, slots, mark, grad, diag,
        anchor_verts, anchor_weights, anchor_targets, k_anchor, g_verts, g_weights, targets, k_grasp,
    )  # fmt: skip
    for i in range(n):
        if mark[i] != 0:
            for d in range(3):
                grad[i, d] += mh[i] * (x[i, d] - y[i, d])
                r[i, d] = -grad[i, d] * free[i]
                dx[i, d] = 0.0
    return True


def _solve_frame(
    x, v, inv_mass, mass, damping, gravity, dt, newton_steps, cg_iterations, max_speed,
    tets, B, Bt, k_dev, k_hyd, gamma, start, slots, shared, shared_ids, agg, coarse_factor, work,
    anchor_verts, anchor_weights, anchor_targets, anchor_alpha,
    planes, spheres, boxes, env_mu,
    p0, q0, j0, p1, q1, j1, inst_mu, cap_inst, cap_local, cap_r, cap_active,
    cand_verts, cand_weights, cand_inst,
    g_inst, g_verts, g_weights, g_local, g_alpha,
    out_inst_force, out_anchor_force, out_grasp_force, out_counts, out_residual, out_stats,
):  # fmt: skip
    Fs, Cs, geo, e_old, rows7, rows3, x_prev, y, free, mh, grad, diag, inv_diag, r, z, p, q, dx, S, sq, touching = work
    direct = _DIRECT
    n = x.shape[0]
    h = dt
    inv_h2 = 1.0 / (h * h)
    k_inst = p0.shape[0]
    P = np.empty((k_inst, 3))
    R = np.empty((k_inst, 9))
    jaw = np.empty(k_inst)
    pa = np.empty((cap_inst.size, 3))
    pb = np.empty((cap_inst.size, 3))
    wa = np.empty((cap_inst.size, 3))
    wb = np.empty((cap_inst.size, 3))
    targets = np.empty((g_inst.size, 3))
    interpolate_frames(p0, q0, j0, p1, q1, j1, 0.0, P, R, jaw)
    world_capsules(cap_inst, cap_local, P, R, jaw, pa, pb)
    interpolate_frames(p0, q0, j0, p1, q1, j1, 1.0, P, R, jaw)
    world_capsules(cap_inst, cap_local, P, R, jaw, wa, wb)
    grasp_targets(g_inst, g_local, P, R, targets)
    k_anchor = 1.0 / anchor_alpha
    k_grasp = 1.0 / g_alpha
    partial = np.empty(3 * DOT_BLOCKS)
    mark = np.empty(n, np.uint8)  # vertices whose gradient a local refresh or the contact reaction re-sums
    rc = np.empty(coarse_factor.shape[0])
    yc = np.empty(coarse_factor.shape[0])
    rq = np.empty(coarse_factor.shape[0])

    for i in nb.prange(n):
        free[i] = 1.0 if inv_mass[i] > 0.0 else 0.0
        mh[i] = mass[i] * inv_h2
        touching[i] = 0
        sq[i, 0] = sq[i, 1] = sq[i, 2] = 0.0  # the springs' part of a product (zero but at spring vertices)
        for d in range(3):
            grad[i, d] = 0.0  # the tets add their corners at vertices that are not shared into these
        for d in range(6):
            diag[i, d] = 0.0
        for q_ in range(9):
            S[i, q_] = 1.0 if q_ % 4 == 0 else 0.0
        for d in range(3):
            x_prev[i, d] = x[i, d]
            y[i, d] = x[i, d] + free[i] * (h * v[i, d] + h * h * gravity[d])
            # Newton starts from the motion without gravity's pull of this frame: at rest that is x itself, so
            # the frame's fixed point is where the gradient of the static energy vanishes (exact equilibrium
            # whatever the Hessian's approximation and the CG budget); starting from y would leave a bias.
            x[i, d] = x[i, d] + free[i] * h * v[i, d]

    residual = 0.0
    newton = 0
    classified = False
    zeroed = True  # grad and diag (zeroed with the frame's start above; again before another setup pass)
    while newton < newton_steps:
        if not zeroed:
            for i in nb.prange(n):
                for d in range(3):
                    grad[i, d] = 0.0
                for d in range(6):
                    diag[i, d] = 0.0
        zeroed = False
        _tet_setup(x, tets, B, Bt, k_dev, k_hyd, gamma, Fs, Cs, geo, e_old, rows7, grad, diag, direct, shared)
        if not direct:
            _gather_setup(rows7, start, slots, k_hyd, grad, diag, shared_ids)
        _springs_gradient(x, anchor_verts, anchor_weights, anchor_targets, k_anchor, grad, diag)
        _springs_gradient(x, g_verts, g_weights, targets, k_grasp, grad, diag)
        classify = not classified
        classified = True
        for i in nb.prange(n):
            for d in range(3):
                grad[i, d] += mh[i] * (x[i, d] - y[i, d])
                r[i, d] = -grad[i, d] * free[i]
                dx[i, d] = 0.0
            if classify:
                _environment_filter(x, x_prev, v, r, free, S, touching, i, planes, spheres, boxes, env_mu, h)
        if classify:
            # Instrument contact the same way, against the capsules' end-of-frame pose: a tissue point at (or
            # within reach of) a capsule at the frame's start and pressed into it there slides along it (its
            # vertices' normal motion filtered out), so the solve holds it there and its reaction is the
            # contact force (added after the solve). Serially, candidates in order.
            _instrument_filter(
                x, x_prev, free, cand_verts, cand_weights, cand_inst, cap_inst, cap_r, cap_active, wa, wb, S,
                touching, mass, gravity, tets, B, k_dev, k_hyd, gamma, start, slots,
                anchor_verts, anchor_weights, anchor_targets, k_anchor, g_verts, g_weights, targets, k_grasp,
            )  # fmt: skip
            if touching.sum() > 0 and not _local_refresh(
                x, y, mh, free, tets, B, k_dev, k_hyd, gamma, start, slots, touching, Fs, Cs, geo, e_old,
                grad, diag, r, dx, mark, anchor_verts, anchor_weights, anchor_targets, k_anchor,
                g_verts, g_weights, targets, k_grasp, LOCAL_REFRESH,
            ):  # fmt: skip
                continue  # many moved: the whole setup pass again
        for blk in nb.prange(DOT_BLOCKS):  # the filtered residual, the preconditioner's blocks and r . r
            lo, hi = _block(blk, n)
            acc = 0.0
            for i in range(lo, hi):
                r[i, 0], r[i, 1], r[i, 2] = _filter(S, i, r[i, 0], r[i, 1], r[i, 2])
                a, b, c = diag[i, 0] + mh[i], diag[i, 1], diag[i, 2]
                d_, e, f = diag[i, 1], diag[i, 3] + mh[i], diag[i, 4]
                g_, hh, k = diag[i, 2], diag[i, 4], diag[i, 5] + mh[i]
                co0 = e * k - f * hh
                co1 = f * g_ - d_ * k
                co2 = d_ * hh - e * g_
                det = a * co0 + b * co1 + c * co2
                inv = 0.0 if free[i] == 0.0 or det <= 0.0 else 1.0 / det
                inv_diag[i, 0] = co0 * inv
                inv_diag[i, 1] = (c * hh - b * k) * inv
                inv_diag[i, 2] = (b * f - c * e) * inv
                inv_diag[i, 3] = co1 * inv
                inv_diag[i, 4] = (a * k - c * g_) * inv
                inv_diag[i, 5] = (c * d_ - a * f) * inv
                inv_diag[i, 6] = co2 * inv
                inv_diag[i, 7] = (b * g_ - a * hh) * inv
                inv_diag[i, 8] = (a * e - b * d_) * inv
                p[i, 0] = p[i, 1] = p[i, 2] = 0.0  # the first direction is z + 0 p
                q[i, 0] = q[i, 1] = q[i, 2] = 0.0
                acc += r[i, 0] * r[i, 0]
                acc += r[i, 1] * r[i, 1]
                acc += r[i, 2] * r[i, 2]
            partial[blk] = acc

        residual = math.sqrt(_sum_blocks(partial, 0))  # as _dot(r, r) sums it
        # Three parallel passes an iteration: the tets' product, the vertices' gather and finish (with p . q),
        # the update and preconditioner (with r . z). The coarse right-hand side P^T r follows the update
        # (P^T r -= alpha P^T q), so the coarse solve sits between the second and the third.
        nc = coarse_factor.shape[0]
        if nc > 0:
            _restrict(r, agg, rc)
            solve_coarse(coarse_factor, rc, yc)
        rz = _update_precondition(dx, r, p, q, 0.0, inv_diag, S, z, agg, yc, nc, True, partial)
        beta = 0.0
        for _it in range(cg_iterations):
            if rz <= 0.0:
                break
            if direct:  # one thread: the direction once per vertex, not per corner (the same bits)
                for i in range(n):
                    for d in range(3):
                        p[i, d] = z[i, d] + beta * p[i, d]
                zz, bb = p, 0.0  # p + 0 p is p
            else:
                zz, bb = z, beta
            _tet_product(zz, p, bb, tets, Bt, k_dev, k_hyd, Fs, Cs, geo, rows3, q, direct, shared)
            _springs_direction(zz, p, bb, anchor_verts, anchor_weights, k_anchor, sq)
            _springs_direction(zz, p, bb, g_verts, g_weights, k_grasp, sq)
            pq = _finish_product(zz, p, bb, q, sq, mh, free, S, rows3, start, slots, not direct, shared, partial)
            _springs_clear(anchor_verts, sq)
            _springs_clear(g_verts, sq)
            if not pq > 0.0:  # no curvature left along p (or NaN): keep what CG has
                break
            alpha = rz / pq
            if nc > 0:
                _restrict(q, agg, rq)
                for j in range(nc):
                    rc[j] -= alpha * rq[j]
                solve_coarse(coarse_factor, rc, yc)
            rz_new = _update_precondition(dx, r, p, q, alpha, inv_diag, S, z, agg, yc, nc, True, partial)
            beta = rz_new / rz
            rz = rz_new
            out_stats[1] += 1
        # Backtracking line search on the frame's energy (its exact change: inertia and springs in closed form,
        # the tets one by one from their energies at the start), so a large or nonlinear step cannot raise it;
        # within round-off a step is taken. After the last halving that step is taken anyway.
        t = 1.0
        slope = 0.0
        for ls in range(LINE_SEARCH_HALVINGS + 1):
            change, scale, dot = _trial_change(
                x, dx, t, tets, B, k_dev, k_hyd, gamma, e_old, partial, grad, dx, ls == 0
            )  # the first trial also sums the slope grad . dx
            if ls == 0:
                slope = dot
            inertia = 0.0
            for i in range(n):
                for d in range(3):
                    step = t * dx[i, d]
                    inertia += 0.5 * mh[i] * step * (step + 2.0 * (x[i, d] - y[i, d]))
            change += inertia
            change += _springs_change(x, dx, t, anchor_verts, anchor_weights, anchor_targets, k_anchor)
            change += _springs_change(x, dx, t, g_verts, g_weights, targets, k_grasp)
            if change <= 1e-4 * t * slope + 1e-12 * scale or ls == LINE_SEARCH_HALVINGS:
                break
            t *= 0.5
            out_stats[2] += 1
        for i in nb.prange(n):
            for d in range(3):
                x[i, d] = x[i, d] + t * dx[i, d]
        newton += 1
        out_stats[0] += 1
    out_residual[0] = residual
    held = 0
    for i in range(n):
        held += touching[i] >= 2
    if held > 0:
        # The force each instrument's filtered vertices need to stay on it: the frame's gradient at the solved
        # positions along the filtered normal, (I - S) g (at rest the elastic reaction, like a Lagrange multiplier);
        # the gradient of those vertices alone (their tets), the same bits as a whole setup pass there.
        for i in range(n):
            mark[i] = 1 if touching[i] >= 2 else 0
        _marked_gradient(
            x, tets, B, k_dev, k_hyd, gamma, start, slots, mark, grad, diag,
            anchor_verts, anchor_weights, anchor_targets, k_anchor, g_verts, g_weights, targets, k_grasp,
        )  # fmt: skip
        for i in range(n):
            if touching[i] < 2:
                continue
            k = touching[i] - 2
            g0 = grad[i, 0] + mh[i] * (x[i, 0] - y[i, 0])
            g1 = grad[i, 1] + mh[i] * (x[i, 1] - y[i, 1])
            g2 = grad[i, 2] + mh[i] * (x[i, 2] - y[i, 2])
            a, b, c = _filter(S, i, g0, g1, g2)
            out_inst_force[k, 0] += g0 - a
            out_inst_force[k, 1] += g1 - b
            out_inst_force[k, 2] += g2 - c

    # Forces of the springs at the solved positions (N on the tissue), then contact once per frame.
    for g in range(anchor_verts.shape[0]):
        for d in range(3):
            out_anchor_force[g, d] += -k_anchor * (
                _spring_point(x, anchor_verts, anchor_weights, g, d) - anchor_targets[g, d]
            )
    for g in range(g_verts.shape[0]):
        for d in range(3):
            out_grasp_force[g, d] += -k_grasp * (_spring_point(x, g_verts, g_weights, g, d) - targets[g, d])
    out_counts[0] += instrument_contacts(
        x, x_prev, inv_mass, mass, cand_verts, cand_weights, cand_inst, cap_inst, cap_r, cap_active,
        wa, wb, pa, pb, inst_mu, inv_h2, out_inst_force,
    )  # fmt: skip
    env_hits = 0
    resets = 0
    clamps = 0
    for i in nb.prange(n):
        if inv_mass[i] == 0.0:
            for d in range(3):
                x[i, d] = x_prev[i, d]
                v[i, d] = 0.0
            continue
        env_hits += environment_contact(x, x_prev, i, planes, spheres, boxes, env_mu)
        damp = 1.0 / (1.0 + damping[i] * h)
        vx = (x[i, 0] - x_prev[i, 0]) / h * damp
        vy = (x[i, 1] - x_prev[i, 1]) / h * damp
        vz = (x[i, 2] - x_prev[i, 2]) / h * damp
        outcome = guard_velocity(x, x_prev, v, i, vx, vy, vz, h, max_speed)
        resets += outcome == RESET
        clamps += outcome == CLAMPED
    env_held = 0
    for i in range(n):
        env_held += touching[i] == 1
    out_counts[0] += held  # held on an instrument by the solve's contact filter
    out_counts[1] += env_hits + env_held  # projected, and held by the solve's contact filter
    out_counts[2] += resets
    out_counts[3] += clamps


def frame_workspace(n_tets: int, n_vertices: int, previous: tuple | None = None) -> tuple[np.ndarray, ...]:
    """The frame kernel's arrays for this many live tets and vertices (a FrameTopology keeps one: a frame
    allocates none of its large arrays, whose fresh pages would cost more than the work on them). With the
    previous topology's arrays for as many vertices and at least as many tets (a burn, a cut that adds no
    vertex), the same memory: views of its first n_tets rows (the kernel writes everything before reading it)."""
    m, n = n_tets, n_vertices
    if previous is not None and previous[6].shape[0] == n and previous[2].shape[0] >= m:
        Fs, Cs, geo, e_old, rows7, rows3 = previous[:6]
        Fs, Cs = Fs.reshape(-1)[: 9 * m].reshape(9, m), Cs.reshape(-1)[: 9 * m].reshape(9, m)  # contiguous
        return (Fs, Cs, geo[:m], e_old[:m], rows7[: 4 * m], rows3[: 4 * m], *previous[6:])
    return (
        np.empty((9, m)), np.empty((9, m)), np.empty(m), np.empty(m), np.empty((4 * m, 7)), np.empty((4 * m, 3)),
        np.empty((n, 3)), np.empty((n, 3)), np.empty(n), np.empty(n), np.empty((n, 3)), np.empty((n, 6)),
        np.empty((n, 9)), np.empty((n, 3)), np.empty((n, 3)), np.empty((n, 3)), np.empty((n, 3)), np.empty((n, 3)),
        np.empty((n, 9)), np.zeros((n, 3)), np.zeros(n, np.int64),
    )  # fmt: skip


_DIRECT = False  # the parallel kernels gather the shared vertices' corner rows; the serial twins add every one directly
_PARALLEL = {"parallel": True, "cache": True, **FAST}
_SERIAL = {"cache": True, **FAST}
_KERNELS = (
    "_tet_setup", "_gather_setup", "_tet_product", "_gather_rows", "_dot", "_finish_product",
    "_update_precondition", "_trial_change", "_tet_energies",
)  # fmt: skip
_parallel = {name: nb.njit(**_PARALLEL)(globals()[name]) for name in _KERNELS}
_serial = {name: nb.njit(**_SERIAL)(serial_twin(globals()[name], name.lstrip("_") + "_serial")) for name in _KERNELS}
tet_setup, tet_setup_serial = _parallel["_tet_setup"], _serial["_tet_setup"]
gather_setup, gather_setup_serial = _parallel["_gather_setup"], _serial["_gather_setup"]
tet_product, tet_product_serial = _parallel["_tet_product"], _serial["_tet_product"]
gather_rows, gather_rows_serial = _parallel["_gather_rows"], _serial["_gather_rows"]
tet_energies, tet_energies_serial = _parallel["_tet_energies"], _serial["_tet_energies"]
solve_frame = nb.njit(**_PARALLEL)(serial_twin(_solve_frame, "solve_frame", **_parallel))
# One thread (a room's thread): no parallel launches, each of which takes the GIL back, and the tets add their
# rows straight into the vertices (in tet order, as the gather does). Same order, same bits.
solve_frame_serial = nb.njit(**_SERIAL)(serial_twin(_solve_frame, "solve_frame_serial", _DIRECT=True, **_serial))
