"""The fixed surroundings tissue rests on and collides with: planes, spheres and boxes, with friction."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _rows(a, width: int) -> np.ndarray:
    arr = np.asarray(a if a is not None else np.zeros((0, width)), dtype=np.float64).reshape(-1, width)
    if not np.all(np.isfinite(arr)):
        raise ValueError("environment shapes must be finite")
    return np.ascontiguousarray(arr)


@dataclass
class Environment:
    """planes: rows (nx, ny, nz, d), tissue kept where n.x >= d (n normalised here);
    spheres: rows (cx, cy, cz, r); boxes: axis-aligned rows (cx, cy, cz, hx, hy, hz); Coulomb friction."""

    planes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    spheres: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))
    friction: float = 0.5

    def __post_init__(self) -> None:
        self.planes = _rows(self.planes, 4)
        self.spheres = _rows(self.spheres, 4)
        self.boxes = _rows(self.boxes, 6)
        norms = np.linalg.norm(self.planes[:, :3], axis=1)
        if np.any(norms < 1e-9):
            raise ValueError("plane normals must be non-zero")
        self.planes[:, :4] /= norms[:, None]
        if np.any(self.spheres[:, 3] <= 0) or np.any(self.boxes[:, 3:] <= 0):
            raise ValueError("sphere radii and box half-extents must be positive")
        if not (0.0 <= self.friction < 10.0):
            raise ValueError(f"friction must be in [0, 10), got {self.friction}")

    @classmethod
    def table(cls, height: float = 0.0, friction: float = 0.5) -> Environment:
        """An operating table: the plane y = height, tissue above it."""
        return cls(planes=[[0.0, 1.0, 0.0, height]], friction=friction)
