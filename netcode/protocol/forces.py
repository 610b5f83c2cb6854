"""The ``forces`` message: the force tissue exerts on instruments and their grasp pull, every snapshot tick.

Why: force feedback needs the server's forces at the snapshot rate (60 Hz), small and loss-tolerant, beside
(not inside) the snapshot codec. The server sends each participant its own instruments and each mentor the
whole room's, on the unreliable channel; a lost one is replaced by the next tick's.

| field       | kind  | meaning |
|-------------|-------|---------|
| tick        | int   | the snapshot sequence of the tick the forces were measured in |
| server_time | float | the server clock then (s) |
| objects     | bytes | N x u32 LE: snapshot object ids of the instruments (N <= ``MAX_FORCE_INSTRUMENTS``) |
| forces      | bytes | N x 3 x i16 LE, 0.01 N: force the tissue exerts on each instrument (contact + grasp), world |
| grasp       | bytes | N x 3 x i16 LE, 0.01 N: the pull of its grasp on the tissue (0 when it holds nothing) |
| positions   | bytes | N x 3 x f32 LE: where each instrument (hinge) was when the force was measured (m) |

Components saturate at +-327.67 N (``FORCE_LIMIT``); a tear happens long before. ``positions`` lets a haptic
loop render a local model about the pose the force belongs to (``netcode.thin_client.haptics``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from netcode.messaging.messages import Field, MessageRegistry

FORCE_QUANTUM = 0.01  # N per unit on the wire
FORCE_LIMIT = 32767 * FORCE_QUANTUM  # N: components saturate here
MAX_FORCE_INSTRUMENTS = 32  # per message (a mentor of a larger room gets several messages per tick)


class ForceReportError(ValueError):
    """Inconsistent ``forces`` fields (lengths, non-finite positions)."""


@dataclass(frozen=True, slots=True)
class ForceReport:
    """One tick's forces: objects (N,) int64; forces, grasp, positions (N, 3) float64 in N, N and m."""

    tick: int
    server_time: float
    objects: np.ndarray
    forces: np.ndarray
    grasp: np.ndarray
    positions: np.ndarray

    def of(self, object_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(force, grasp pull, position) of one instrument, or None when it is not in this report."""
        rows = np.nonzero(self.objects == object_id)[0]
        if rows.size == 0:
            return None
        r = int(rows[0])
        return self.forces[r], self.grasp[r], self.positions[r]


def register_force_types(registry: MessageRegistry) -> MessageRegistry:
    """Add ``forces`` to ``registry`` (returns it)."""
    n = MAX_FORCE_INSTRUMENTS
    registry.register(
        "forces",
        Field("tick", "int"),
        Field("server_time", "float"),
        Field("objects", "bytes", max_length=4 * n),
        Field("forces", "bytes", max_length=6 * n),
        Field("grasp", "bytes", max_length=6 * n),
        Field("positions", "bytes", max_length=12 * n),
        doc="Each tick: the tissue's force on instruments and their grasp pull (0.01 N), where they were.",
    )
    return registry


def quantize_forces(newtons: np.ndarray) -> np.ndarray:
    """Forces (N) as i16 wire units (0.01 N, rounded, saturated at ``FORCE_LIMIT``; NaN -> 0)."""
    a = np.nan_to_num(np.asarray(newtons, dtype=np.float64), nan=0.0, posinf=FORCE_LIMIT, neginf=-FORCE_LIMIT)
    return np.clip(np.rint(a / FORCE_QUANTUM), -32767, 32767).astype("<i2")


def force_fields(
    tick: int,
    server_time: float,
    objects: np.ndarray,
    forces: np.ndarray,
    grasp: np.ndarray,
    positions: np.ndarray,
) -> dict[str, Any]:
    """The ``forces`` message fields of at most ``MAX_FORCE_INSTRUMENTS`` instruments (``ValueError`` for more)."""
    objects = np.asarray(objects, dtype=np.int64).reshape(-1)
    n = objects.size
    if n > MAX_FORCE_INSTRUMENTS:
        raise ValueError(f"{n} instruments in one forces message, at most {MAX_FORCE_INSTRUMENTS}")
    return {
        "tick": int(tick),
        "server_time": float(server_time),
        "objects": objects.astype("<u4").tobytes(),
        "forces": quantize_forces(np.asarray(forces).reshape(n, 3)).tobytes(),
        "grasp": quantize_forces(np.asarray(grasp).reshape(n, 3)).tobytes(),
        "positions": np.asarray(positions, dtype="<f4").reshape(n, 3).tobytes(),
    }


def force_report_from_fields(fields: Mapping[str, Any]) -> ForceReport:
    """A ``ForceReport`` from ``forces`` fields; raises ``ForceReportError`` when they are inconsistent."""
    objects, forces, grasp, positions = fields["objects"], fields["forces"], fields["grasp"], fields["positions"]
    if len(objects) % 4:
        raise ForceReportError("objects must be a u32 array")
    n = len(objects) // 4
    if len(forces) != 6 * n or len(grasp) != 6 * n or len(positions) != 12 * n:
        raise ForceReportError(f"forces, grasp and positions must hold 3 values for each of the {n} objects")
    pos = np.frombuffer(positions, dtype="<f4").reshape(n, 3).astype(np.float64)
    if not np.all(np.isfinite(pos)):
        raise ForceReportError("non-finite positions")
    return ForceReport(
        tick=int(fields["tick"]),
        server_time=float(fields["server_time"]),
        objects=np.frombuffer(objects, dtype="<u4").astype(np.int64),
        forces=np.frombuffer(forces, dtype="<i2").reshape(n, 3) * FORCE_QUANTUM,
        grasp=np.frombuffer(grasp, dtype="<i2").reshape(n, 3) * FORCE_QUANTUM,
        positions=pos,
    )
