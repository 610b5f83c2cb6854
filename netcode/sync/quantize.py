"""Quantization of positions, orientations and scalars to a stated maximum error (see SNAPSHOT.md).

Snapshots never carry floats: every value is turned into a small integer here, and the error that costs
is bounded and stated.

* **Positions**: ``q = rint((x - origin) / step)`` per coordinate, int32, with ``step = 2 * max_error`` by
  default, so ``|x - (origin + q * step)| <= max_error`` on every axis (an L-infinity bound; the
  Euclidean error is at most ``sqrt(3) * max_error``). Decoding is exact arithmetic on the integers.
  ``hysteresis_quantize`` keeps the previous integer while it is still within ``max_error`` of the new
  value: solver jitter smaller than the bound then produces no change at all, which is what makes
  unchanged surface patches cost nothing in the snapshot stream.
* **Orientations**: "smallest three". A unit quaternion ``(x, y, z, w)`` is sign-normalised so its
  largest-magnitude component is positive; that component's index (2 bits) and the other three (each in
  ``[-1/sqrt2, 1/sqrt2]``, ``bits`` bits each) are packed into one integer. ``max_angular_error(bits)``
  is a proven upper bound on the rotation angle between the input and the decoded orientation
  (default 14 bits: 44 bits, 6 bytes on the wire, <= 3.3e-4 rad = 0.019 deg, i.e. <= 0.066 mm at the
  tip of a 20 cm instrument; 10 bits would give 5.3e-3 rad, 1.05 mm at 20 cm).
* **Scalars** (jaw angles...): a clamped range and a bit count; error <= half a step inside the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from netcode.sync.motion_bound import update_bounds

DEFAULT_MAX_ERROR = 1e-4
"""Metres: 0.1 mm per axis."""
DEFAULT_ROTATION_BITS = 14
DEFAULT_JAW_BITS = 12
INT32_LIMIT = 2**31 - 1
_SQRT1_2 = 1.0 / math.sqrt(2.0)


# ------------------------------------------------------------------------------------------ positions


@dataclass(frozen=True, slots=True)
class PositionQuantizer:
    """Uniform grid of spacing ``step`` around ``origin``; every position within ``max_error`` per axis."""

    max_error: float = DEFAULT_MAX_ERROR
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    step: float | None = None
    """Grid spacing; ``None`` means ``2 * max_error``. Must be in ``(0, 2 * max_error]``."""

    def __post_init__(self) -> None:
        if not (self.max_error > 0 and math.isfinite(self.max_error)):
            raise ValueError(f"max_error must be positive and finite, got {self.max_error}")
        if self.step is not None and not (0 < self.step <= 2 * self.max_error):
            raise ValueError(f"step must be in (0, 2 * max_error], got {self.step}")
        if len(self.origin) != 3 or not all(math.isfinite(o) for o in self.origin):
            raise ValueError("origin must be three finite numbers")

    @property
    def grid(self) -> float:
        """The grid spacing actually used."""
        return 2 * self.max_error if self.step is None else self.step

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """int32 grid coordinates of positions ``x`` (..., 3); ValueError if out of the int32 range."""
        return quantize_positions(x, np.asarray(self.origin), self.grid)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """float64 positions of grid coordinates (exact inverse of the grid, error <= max_error)."""
        return dequantize_positions(q, np.asarray(self.origin), self.grid)

    def update(self, x: np.ndarray, q_prev: np.ndarray | None, target: np.ndarray | None = None) -> np.ndarray:
        """Hysteresis quantization against ``q_prev`` (plain quantization when ``None``)."""
        if q_prev is None:
            return self.quantize(x)
        return hysteresis_quantize(x, q_prev, np.asarray(self.origin), self.grid, self.max_error, target)


def quantize_positions(x: np.ndarray, origin: np.ndarray, step: float) -> np.ndarray:
    """``rint((x - origin) / step)`` as int32; ValueError for non-finite or out-of-range input."""
    scaled = (np.asarray(x, dtype=np.float64) - origin) / step
    if not np.all(np.isfinite(scaled)):
        raise ValueError("positions must be finite")
    q = np.rint(scaled)
    if q.size and np.max(np.abs(q)) > INT32_LIMIT:
        raise ValueError("position out of the quantizer's int32 range (move the origin or raise the error)")
    return q.astype(np.int32)


def dequantize_positions(q: np.ndarray, origin: np.ndarray, step: float) -> np.ndarray:
    """``origin + q * step`` in float64."""
    return origin + np.asarray(q, dtype=np.float64) * step


def hysteresis_quantize(
    x: np.ndarray,
    q_prev: np.ndarray,
    origin: np.ndarray,
    step: float,
    max_error: float,
    target: np.ndarray | None = None,
) -> np.ndarray:
    """New int32 grid coordinates: each coordinate keeps ``q_prev`` while ``|x - decode(q_prev)| <= max_error``.

    Otherwise it moves to the grid point nearest ``target`` (default: ``x``) among those within
    ``max_error`` of ``x``. Either way the decoded value is within ``max_error`` of ``x`` (given
    ``step <= 2 * max_error``), and jitter below the bound stops producing changes. A ``target`` that
    tracks the jitter-free motion (``TrendTracker``) lands changed coordinates near the vertex's mean
    position, where the jitter no longer pushes them out again.
    """
    x = np.asarray(x, dtype=np.float64)
    target = x if target is None else np.asarray(target, dtype=np.float64)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(target))):
        raise ValueError("positions must be finite")
    out = np.empty(x.shape, np.int32)
    if not _hysteresis(
        x.reshape(-1, 3),
        np.asarray(q_prev).reshape(-1, 3),
        np.asarray(origin, np.float64),
        step,
        max_error,
        target.reshape(-1, 3),
        out.reshape(-1, 3),
    ):
        raise ValueError("position out of the quantizer's int32 range (move the origin or raise the error)")
    return out


@numba.njit(cache=True, nogil=True)
def _hysteresis(x, q_prev, origin, step, max_error, target, out) -> bool:
    """``hysteresis_quantize`` on (N, 3) rows with the same float operations as ``quantize_positions`` and
    ``dequantize_positions``; False when a changed value leaves the int32 range."""
    for i in range(x.shape[0]):
        for a in range(3):
            o = origin[a]
            xi = x[i, a]
            p = q_prev[i, a]
            if abs(xi - (o + float(p) * step)) <= max_error:
                out[i, a] = p
                continue
            lo = np.ceil((xi - max_error - o) / step)
            hi = np.floor((xi + max_error - o) / step)
            v = min(max(np.rint((target[i, a] - o) / step), lo), hi) if lo <= hi else np.rint((xi - o) / step)
            if abs(v) > INT32_LIMIT:
                return False
            out[i, a] = np.int32(v)
    return True


class TrendTracker:
    """Holt's linear smoothing of positions (level + trend): a jitter-free estimate of where each
    coordinate is heading, used as the ``target`` of ``hysteresis_quantize``. Server-side state only."""

    def __init__(self, alpha: float = 0.3, beta: float = 0.2, lead: float = 2.0) -> None:
        self.alpha, self.beta, self.lead = alpha, beta, lead
        self.level: np.ndarray | None = None
        self.trend: np.ndarray | None = None

    def update(self, x: np.ndarray) -> np.ndarray:
        """Feed this frame's positions; returns the target (level + lead frames of trend)."""
        x = np.asarray(x, dtype=np.float64)
        if self.level is None or self.level.shape != x.shape:
            self.level, self.trend = x.copy(), np.zeros_like(x)
            return x
        x = np.ascontiguousarray(x)
        target = np.empty_like(x)
        _holt(x, self.level, self.trend, self.alpha, self.beta, self.lead, target)
        return target

    def reset(self) -> None:
        self.level = self.trend = None

    def remap(self, rows: np.ndarray, found: np.ndarray) -> None:
        """Keep the state of surviving rows across a re-indexing: new row i was old row ``rows[i]`` where
        ``found[i]``; other rows start afresh from their next position."""
        if self.level is None or self.trend is None:
            return
        level = np.full((len(rows), *self.level.shape[1:]), np.nan)
        trend = np.zeros_like(level)
        level[found] = self.level[rows[found]]
        trend[found] = self.trend[rows[found]]
        self.level, self.trend = level, trend


