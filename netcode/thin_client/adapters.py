"""Adapter from the snapshot codec's decoded output to the thin client's ``SnapshotObject``s.

Why: the client logic works on plain data and does not import the codec; this is the only place that
knows the codec's decoded shape (``netcode.sync.snapshot_decode.DecodedSnapshot``: ``server_time``,
``epoch``, ``objects`` with ``id``, ``kind`` ("patch" or a rigid kind), ``positions``,
``orientation`` (x, y, z, w), ``jaw``). It is duck-typed, so the codec stays free to change its
classes; if its field names change, only this function changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netcode.protocol.poses import RigidPose
from netcode.thin_client.render_state import ObjectKind, SnapshotObject


def from_decoded_snapshot(snapshot: Any) -> list[SnapshotObject]:
    """``SnapshotObject``s of one decoded snapshot (feed them to ``ThinClient.on_snapshot``)."""
    out = []
    for obj in snapshot.objects:
        time = float(getattr(obj, "server_time", snapshot.server_time))
        if obj.kind == "patch":
            vertices = np.asarray(obj.positions, dtype=np.float64)
            out.append(SnapshotObject(int(obj.id), ObjectKind.PATCH, time, vertices=vertices, epoch=snapshot.epoch))
        else:
            rotation = obj.orientation if obj.orientation is not None else [0.0, 0.0, 0.0, 1.0]
            pose = RigidPose(obj.positions, rotation, obj.jaw or 0.0)
            out.append(SnapshotObject(int(obj.id), ObjectKind.RIGID, time, pose=pose, epoch=snapshot.epoch))
    return out
