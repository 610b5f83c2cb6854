"""The response model: how tissue near a grasp moves per unit of jaw motion (server sends, client predicts).

The server measures it when a grasp starts (``rehearsal.response_model``) and sends it in a ``grasp`` message
(``netcode.protocol.schema``); the thin client predicts the held tissue with it
(``netcode.thin_client.prediction``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netcode.protocol.poses import RigidPose

MAX_RESPONSE_VERTICES = 1024


class ResponseModelError(ValueError):
    """An invalid response model (shapes, ids, non-finite values)."""


@dataclass(frozen=True, slots=True)
class ResponseModel:
    """How K surface vertices move per unit jaw motion, sent by the server with each grasp.

    objects[k], vertices[k]: tissue patch object id and vertex index within that patch (u32);
    matrices[k]: (3, C) float, C = 3 (translation only: metres per metre) or 6 (columns 3-5: metres
    per radian of jaw rotation vector, world frame, about the jaw position); baseline: the jaw pose at
    the grasp on the server; instrument: the object id of the grasping instrument in snapshots;
    device: the input device id that tracks it; server_time: when the grasp happened; epoch: the
    topology epoch the vertex indices refer to.
    """

    grasp_id: int
    instrument: int
    device: int
    objects: np.ndarray
    vertices: np.ndarray
    matrices: np.ndarray
    baseline: RigidPose
    server_time: float = 0.0
    epoch: int = 0

    def __post_init__(self) -> None:
        objects = np.asarray(self.objects)
        vertices = np.asarray(self.vertices)
        matrices = np.asarray(self.matrices, dtype=np.float64)
        k = objects.shape[0] if objects.ndim == 1 else -1
        if k < 1 or k > MAX_RESPONSE_VERTICES:
            raise ResponseModelError(f"objects must be a 1-D array of 1..{MAX_RESPONSE_VERTICES} ids")
        if vertices.shape != (k,):
            raise ResponseModelError(f"vertices has shape {vertices.shape}, expected ({k},)")
        if matrices.ndim != 3 or matrices.shape[:2] != (k, 3) or matrices.shape[2] not in (3, 6):
            raise ResponseModelError(f"matrices has shape {matrices.shape}, expected ({k}, 3, 3|6)")
        if not np.all(np.isfinite(matrices)) or not self.baseline.is_finite():
            raise ResponseModelError("non-finite matrices or baseline")
        for name, a in (("objects", objects), ("vertices", vertices)):
            if not np.issubdtype(a.dtype, np.integer) or (a.size and (a.min() < 0 or a.max() >= 1 << 32)):
                raise ResponseModelError(f"{name} must be u32 integers")
        object.__setattr__(self, "objects", objects.astype(np.int64))
        object.__setattr__(self, "vertices", vertices.astype(np.int64))
        object.__setattr__(self, "matrices", matrices)

    @property
    def columns(self) -> int:
        return int(self.matrices.shape[2])

    def rows_of(self, object_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(model rows, vertex indices) of the model's vertices that live in patch ``object_id``."""
        rows = np.nonzero(self.objects == object_id)[0]
        return rows, self.vertices[rows]

    def patch_ids(self) -> list[int]:
        return sorted({int(o) for o in self.objects})
