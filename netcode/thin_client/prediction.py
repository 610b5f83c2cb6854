"""Prediction of the tissue the client holds, and smooth reconciliation with the authoritative state.

Why: a surgeon's own instrument is drawn from local tracking (no round trip); the tissue it grasps
must follow it just as fast or the jaws visibly slide off. When a grasp starts, the server sends a
**response model**: for K surface vertices near the grasp, a 3 x C matrix (C = 3 or 6) giving the
vertex displacement per unit of jaw displacement from the grasp baseline (linear response)::

    d(pose) = [p - p0,  rotvec(q * q0^-1)]            # 6-vector: metres, radians (world frame)
    predicted_k = authoritative_k + M_k @ (d(jaw_now) - d(jaw_auth))[:C]

``authoritative_k`` is the newest authoritative position of vertex k; ``jaw_auth`` is the jaw pose the
server had applied when it computed that state (the server's own pose of this instrument at the same
server time), ``jaw_now`` the locally tracked jaw. So only the motion the server has not seen yet is
predicted, and a perfect linear model with no latency change predicts exactly.

**Reconciliation.** Whenever the base the client displays changes discontinuously (new authoritative
state under prediction, grasp start, release), the jump is turned into an offset that decays::

    offset_0 = display_before(now) - new_base(now)
    display(t) = base(t) + offset_0 * exp(-(t - t_correction) / tau)

so the display is continuous at the correction and each frame moves a vertex by at most
``(1 - exp(-dt / tau))`` of the correction (8.8% at 90 Hz with tau = 120 ms) on top of the base's
own motion. Pure functions do the maths; ``PoseHistory``, ``Reconciler`` and ``HeldTissue`` are shells.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from netcode.protocol.poses import RigidPose, interpolate_pose, quat_conj, quat_mul, quat_to_rotvec
from netcode.protocol.response_model import ResponseModel


def jaw_displacement(pose: RigidPose, baseline: RigidPose) -> np.ndarray:
    """6-vector ``[p - p0, rotvec(q * q0^-1)]`` of a jaw pose relative to the grasp baseline."""
    rot = quat_to_rotvec(quat_mul(pose.rotation, quat_conj(baseline.rotation)))
    return np.concatenate([pose.position - baseline.position, rot])


def predicted_delta(model: ResponseModel, jaw_now: RigidPose, jaw_auth: RigidPose) -> np.ndarray:
    """(K, 3) predicted displacement of the model's vertices beyond the authoritative state."""
    d = (jaw_displacement(jaw_now, model.baseline) - jaw_displacement(jaw_auth, model.baseline))[: model.columns]
    return model.matrices @ d


def decay_factor(elapsed: float, tau: float) -> float:
    """``exp(-elapsed / tau)`` for elapsed >= 0 (1 before the correction)."""
    return math.exp(-max(0.0, elapsed) / tau) if tau > 0.0 else 0.0