@numba.njit(cache=True, nogil=True)
def _holt(x, level, trend, alpha, beta, lead, target) -> None:
    """One step of ``TrendTracker.update`` in place (level, trend) on flat views: the numpy expressions'
    operations in the same order, without their temporaries. A NaN level (a row new since a remap) starts
    from x."""
    xs, ls, ts, out = x.reshape(-1), level.reshape(-1), trend.reshape(-1), target.reshape(-1)
    for i in range(xs.shape[0]):
        previous = xs[i] if np.isnan(ls[i]) else ls[i]
        new_level = alpha * xs[i] + (1 - alpha) * (previous + ts[i])
        new_trend = beta * (new_level - previous) + (1 - beta) * ts[i]
        ls[i] = new_level
        ts[i] = new_trend
        out[i] = new_level + lead * new_trend


FRAME_OK, FRAME_NONFINITE, FRAME_RANGE = 0, 1, 2
FRAME_ERRORS = {
    FRAME_NONFINITE: "positions must be finite",
    FRAME_RANGE: "position out of the quantizer's int32 range (move the origin or raise the error)",
}


@numba.njit(cache=True, nogil=True)
def quantize_frame(
    coded, level, trend, alpha, beta, lead, target, q_prev, origin, step, max_error, q,
    ring, at, offsets, moving_error, margin, bounds,
):  # fmt: skip
    """A frame's surface quantization in one call (the GIL released once, not once per part): the trend
    (``TrendTracker.update`` into ``target``, its state in place), ``hysteresis_quantize`` of ``coded`` against
    ``q_prev`` into ``q``, each patch's bound (``MotionBound``: from the ``ring`` slot ``at`` when
    ``moving_error`` > 0, else ``max_error``) less ``margin`` into ``bounds``; the same float operations, in the
    same order, as those functions (the centroids stay numpy's ``reduceat``: its sums round otherwise). Returns
    FRAME_OK or the error found (``FRAME_ERRORS``; the trend is updated by then, as before)."""
    _holt(coded, level, trend, alpha, beta, lead, target)
    for i in range(coded.shape[0]):
        for a in range(3):
            if not (np.isfinite(coded[i, a]) and np.isfinite(target[i, a])):
                return FRAME_NONFINITE
    if not _hysteresis(coded, q_prev, origin, step, max_error, target, q):
        return FRAME_RANGE
    n_p = len(offsets) - 1
    if moving_error > 0:
        update_bounds(coded, ring, at, offsets, max_error, moving_error, bounds)
    else:
        bounds[:] = max_error
    keep = 1 - margin
    for p in range(n_p):
        bounds[p] = bounds[p] * keep
    return FRAME_OK


