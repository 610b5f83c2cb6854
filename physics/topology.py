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
        def arr(key: str, width: int) -> np.ndarray:
            raw = msg[key]
            if not isinstance(raw, bytes | bytearray) or len(raw) % (4 * width):
                raise ValueError(f"topology change: {key} must be int32 bytes in groups of {width}")
            return np.frombuffer(raw, dtype="<i4").reshape(-1, width).squeeze(axis=1 if width == 1 else ())

        return cls(
            epoch=int(msg["epoch"]),
            cause=str(msg["cause"]),
            instrument=None if msg.get("instrument") is None else int(msg["instrument"]),
            removed_tets=arr("removed_tets", 1),
            removed_triangles=arr("removed_triangles", 3),
            added_triangles=arr("added_triangles", 3),
        )
