"""Rigid poses and the quaternion arithmetic the thin client needs (plain numpy, no physics import).

Conventions (the same in CLIENT.md and on the wire): positions in metres; rotations as unit
quaternions stored ``(x, y, z, w)`` (Unity's order); ``jaw`` is the instrument's jaw opening in
radians (0 for objects without jaws). ``q`` and ``-q`` are the same rotation; interpolation always
takes the short way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])
_FLOAT64 = np.dtype(np.float64)


def _float64_array(value: object, shape: tuple[int, ...]) -> np.ndarray:
    """``np.asarray(value, dtype=np.float64).reshape(shape)``, without the calls when it already is one."""
    if type(value) is np.ndarray and value.dtype is _FLOAT64 and value.shape == shape:
        return value
    return np.asarray(value, dtype=np.float64).reshape(shape)


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternion; the identity for a zero or non-finite input (never NaN)."""
    if type(q) is not np.ndarray or q.dtype is not _FLOAT64:
        q = np.asarray(q, dtype=np.float64)
    n = math.sqrt(q.dot(q)) if q.ndim == 1 else float(np.linalg.norm(q))  # np.linalg.norm's formula, less overhead
    if not math.isfinite(n) or n < 1e-12:
        return IDENTITY.copy()
    return q / n


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` (apply ``b`` first, then ``a``) for (x, y, z, w) quaternions."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Inverse of a unit quaternion."""
    return np.array([-q[0], -q[1], -q[2], q[3]])


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, radians, angle in [0, pi]) of a unit quaternion."""
    q = quat_normalize(q)
    if q[3] < 0.0:
        q = -q
    s = float(np.linalg.norm(q[:3]))
    if s < 1e-12:
        return 2.0 * q[:3]  # first order
    angle = 2.0 * math.atan2(s, q[3])
    return q[:3] * (angle / s)


def rotvec_to_quat(v: np.ndarray) -> np.ndarray:
    """Unit quaternion of a rotation vector (axis * angle, radians)."""
    v = np.asarray(v, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return quat_normalize(np.array([v[0] / 2, v[1] / 2, v[2] / 2, 1.0]))
    half = angle / 2.0
    return np.concatenate([v * (math.sin(half) / angle), [math.cos(half)]])


def slerp(a: np.ndarray, b: np.ndarray, u: float) -> np.ndarray:
    """Spherical interpolation from ``a`` (u=0) to ``b`` (u=1), the short way; ``u`` > 1 extrapolates."""
    a = quat_normalize(a)
    b = quat_normalize(b)
    if float(np.dot(a, b)) < 0.0:
        b = -b
    # a * exp(u * log(a^-1 b)) works for any u, including extrapolation.
    delta = quat_to_rotvec(quat_mul(quat_conj(a), b))
    return quat_normalize(quat_mul(a, rotvec_to_quat(delta * u)))


def rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vector(s) ``v`` (shape (3,) or (N, 3)) by unit quaternion ``q``."""
    q = quat_normalize(q)
    v = np.asarray(v, dtype=np.float64)
    if v.shape == (3,):  # one vector (a head's gaze per input packet): the same IEEE operations on plain floats
        x, y, z, w = q.tolist()
        a, b, c = v.tolist()
        t0, t1, t2 = 2.0 * (y * c - z * b), 2.0 * (z * a - x * c), 2.0 * (x * b - y * a)
        return np.array(
            [a + w * t0 + (y * t2 - z * t1), b + w * t1 + (z * t0 - x * t2), c + w * t2 + (x * t1 - y * t0)]
        )
    u, w = q[:3], q[3]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


@dataclass(frozen=True, slots=True)
class RigidPose:
    """Position (m, shape (3,)), rotation (unit quaternion x, y, z, w), jaw opening (rad) and whether the
    instrument's energy (cautery pedal) is on."""

    position: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: IDENTITY.copy())
    jaw: float = 0.0
    energy: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", _float64_array(self.position, (3,)))
        object.__setattr__(self, "rotation", quat_normalize(_float64_array(self.rotation, (4,))))
        object.__setattr__(self, "jaw", float(self.jaw))
        object.__setattr__(self, "energy", bool(self.energy))

    def is_finite(self) -> bool:
        x, y, z = self.position.tolist()  # three floats: cheaper than numpy's reductions on a tiny array
        return math.isfinite(x) and math.isfinite(y) and math.isfinite(z) and math.isfinite(self.jaw)


def interpolate_pose(a: RigidPose, b: RigidPose, u: float) -> RigidPose:
    """Pose between ``a`` (u=0) and ``b`` (u=1): lerp position and jaw, slerp rotation; u > 1 extrapolates."""
    return RigidPose(
        a.position + (b.position - a.position) * u,
        slerp(a.rotation, b.rotation, u),
        a.jaw + (b.jaw - a.jaw) * u,
        b.energy if u >= 0.5 else a.energy,
    )


def interpolate_vertices(a: np.ndarray, b: np.ndarray, u: float) -> np.ndarray:
    """Vertex array between ``a`` and ``b`` (same shape (N, 3)); ``u`` > 1 extrapolates linearly."""
    if a.shape != b.shape:
        return b.copy()  # membership changed: no meaningful blend, take the newer one
    return a + (b - a) * u
