"""Grasp response models: how the surface near a new grasp moves per unit of jaw motion.

The server sends one with each grasp to the surgeon who holds it (``grasp`` message of
``netcode.protocol.schema``), so their headset moves the held tissue with the tracked jaws at once
instead of a round trip later (``netcode.thin_client.prediction``). The model is linear and translation
only (C = 3): surface vertex k moves by ``M_k @ (jaw displacement)``.

The same measurement, over more vertices (``CODEC_MIN_RESPONSE``, up to ``MAX_PREDICTOR_VERTICES``),
becomes a motion predictor of the snapshot codec for everyone in the room (``netcode.sync.motion_predictor``):
the codec then sends the held tissue's motion as three numbers a frame.

``M_k`` is measured by the physics engine itself at the moment of the grasp (``probe_response``): copies
of the world are stepped with the jaws nudged along x, y and z, so the model knows this tissue's
stiffness, its attachments and the grasp's geometry. ``python -m rehearsal.response_bench`` measures how
much it reduces the displayed error under latency.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from netcode.protocol.response_model import MAX_RESPONSE_VERTICES
from netcode.sync.motion_predictor import MAX_PREDICTOR_VERTICES
from netcode.sync.patches import PatchLayout
from physics import Control, InstrumentInput, Model, Solver
from physics.state import State

PROBE_STEP = 0.002  # m the probe moves the jaws along each axis
PROBE_FRAMES = 4  # frames over which it moves them (best of 1-8 in rehearsal.response_bench)
MIN_RESPONSE = 0.02  # vertices that move less than this share of the jaw motion are left out
CODEC_MIN_RESPONSE = 0.005  # the codec's predictor keeps weaker ones too (it costs bytes once, saves every frame)


@dataclass(frozen=True)
class Response:
    """How surface vertices ``vertex_ids`` (K,) move: ``matrices`` (K, 3, 3), metres per metre of jaw motion."""

    vertex_ids: np.ndarray
    matrices: np.ndarray

    def strongest(self, min_response: float = MIN_RESPONSE, limit: int = MAX_RESPONSE_VERTICES) -> Response:
        """The vertices that move at least ``min_response`` per unit of jaw motion, at most ``limit`` of them
        (the strongest; they are stored strongest first)."""
        keep = np.flatnonzero(np.max(np.abs(self.matrices), axis=(1, 2)) >= min_response)[:limit]
        return Response(self.vertex_ids[keep], self.matrices[keep])

    def on_layout(self, layout: PatchLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(patch ids, indices within patches, matrices) for the ``grasp`` message, keeping the vertices
        that ``layout`` (the snapshots' current one) has."""
        rows, ok = layout.rows_of(self.vertex_ids)
        rows = rows[ok]
        patches = np.searchsorted(layout.offsets, rows, side="right") - 1
        return patches.astype(np.int64), (rows - layout.offsets[patches]).astype(np.int64), self.matrices[ok]


def probe_response(
    model: Model,
    state: State,
    instrument: int,
    vertex_ids: np.ndarray,
    dt: float,
    substeps: int,
    frames: int = PROBE_FRAMES,
    min_response: float = CODEC_MIN_RESPONSE,
    limit: int = MAX_PREDICTOR_VERTICES,
    mode: str = "xpbd",
) -> Response | None:
    """The response of the surface vertices ``vertex_ids`` to the grasping instrument, measured on copies
    of the state.

    The jaws move by PROBE_STEP along x, y and z over ``frames`` frames, and once not at all (the
    reference, which cancels the tissue's own motion); each vertex's displacement against the reference,
    per metre of jaw motion, is one column of its matrix. The strongest-moving vertices (at most ``limit``,
    at least ``min_response``) are kept, strongest first; ``Response.strongest`` narrows them for a
    headset. Pass the room's own dt and substeps (the response depends on them). Costs 4 x ``frames``
    steps of one Solver (the probes leave the model alone, so its derived arrays are built once): run it on
    the room's thread, once per grasp; None when the instrument holds nothing."""
    held = state.instruments.get(instrument)
    ids = np.asarray(vertex_ids, dtype=np.int64)
    if held is None or held.grasp is None or ids.size == 0:
        return None
    finals = []
    solver = Solver(model, mode=mode)  # the room's solver mode: the response is the world's own
    for offset in (np.zeros(3), *np.eye(3) * PROBE_STEP):
        probe = copy.deepcopy(state)
        for k in range(1, frames + 1):
            command = InstrumentInput(
                instrument, held.spec, held.position + offset * k / frames, held.orientation, held.jaw, False
            )
            solver.step(probe, Control([command]), dt, substeps)
        finals.append(probe.x[ids])
    columns = np.stack([(f - finals[0]) / PROBE_STEP for f in finals[1:]], axis=2)  # (n, 3 rows, 3 cols)
    strength = np.max(np.abs(columns), axis=(1, 2))
    keep = np.flatnonzero(strength >= min_response)
    if keep.size == 0:
        return None
    keep = keep[np.argsort(-strength[keep], kind="stable")[:limit]]
    return Response(ids[keep], columns[keep])