# ------------------------------------------------------------------------------------------ orientations


def rotation_code_bytes(bits: int = DEFAULT_ROTATION_BITS) -> int:
    """Bytes of one packed orientation: 2 index bits + 3 x ``bits``, rounded up."""
    return (2 + 3 * bits + 7) // 8


def max_angular_error(bits: int = DEFAULT_ROTATION_BITS) -> float:
    """Upper bound (radians) on the angle between a rotation and its smallest-three decoding.

    Each of the three small components is off by at most ``e = (1/sqrt2) / (2^bits - 1)``; the largest
    component is ``sqrt(1 - |s|^2) >= 1/2`` whose slope is at most ``|s| / L <= sqrt3``, so it is off by
    at most ``3e`` (plus a second-order term, covered by the factor 1.1). The quaternion distance is then
    ``d <= sqrt(3e^2 + 9e^2) = 2 sqrt3 e`` and the rotation angle ``4 asin(d / 2)``.
    """
    e = _SQRT1_2 / ((1 << bits) - 1)
    d = 1.1 * 2.0 * math.sqrt(3.0) * e
    return 4.0 * math.asin(min(1.0, d / 2.0))


def encode_rotations(quats: np.ndarray, bits: int = DEFAULT_ROTATION_BITS) -> np.ndarray:
    """Pack unit quaternions (R, 4) as (x, y, z, w) into uint64 smallest-three codes (R,)."""
    if not 1 <= bits <= 20:
        raise ValueError("rotation bits must be 1..20")
    q = np.asarray(quats, dtype=np.float64).reshape(-1, 4)
    norms = np.linalg.norm(q, axis=1)
    if not np.all(np.isfinite(norms)) or np.any(norms < 1e-6):
        raise ValueError("orientations must be finite non-zero quaternions")
    q = q / norms[:, None]
    largest = np.argmax(np.abs(q), axis=1)
    rows = np.arange(len(q))
    q = q * np.where(q[rows, largest] < 0, -1.0, 1.0)[:, None]
    others = _others(largest)
    small = q[rows[:, None], others]  # (R, 3)
    levels = (1 << bits) - 1
    codes = np.clip(np.rint((small + _SQRT1_2) / (2 * _SQRT1_2) * levels), 0, levels).astype(np.uint64)
    out = largest.astype(np.uint64) << np.uint64(3 * bits)
    for k in range(3):
        out |= codes[:, k] << np.uint64((2 - k) * bits)
    return out


