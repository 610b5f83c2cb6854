"""Motion predictors: a deformation basis both ends hold, so that the snapshot codec sends the tissue motion
it explains as three numbers a frame (SNAPSHOT.md 2.4).

A predictor is what a grasp response model measures (``rehearsal.response_model``): for surface vertices
``vertex_ids`` (mesh ids), 3x3 matrices ``G_k`` (metres of vertex motion per metre of *drive*). The server
sends it once on the reliable channel (``snap_predictor``). Every frame it fits the drive ``o`` (3,) to the
surface's displacement since the predictor was made (least squares over its vertices, ``fit_drive``) and
puts ``o`` in the snapshot's drive record; both ends then add ``P_k = G_k o`` to vertex k. The codec
quantizes and sends only ``u = x - P``, the motion the predictors do not explain: while a held flap is
pulled, or springs back, ``u`` is nearly still and costs almost nothing.

All of ``P`` is integer arithmetic, so it is identical on every platform: gains in units of 2^-12
(``GAIN_SHIFT``, int16), drives in 1/16 of a grid step (``FINE``), ``P_k`` in 1/16 grid steps::

    P_k[a] = (sum_b G_k[a, b] * o[b] + 2^11) >> 12        (arithmetic shift; summed over predictors)
    position = (origin + q * step) + P * (step / 16)     (per axis, float64, in this order)

Predictors are keyed by mesh vertex id, so they survive cuts (removed vertices drop out). The server keeps
at most MAX_PREDICTORS (``PredictorSet``): one whose drive has stayed within a grid step of zero for
IDLE_FRAMES is retired (what it predicts is then below the error bound), and beyond the limit the one that
moved least recently goes; the decoder simply stops seeing it in drive records.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numba
import numpy as np

from netcode.sync.patches import PatchLayout

GAIN_SHIFT = 12
GAIN_LIMIT = 32767
"""Gains are int16: |G| < 8 metres per metre of drive."""
FINE = 16
"""Drive and prediction units per grid step."""
MAX_DRIVE = 1 << 24
"""Largest |drive| component in FINE units (a million grid steps: far beyond any room)."""
MAX_PREDICTORS = 8
"""Predictors the server keeps active (the oldest is retired beyond this); a decoder holds twice as many."""
MAX_PREDICTOR_VERTICES = 4096
MAX_PREDICTOR_ID = 0xFFFFFFFF
IDLE_FRAMES = 120
"""Frames a predictor's drive must stay within a grid step of zero before it is retired."""


@dataclass(frozen=True, slots=True)
class Predictor:
    """A deformation basis: sorted unique mesh ``vertex_ids`` (K,) and integer ``gains`` (K, 3, 3)."""

    pid: int
    vertex_ids: np.ndarray
    gains: np.ndarray

    def __post_init__(self) -> None:
        ids, gains = self.vertex_ids, self.gains
        if not 0 <= self.pid <= MAX_PREDICTOR_ID:
            raise ValueError(f"predictor id {self.pid} out of 0..{MAX_PREDICTOR_ID}")
        if ids.ndim != 1 or not 0 < len(ids) <= MAX_PREDICTOR_VERTICES:
            raise ValueError(f"a predictor needs 1..{MAX_PREDICTOR_VERTICES} vertices")
        if ids.min() < 0 or np.any(np.diff(ids) <= 0):
            raise ValueError("predictor vertex ids must be non-negative, sorted and unique")
        if gains.shape != (len(ids), 3, 3) or np.abs(gains).max() > GAIN_LIMIT:
            raise ValueError(f"predictor gains must be ({len(ids)}, 3, 3) integers within +-{GAIN_LIMIT}")

    @classmethod
    def from_response(cls, pid: int, vertex_ids: np.ndarray, matrices: np.ndarray) -> Predictor:
        """Quantize a response model (float matrices, metres per metre) into a predictor, ids sorted."""
        ids = np.asarray(vertex_ids, np.int64).reshape(-1)
        m = np.asarray(matrices, np.float64).reshape(len(ids), 3, 3)
        ids, first = np.unique(ids, return_index=True)
        gains = np.clip(np.rint(m[first] * (1 << GAIN_SHIFT)), -GAIN_LIMIT, GAIN_LIMIT).astype(np.int64)
        return cls(int(pid), ids, gains)

    def rows_in(self, layout: PatchLayout) -> tuple[np.ndarray, np.ndarray]:
        """(layout rows, indices into this predictor) of its vertices that ``layout`` has."""
        rows, found = layout.rows_of(self.vertex_ids)
        return rows[found], np.flatnonzero(found)


