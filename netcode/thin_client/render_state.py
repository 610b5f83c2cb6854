"""Plain data in and out of the thin client: decoded snapshot objects, and the render state to draw.

Why: the client logic must not depend on the snapshot codec's classes; a thin adapter turns whatever
the codec decodes into ``SnapshotObject``s. What comes out (``RenderState``) is what a renderer needs
and nothing else: per object, a pose or a vertex array, and where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from netcode.protocol.poses import RigidPose


class ObjectKind(Enum):
    RIGID = "rigid"  # instruments, jaws, heads, hands: a RigidPose
    PATCH = "patch"  # a tissue surface patch: an (N, 3) vertex array in metres


@dataclass(frozen=True, slots=True)
class SnapshotObject:
    """One decoded object of one snapshot: id, kind, the server time of its state, and that state.

    ``pose`` is set for RIGID, ``vertices`` ((N, 3), metres) for PATCH. ``epoch`` is the topology
    epoch the patch's vertex indexing belongs to (0 until the first cut).
    """

    object_id: int
    kind: ObjectKind
    server_time: float
    pose: RigidPose | None = None
    vertices: np.ndarray | None = None
    epoch: int = 0

    def valid(self) -> bool:
        """Carries the state its kind needs, finite."""
        if self.kind is ObjectKind.RIGID:
            return self.pose is not None and self.pose.is_finite()
        v = self.vertices
        return v is not None and v.ndim == 2 and v.shape[1] == 3 and bool(np.all(np.isfinite(v)))


class Source(Enum):
    """Where a drawn object's state came from."""

    INTERPOLATED = "interpolated"  # between two authoritative samples, at render_time
    EXTRAPOLATED = "extrapolated"  # past the newest sample (capped)
    HELD = "held"  # newest (or oldest) sample held: no newer data
    TRACKED = "tracked"  # own device, straight from local tracking
    PREDICTED = "predicted"  # held tissue: newest authoritative + response model + reconciliation


@dataclass(frozen=True, slots=True)
class RenderObject:
    object_id: int
    kind: ObjectKind
    source: Source
    pose: RigidPose | None = None
    vertices: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class SutureShape:
    """The room's suture (``snap_suture``): which rigid object is the needle and how to draw it and the thread.

    The needle is an arc of ``radius`` (m) in its frame's x-y plane about its origin, from angle 0 (the tail,
    where the thread is swaged) to ``arc`` (rad, the tip), a wire of ``wire_radius``; the thread a tube of
    ``thread_radius`` along its polyline."""

    needle: int
    radius: float
    arc: float
    wire_radius: float
    thread_radius: float

    @classmethod
    def from_fields(cls, fields: dict) -> SutureShape:
        """From ``snap_suture`` fields; ValueError for a shape that cannot be drawn."""
        values = [float(fields[k]) for k in ("radius", "arc", "wire_radius", "thread_radius")]
        if not all(np.isfinite(v) and 0 < v < 10 for v in values):
            raise ValueError(f"snap_suture: radius, arc and radii must be finite and positive, got {values}")
        return cls(int(fields["needle"]), *values)

    def needle_points(self, pose: RigidPose, n: int = 24) -> np.ndarray:
        """(n, 3) world points along the needle's arc, tail to tip (for a renderer's tube)."""
        t = np.linspace(0.0, self.arc, n)
        local = np.stack([self.radius * np.cos(t), self.radius * np.sin(t), np.zeros(n)], axis=1)
        return np.asarray(pose.position, np.float64) + local @ _matrix(pose.rotation).T


def _matrix(q) -> np.ndarray:
    """Rotation matrix of a unit quaternion (x, y, z, w)."""
    x, y, z, w = (float(v) for v in q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


@dataclass(frozen=True, slots=True)
class RenderState:
    """Everything to draw at ``local_time``.

    ``server_now``: estimated server clock; ``render_time = server_now - (latency + delay)``: the
    server time at which remote objects are shown (``latency``: measured one-way snapshot transit;
    ``delay``: the adaptive interpolation delay, <= 50 ms); own devices and held tissue are shown at "now".
    """

    local_time: float
    server_now: float
    render_time: float
    delay: float
    latency: float
    objects: dict[int, RenderObject]
    thread: np.ndarray | None = None  # the live suture thread (n, 3) m at render_time (None: no suture)
    suture: SutureShape | None = None  # which object is the needle, and the shapes to draw
    threads: dict[int, np.ndarray] = field(default_factory=dict)  # every thread by id (0 live, 1.. tied pieces)
