"""Topology-change records: what a cut or a burn removed, compact enough to send to every headset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TopologyChange:
    """epoch: the model's topology epoch after the change; cause: "cut" or "burn"; removed_tets: stable
    tet ids; removed/added_triangles: surface triangles (vertex ids) that left or joined the surface."""

    epoch: int
    cause: str
    instrument: int | None
    removed_tets: np.ndarray
    removed_triangles: np.ndarray
    added_triangles: np.ndarray

    def to_message(self) -> dict:
        """Plain types for msgpack: arrays as little-endian int32 bytes."""
        return {
            "epoch": self.epoch,
            "cause": self.cause,
            "instrument": self.instrument,
            "removed_tets": self.removed_tets.astype("<i4").tobytes(),
            "removed_triangles": self.removed_triangles.astype("<i4").tobytes(),
            "added_triangles": self.added_triangles.astype("<i4").tobytes(),
        }

    @classmethod
    def from_message(cls, msg: dict) -> TopologyChange:
        """Inverse of to_message; anything malformed (wrong types, missing fields, partial or negative
        ids) raises ValueError, so a bad packet never reaches a client's mesh."""
        if not isinstance(msg, dict):
            raise ValueError("topology change: message must be a map")

        def field(key: str):
            if key not in msg:
                raise ValueError(f"topology change: missing {key}")
            return msg[key]

        def integer(key: str) -> int:
            value = field(key)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"topology change: {key} must be an integer")
            return int(value)

        def arr(key: str, width: int) -> np.ndarray:
            raw = field(key)
            if not isinstance(raw, bytes | bytearray) or len(raw) % (4 * width):
                raise ValueError(f"topology change: {key} must be int32 bytes in groups of {width}")
            out = np.frombuffer(raw, dtype="<i4").reshape(-1, width).squeeze(axis=1 if width == 1 else ())
            if out.size and out.min() < 0:
                raise ValueError(f"topology change: {key} holds negative ids")
            return out

        cause = field("cause")
        if not isinstance(cause, str):
            raise ValueError("topology change: cause must be a string")
        return cls(
            epoch=integer("epoch"),
            cause=cause,
            instrument=None if msg.get("instrument") is None else integer("instrument"),
            removed_tets=arr("removed_tets", 1),
            removed_triangles=arr("removed_triangles", 3),
            added_triangles=arr("added_triangles", 3),
        )