_jit = numba.njit(cache=True, nogil=True)


@_jit
def add_fine(gains, sel, rows, drive, out) -> None:
    """``out[rows[j]] += P`` of predictor vertex ``sel[j]`` for ``drive`` (int64 throughout: the shift of
    a negative value rounds toward minus infinity, as the specification's arithmetic shift)."""
    half = 1 << (GAIN_SHIFT - 1)
    for j in range(len(sel)):
        k = sel[j]
        for a in range(3):
            acc = gains[k, a, 0] * drive[0] + gains[k, a, 1] * drive[1] + gains[k, a, 2] * drive[2]
            out[rows[j], a] += (acc + half) >> GAIN_SHIFT


@_jit
def normal_equations(g, sel, rows, x, reference, a, b) -> None:
    """Accumulate ``a += sum G_k^T G_k`` and ``b += sum G_k^T (x[row] - reference[k])`` over the pairs."""
    for j in range(len(sel)):
        k = sel[j]
        r = rows[j]
        d0 = x[r, 0] - reference[k, 0]
        d1 = x[r, 1] - reference[k, 1]
        d2 = x[r, 2] - reference[k, 2]
        for i in range(3):
            b[i] += g[k, 0, i] * d0 + g[k, 1, i] * d1 + g[k, 2, i] * d2
            for m in range(3):
                a[i, m] += g[k, 0, i] * g[k, 0, m] + g[k, 1, i] * g[k, 1, m] + g[k, 2, i] * g[k, 2, m]


def fine_offsets(gains: np.ndarray, drive: np.ndarray) -> np.ndarray:
    """``P`` (K, 3) in FINE units of one predictor's vertices for drive ``o`` (3,) in FINE units."""
    k = np.arange(len(gains), dtype=np.int64)
    out = np.zeros((len(gains), 3), np.int64)
    add_fine(np.ascontiguousarray(gains, np.int64), k, k, np.asarray(drive, np.int64), out)
    return out


class PredictionField:
    """The predictors of one layout (epoch) and what they add to each row for a set of drives."""

    def __init__(self, layout: PatchLayout) -> None:
        self.layout = layout
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def rows(self, predictor: Predictor) -> tuple[np.ndarray, np.ndarray]:
        """(layout rows, predictor indices), cached per predictor."""
        hit = self._rows.get(predictor.pid)
        if hit is None:
            hit = self._rows[predictor.pid] = predictor.rows_in(self.layout)
        return hit

    def forget(self, pid: int) -> None:
        self._rows.pop(pid, None)

    def fine(self, active: Iterable[tuple[Predictor, np.ndarray]]) -> np.ndarray | None:
        """Sum of ``P`` (N, 3) int64 FINE units over (predictor, drive) pairs; None when there is none."""
        out = None
        for predictor, drive in active:
            rows, sel = self.rows(predictor)
            if len(rows) == 0 or not np.any(drive):
                continue
            if out is None:
                out = np.zeros((self.layout.vertex_count, 3), np.int64)
            add_fine(predictor.gains, sel, rows, drive, out)
        return out


def fine_to_metres(fine: np.ndarray, step: float) -> np.ndarray:
    """FINE units to metres (``step / FINE`` is exact: FINE is a power of two)."""
    return fine.astype(np.float64) * (step / FINE)


def fit_drive(g: np.ndarray, displacement: np.ndarray, step: float) -> np.ndarray:
    """The drive (3,) int64 FINE units whose prediction with gains ``g`` (K, 3, 3) metres per metre best
    matches ``displacement`` (K, 3) metres since the predictor was made (least squares; 0 when still)."""
    k = np.arange(len(g), dtype=np.int64)
    a, b = np.zeros((3, 3)), np.zeros(3)
    normal_equations(np.ascontiguousarray(g, np.float64), k, k, displacement, np.zeros_like(displacement), a, b)
    return solve_drive(a, b, step)


def solve_drive(a: np.ndarray, b: np.ndarray, step: float) -> np.ndarray:
    """The least-squares drive of the normal equations ``a o = b``, in FINE units (0 when degenerate)."""
    scale = np.trace(a)
    if not scale > 0 or not np.all(np.isfinite(b)):
        return np.zeros(3, np.int64)
    try:
        o = np.linalg.solve(a + np.eye(3) * (1e-9 * scale), b)
    except np.linalg.LinAlgError:
        return np.zeros(3, np.int64)
    if not np.all(np.isfinite(o)):
        return np.zeros(3, np.int64)
    return np.clip(np.rint(o / (step / FINE)), -MAX_DRIVE, MAX_DRIVE).astype(np.int64)


