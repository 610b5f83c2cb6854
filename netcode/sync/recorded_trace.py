"""A trace recorded from the physics engine (``physics.trace_recorder``), read without importing physics.

The file format (``TRACE_FORMAT``, a numpy ``.npz``) is documented in ``physics/trace_recorder.py`` and in
SNAPSHOT.md section 5. ``RecordedTrace`` gives the snapshot benchmark what it replays: per frame the surface
positions, the instruments (plus a bobbing head per client, as a session has), and the topology epochs
(their surface triangles and what each change removed and added). Bad files raise ``TraceError``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netcode.sync.snapshot import RigidKind, RigidSet

TRACE_FORMAT = "surgical-trace/1"
HEAD_BASE = 0x100
"""Rigid ids of the clients' heads (instrument ids stay as recorded, below this)."""


class TraceError(ValueError):
    """The file is not a readable trace of ``TRACE_FORMAT``."""


@dataclass(frozen=True)
class Epoch:
    """A topology epoch: from ``frame`` on, the surface is ``triangles``; ``removed``/``added`` are the
    triangles that left or joined it at that frame; ``cause`` full/cut/burn, ``instrument`` (-1: none)."""

    frame: int
    cause: str
    instrument: int
    triangles: np.ndarray
    removed: np.ndarray
    added: np.ndarray

    @property
    def surface_ids(self) -> np.ndarray:
        return np.unique(self.triangles).astype(np.int64)


class RecordedTrace:
    """Ground truth per frame from a trace file, for ``clients`` clients (their heads are added)."""

    def __init__(self, path: Path | str, clients: int, frames: int | None = None) -> None:
        self.path = Path(path)
        if frames is not None and frames < 1:
            raise TraceError(f"frames must be at least 1, got {frames}")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            raise TraceError(f"{self.path}: not a readable .npz trace ({exc})") from None
        if str(data.get("format", "")) != TRACE_FORMAT:
            raise TraceError(f"{self.path}: format {data.get('format')!r}, expected {TRACE_FORMAT!r}")
        try:
            self._load(data, clients, frames)
        except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
            raise TraceError(f"{self.path}: malformed trace ({exc!r})") from None

    def _load(self, d: dict, clients: int, frames: int | None) -> None:
        self.name = str(d["scene"])
        self.info = json.loads(str(d["info"]))
        self.hz = float(d["hz"])
        self.vertex_ids = np.asarray(d["vertex_ids"], np.int64)
        pos = np.asarray(d["positions"])
        total = pos.shape[0]
        self.frames = total if frames is None else min(int(frames), total)
        self._positions = pos[: self.frames]
        if pos.ndim != 3 or pos.shape[1:] != (len(self.vertex_ids), 3) or np.any(np.diff(self.vertex_ids) <= 0):
            raise TraceError(
                f"{self.path}: positions {pos.shape} do not match {len(self.vertex_ids)} sorted vertex ids"
            )
        if not np.all(np.isfinite(self._positions)):
            raise TraceError(f"{self.path}: non-finite positions")
        self.clients = clients
        self.epochs: list[Epoch] = []
        tri, rem, add = (d[k] for k in ("epoch_tri_offsets", "change_removed_offsets", "change_added_offsets"))
        for e, frame in enumerate(d["epoch_frame"].tolist()):
            if frame >= self.frames:
                break
            self.epochs.append(
                Epoch(
                    int(frame),
                    str(d["epoch_cause"][e]),
                    int(d["epoch_instrument"][e]),
                    np.asarray(d["epoch_triangles"][tri[e] : tri[e + 1]], np.int64),
                    np.asarray(d["change_removed"][rem[e] : rem[e + 1]], np.int64),
                    np.asarray(d["change_added"][add[e] : add[e + 1]], np.int64),
                )
            )
        if not self.epochs or self.epochs[0].frame != 0:
            raise TraceError(f"{self.path}: the first epoch must start at frame 0")
        for e in self.epochs:
            if not np.isin(e.surface_ids, self.vertex_ids).all():
                raise TraceError(f"{self.path}: epoch at frame {e.frame} has vertices without positions")
        self.rigid_ids = np.asarray(d["rigid_ids"], np.int64)
        if np.any(self.rigid_ids >= HEAD_BASE):
            raise TraceError(f"{self.path}: instrument ids must be below {HEAD_BASE}")
        self.rigid_kinds = [str(k) for k in d["rigid_kinds"]]
        self._present = np.asarray(d["rigid_present"], bool)
        self._r_pos = np.asarray(d["rigid_positions"], np.float64)
        self._r_rot = np.asarray(d["rigid_orientations"], np.float64)
        self._r_jaw = np.asarray(d["rigid_jaws"], np.float64)
        self.grasp_frames = np.asarray(d["grasp_frame"], np.int64)
        self.grasp_points = np.asarray(d["grasp_point"], np.float64).reshape(-1, 3)
        self.events = list(
            zip(
                d["event_frame"].tolist(),
                [str(k) for k in d["event_kind"]],
                d["event_instrument"].tolist(),
                strict=True,
            )
        )
        self._centre = self._positions[0].astype(np.float64).mean(axis=0)

    # ------------------------------------------------------------------ per frame

    def positions(self, frame: int) -> np.ndarray:
        """(V, 3) float64 positions of ``vertex_ids`` at ``frame``."""
        return self._positions[frame].astype(np.float64)

    def rows(self, vertex_ids: np.ndarray) -> np.ndarray:
        """Rows of ``positions(f)`` holding mesh vertices ``vertex_ids``."""
        return np.searchsorted(self.vertex_ids, vertex_ids)

    def epoch_at(self, frame: int) -> Epoch:
        return [e for e in self.epochs if e.frame <= frame][-1]

    def rigid(self, frame: int) -> RigidSet:
        """The instruments present at ``frame`` and one head per client (looking at the tissue)."""
        present = np.flatnonzero(self._present[frame])
        t = frame / self.hz
        heads = [
            self._centre + np.array([0.3 * math.cos(k), 0.35 + 0.01 * math.sin(2 * t + k), 0.3 * math.sin(k)])
            for k in range(self.clients)
        ]
        angles = np.array([0.1 * math.sin(t + k) for k in range(self.clients)])
        head_q = np.stack([np.zeros(self.clients), np.sin(angles / 2), np.zeros(self.clients), np.cos(angles / 2)], 1)
        ids = np.concatenate([self.rigid_ids[present], HEAD_BASE + np.arange(self.clients)])
        kinds = np.array([RigidKind.INSTRUMENT] * len(present) + [RigidKind.HEAD] * self.clients, np.int64)
        pos = np.concatenate([self._r_pos[frame, present], np.array(heads).reshape(-1, 3)])
        rot = np.concatenate([self._r_rot[frame, present], head_q.reshape(-1, 4)])
        jaws = np.concatenate([self._r_jaw[frame, present], np.full(self.clients, np.nan)])
        return RigidSet(ids, kinds, pos, rot, jaws)

    def focus(self, frame: int, client: int) -> np.ndarray:
        """What client ``client`` looks at: one of the present instruments (by client) and the tissue's
        newest grasp point (or its centre)."""
        present = np.flatnonzero(self._present[frame])
        grasped = self.grasp_frames <= frame
        target = self.grasp_points[np.flatnonzero(grasped)[-1]] if grasped.any() else self._centre
        if present.size == 0:
            return target.reshape(1, 3)
        return np.array([self._r_pos[frame, present[client % present.size]], target])