def decode_rotations(codes: np.ndarray, bits: int = DEFAULT_ROTATION_BITS) -> np.ndarray:
    """Unit quaternions (R, 4) from smallest-three codes; ValueError on a code with stray high bits."""
    c = np.asarray(codes, dtype=np.uint64).reshape(-1)
    if c.size and int(np.max(c)) >> (2 + 3 * bits):
        raise ValueError("rotation code has bits beyond its width")
    levels = (1 << bits) - 1
    mask = np.uint64(levels)
    largest = (c >> np.uint64(3 * bits)).astype(np.int64)
    small = np.stack([((c >> np.uint64((2 - k) * bits)) & mask).astype(np.float64) for k in range(3)], axis=1)
    small = small / levels * (2 * _SQRT1_2) - _SQRT1_2
    big = np.sqrt(np.maximum(0.0, 1.0 - np.sum(small * small, axis=1)))
    out = np.empty((len(c), 4))
    rows = np.arange(len(c))
    out[rows, largest] = big
    out[rows[:, None], _others(largest)] = small
    return out / np.linalg.norm(out, axis=1)[:, None]


def rotation_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (radians) of the rotation taking quaternion ``a`` to ``b`` (sign-insensitive)."""
    dots = np.abs(np.sum(np.asarray(a, float).reshape(-1, 4) * np.asarray(b, float).reshape(-1, 4), axis=1))
    return 2.0 * np.arccos(np.clip(dots, 0.0, 1.0))


RIGID_OK, RIGID_NONFINITE, RIGID_RANGE, RIGID_BAD_QUATERNION = 0, 1, 2, 3
RIGID_ERRORS = {
    RIGID_NONFINITE: "positions must be finite",
    RIGID_RANGE: "position out of the quantizer's int32 range (move the origin or raise the error)",
    RIGID_BAD_QUATERNION: "orientations must be finite non-zero quaternions",
}


@numba.njit(cache=True, nogil=True)
def rigid_hysteresis(
    positions, quats, jaws, prev_pos, prev_rot, prev_jaw, has_prev, origin, step, max_error, rot_bits, rot_tolerance,
    jaw_lo, jaw_hi, jaw_bits, jaw_max_error, no_jaw, pos, rot, jaw,
):  # fmt: skip
    """Hysteresis quantization of a few rigid objects in one call (numpy's per-call cost dominates at
    this size): fills pos (R, 3) int32, rot (R,) uint64 smallest-three codes, jaw (R,) int64 (``no_jaw`` for
    NaN). An object with ``has_prev`` keeps each previous value while it is still within its bound. The
    float operations are those of quantize_positions, encode/decode_rotations, rotation_angle and
    ScalarQuantizer, in the same order. Returns RIGID_OK or the first error found."""
    levels = (1 << rot_bits) - 1
    width = 2 * _SQRT1_2
    jaw_levels = (1 << jaw_bits) - 1
    for i in range(positions.shape[0]):
        for a in range(3):
            scaled = (positions[i, a] - origin[a]) / step
            if not np.isfinite(scaled):
                return RIGID_NONFINITE
            v = np.rint(scaled)
            if abs(v) > INT32_LIMIT:
                return RIGID_RANGE
            pos[i, a] = np.int32(v)
            if has_prev[i] and abs(positions[i, a] - (origin[a] + float(prev_pos[i, a]) * step)) <= max_error:
                pos[i, a] = prev_pos[i, a]
        q0, q1, q2, q3 = quats[i, 0], quats[i, 1], quats[i, 2], quats[i, 3]
        norm = math.sqrt(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3)
        if not np.isfinite(norm) or norm < 1e-6:
            return RIGID_BAD_QUATERNION
        q = np.array((q0 / norm, q1 / norm, q2 / norm, q3 / norm))
        largest = 0
        for k in range(1, 4):
            if abs(q[k]) > abs(q[largest]):
                largest = k
        sign = -1.0 if q[largest] < 0 else 1.0
        code = np.uint64(largest) << np.uint64(3 * rot_bits)
        shift = 2 * rot_bits
        for k in range(4):
            if k != largest:
                c = min(max(np.rint((q[k] * sign + _SQRT1_2) / width * levels), 0.0), float(levels))
                code |= np.uint64(c) << np.uint64(shift)
                shift -= rot_bits
        rot[i] = code
        if has_prev[i]:
            p = prev_rot[i]
            big_at = np.int64(p >> np.uint64(3 * rot_bits))
            decoded = np.empty(4)
            shift = 2 * rot_bits
            total = 0.0
            for k in range(4):
                if k != big_at:
                    small = float((p >> np.uint64(shift)) & np.uint64(levels)) / levels * width - _SQRT1_2
                    decoded[k] = small
                    total += small * small
                    shift -= rot_bits
            decoded[big_at] = math.sqrt(max(0.0, 1.0 - total))
            d_norm = math.sqrt(
                decoded[0] * decoded[0] + decoded[1] * decoded[1] + decoded[2] * decoded[2] + decoded[3] * decoded[3]
            )
            dot = abs(
                decoded[0] / d_norm * q0
                + decoded[1] / d_norm * q1
                + decoded[2] / d_norm * q2
                + decoded[3] / d_norm * q3
            )
            if 2.0 * math.acos(min(max(dot, 0.0), 1.0)) <= rot_tolerance:
                rot[i] = p
        w = jaws[i]
        if np.isnan(w):
            jaw[i] = no_jaw
            continue
        jaw[i] = np.int64(np.rint((min(max(w, jaw_lo), jaw_hi) - jaw_lo) / (jaw_hi - jaw_lo) * jaw_levels))
        pj = prev_jaw[i]
        if (
            has_prev[i]
            and pj != no_jaw
            and abs(w - (jaw_lo + float(pj) / jaw_levels * (jaw_hi - jaw_lo))) <= jaw_max_error
        ):
            jaw[i] = pj
    return RIGID_OK


def _others(largest: np.ndarray) -> np.ndarray:
    """The three component indices other than ``largest``, ascending: (R, 3)."""
    idx = np.arange(3)[None, :]
    return idx + (idx >= largest[:, None])


# ------------------------------------------------------------------------------------------ scalars


@dataclass(frozen=True, slots=True)
class ScalarQuantizer:
    """A value clamped to ``[lo, hi]`` on ``2^bits`` levels; error <= ``(hi - lo) / (2^bits - 1) / 2`` inside."""

    lo: float = 0.0
    hi: float = math.pi / 2
    bits: int = DEFAULT_JAW_BITS

    def __post_init__(self) -> None:
        if not (self.hi > self.lo and 1 <= self.bits <= 16):
            raise ValueError("scalar quantizer needs hi > lo and 1..16 bits")

    @property
    def max_error(self) -> float:
        return (self.hi - self.lo) / ((1 << self.bits) - 1) / 2

    def quantize(self, v: np.ndarray) -> np.ndarray:
        """uint16-ranged codes (int32 array) of the clamped values; NaN is rejected."""
        v = np.asarray(v, dtype=np.float64)
        if np.any(np.isnan(v)):
            raise ValueError("scalar is NaN")
        levels = (1 << self.bits) - 1
        return np.rint((np.clip(v, self.lo, self.hi) - self.lo) / (self.hi - self.lo) * levels).astype(np.int32)

    def dequantize(self, code: np.ndarray) -> np.ndarray:
        levels = (1 << self.bits) - 1
        return self.lo + np.asarray(code, dtype=np.float64) / levels * (self.hi - self.lo)