class PoseHistory:
    """A short, bounded history of poses by time; ``at(t)`` interpolates (holds at the ends)."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._times: list[float] = []
        self._poses: list[RigidPose] = []

    def __len__(self) -> int:
        return len(self._times)

    def add(self, time: float, pose: RigidPose) -> None:
        i = bisect.bisect_left(self._times, time)
        if i < len(self._times) and self._times[i] == time:
            self._poses[i] = pose
        else:
            self._times.insert(i, time)
            self._poses.insert(i, pose)
        if len(self._times) > self.capacity:
            del self._times[0], self._poses[0]

    def span(self) -> tuple[float, float] | None:
        return (self._times[0], self._times[-1]) if self._times else None

    def at(self, time: float) -> RigidPose | None:
        times = self._times
        if not times:
            return None
        i = bisect.bisect_right(times, time)
        if i == 0:
            return self._poses[0]
        if i == len(times):
            return self._poses[-1]
        t0, t1 = times[i - 1], times[i]
        return interpolate_pose(self._poses[i - 1], self._poses[i], (time - t0) / (t1 - t0))


class Reconciler:
    """An exponentially decaying display offset for one vertex array (see the module doc)."""

    def __init__(self, tau: float = 0.12) -> None:
        self.tau = tau
        self._offset: np.ndarray | None = None
        self._since = 0.0

    def offset(self, local_now: float) -> np.ndarray | None:
        if self._offset is None:
            return None
        return self._offset * decay_factor(local_now - self._since, self.tau)

    def apply(self, base: np.ndarray, local_now: float) -> np.ndarray:
        """What to display: ``base`` plus the decayed offset (the offset is dropped once negligible)."""
        off = self.offset(local_now)
        if off is None or off.shape != base.shape:
            return base
        if float(np.abs(off).max(initial=0.0)) < 1e-9:
            self._offset = None
        return base + off

    def correct(self, display_before: np.ndarray, new_base: np.ndarray, local_now: float) -> None:
        """The base jumps at ``local_now``: keep the display where it was and let the difference decay."""
        if display_before.shape != new_base.shape or not np.all(np.isfinite(display_before)):
            self._offset = None  # membership changed or garbage: nothing sensible to blend
            return
        self._offset = display_before - new_base
        self._since = local_now


class HeldTissue:
    """Prediction + reconciliation of the patches touched by one grasp's response model.

    Feed it authoritative patch states (``on_authoritative``) with the jaw pose the server had applied
    to each, and the local jaw each frame (``display``); it returns the vertex arrays to draw.
    """

    def __init__(self, model: ResponseModel, tau: float = 0.12) -> None:
        self.model = model
        self.tau = tau
        self._auth: dict[int, tuple[float, np.ndarray, RigidPose]] = {}  # patch -> (server time, vertices, jaw)
        self._rows = {pid: model.rows_of(pid) for pid in model.patch_ids()}
        self.reconcilers: dict[int, Reconciler] = {pid: Reconciler(tau) for pid in self._rows}
        self.last_jaw: RigidPose | None = None
        self.rejected = 0  # authoritative states whose shape does not fit the model

    @property
    def patch_ids(self) -> list[int]:
        return list(self._rows)

    def has(self, patch: int) -> bool:
        return patch in self._auth

    def base(self, patch: int, jaw_now: RigidPose) -> np.ndarray | None:
        """Predicted vertices of a patch (no reconciliation offset), or None before any authoritative state."""
        entry = self._auth.get(patch)
        if entry is None:
            return None
        _, vertices, jaw_auth = entry
        rows, idx = self._rows[patch]
        out = vertices.copy()
        out[idx] += predicted_delta(self.model, jaw_now, jaw_auth)[rows]
        return out

    def display_patch(self, patch: int, jaw_now: RigidPose, local_now: float) -> np.ndarray | None:
        base = self.base(patch, jaw_now)
        return None if base is None else self.reconcilers[patch].apply(base, local_now)

    def on_authoritative(
        self,
        patch: int,
        server_time: float,
        vertices: np.ndarray,
        jaw_auth: RigidPose,
        local_now: float,
        display_before: np.ndarray | None = None,
    ) -> bool:
        """Take a newer authoritative state of a held patch; False if ignored (old, foreign, bad shape).

        ``display_before`` is what was on screen for this patch when it had no authoritative state yet
        (the interpolated patch at grasp start), so the hand-over is blended too.
        """
        rows_idx = self._rows.get(patch)
        if rows_idx is None:
            return False
        old = self._auth.get(patch)
        if old is not None and server_time <= old[0]:
            return False
        vertices = np.asarray(vertices, dtype=np.float64)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or (rows_idx[1].size and rows_idx[1].max() >= len(vertices)):
            self.rejected += 1
            return False
        jaw_now = self.last_jaw or jaw_auth
        before = self.display_patch(patch, jaw_now, local_now) if old is not None else display_before
        self._auth[patch] = (server_time, vertices.copy(), jaw_auth)
        if before is not None:
            self.reconcilers[patch].correct(before, self.base(patch, jaw_now), local_now)
        return True

    def display(self, jaw_now: RigidPose, local_now: float) -> dict[int, np.ndarray]:
        """Vertex arrays to draw for every held patch with an authoritative state."""
        self.last_jaw = jaw_now
        out = {}
        for patch in self._auth:
            shown = self.display_patch(patch, jaw_now, local_now)
            if shown is not None:
                out[patch] = shown
        return out


def authoritative_jaw(
    server_history: PoseHistory, local_history: PoseHistory, server_time: float, max_gap: float = 0.1
) -> RigidPose | None:
    """The jaw pose the server applied at ``server_time``.

    Prefer the server's own snapshots of the instrument (exact); when they do not cover that time
    (within ``max_gap``), fall back to the local tracking history keyed by estimated server
    application time (``server_now(sample time) + rtt / 2``).
    """
    span = server_history.span()
    if span is not None and span[0] - max_gap <= server_time <= span[1] + max_gap:
        return server_history.at(server_time)
    return local_history.at(server_time)