@dataclass(slots=True)
class _Tracked:
    predictor: Predictor
    reference: np.ndarray  # (K, 3) metres: each vertex when the predictor was made (NaN until seen)
    gains: np.ndarray  # (K, 3, 3) float64 metres per metre (the quantized gains)
    anchor: np.ndarray  # the drive when it last moved by more than a grid step
    moved: int  # the frame it did


class PredictorSet:
    """The server's active predictors: made from response models, fitted to every frame, retired."""

    def __init__(self) -> None:
        self._active: OrderedDict[int, _Tracked] = OrderedDict()
        self._next = 1

    def __len__(self) -> int:
        return len(self._active)

    def predictors(self) -> list[Predictor]:
        return [t.predictor for t in self._active.values()]

    def add(
        self, vertex_ids: np.ndarray, matrices: np.ndarray, field: PredictionField, truth: np.ndarray | None, frame: int
    ) -> Predictor:
        """A new predictor whose drive is measured from ``truth`` (the surface now, layout order; None: from
        the next frame); beyond MAX_PREDICTORS the one that moved least recently is retired."""
        predictor = Predictor.from_response(self._next, vertex_ids, matrices)
        self._next += 1
        reference = np.full((len(predictor.vertex_ids), 3), np.nan)
        if truth is not None and len(truth) == field.layout.vertex_count:
            rows, sel = field.rows(predictor)
            reference[sel] = truth[rows]
        gains = predictor.gains.astype(np.float64) / (1 << GAIN_SHIFT)
        self._active[predictor.pid] = _Tracked(predictor, reference, gains, np.zeros(3, np.int64), frame)
        while len(self._active) > MAX_PREDICTORS:
            oldest = min(self._active.values(), key=lambda t: t.moved)
            self._retire(oldest.predictor.pid, field)
        return predictor

    def fit(self, field: PredictionField, x: np.ndarray, step: float, frame: int) -> list[tuple[Predictor, np.ndarray]]:
        """Each active predictor's drive for surface ``x`` (layout order), after retiring idle ones."""
        out = []
        for pid, t in list(self._active.items()):
            rows, sel = field.rows(t.predictor)
            unseen = np.isnan(t.reference[sel, 0])
            if unseen.any():
                t.reference[sel[unseen]] = x[rows[unseen]]
            a, b = np.zeros((3, 3)), np.zeros(3)
            normal_equations(t.gains, sel, rows, x, t.reference, a, b)
            drive = solve_drive(a, b, step)
            if np.abs(drive - t.anchor).max() > FINE:
                t.anchor, t.moved = drive, frame
            elif frame - t.moved >= IDLE_FRAMES and np.abs(drive).max() <= FINE:
                self._retire(pid, field)
                continue
            out.append((t.predictor, drive))
        return out

    def _retire(self, pid: int, field: PredictionField) -> None:
        del self._active[pid]
        field.forget(pid)


def pack_gains(gains: np.ndarray) -> bytes:
    """zlib(little-endian int32 differences, vertex to vertex, of the (K, 3, 3) gains): neighbouring
    vertices respond alike, so the differences are small and compress well."""
    g = np.asarray(gains, np.int64).reshape(-1, 9)
    return zlib.compress(np.diff(g, axis=0, prepend=0).astype("<i4").tobytes(), 6)


def unpack_gains(data: bytes, k: int) -> np.ndarray:
    """Inverse of ``pack_gains`` for K vertices; ValueError when malformed or out of the int16 range."""
    want = k * 9 * 4
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, want + 1)
    except zlib.error as exc:
        raise ValueError(f"bad compressed gains ({exc})") from None
    if len(raw) != want or not inflater.eof or inflater.unused_data:
        raise ValueError(f"gains: expected {want} bytes for {k} vertices")
    gains = np.cumsum(np.frombuffer(raw, "<i4").astype(np.int64).reshape(k, 9), axis=0)
    if k and np.abs(gains).max() > GAIN_LIMIT:
        raise ValueError(f"gains beyond +-{GAIN_LIMIT}")
    return gains.reshape(k, 3, 3)
