"""Burn damage on the tissue surface for clients: per-vertex levels from the physics' per-tet cautery field.

Snapshots carry positions only; a page colours the surface by burn level from ``surface_damage`` messages
(``rehearsal.wire``). ``vertex_levels`` is the pure function: a vertex's level is the highest damage of the live
tets it belongs to, quantized to 0..``MAX_LEVEL``. ``SurfaceDamage`` remembers, per room, the level every client
was last told for each mesh vertex (one byte per vertex: bounded by the mesh) and turns a change into messages of
the surface vertices whose level changed, at most ``MAX_DAMAGE_VERTICES`` per message. It only looks at the
damage after a frame that heated tissue, changed the topology or replaced the world, so a room nobody burns
sends nothing. A newcomer gets everything the room was told (``full_messages``, first one with ``reset``).
"""

from __future__ import annotations

import numpy as np

from netcode.messaging.messages import Message

MAX_LEVEL = 255  # a level byte: 0 fresh .. 255 burned through
MAX_DAMAGE_VERTICES = 4096  # vertices per surface_damage message (4 + 1 bytes each); more go in further ones


def vertex_levels(tets: np.ndarray, alive: np.ndarray, damage: np.ndarray, n_vertices: int) -> np.ndarray:
    """(n_vertices,) uint8: each vertex's highest damage over the live tets it is a corner of, times MAX_LEVEL
    rounded (0 for a vertex of no live tet; damage clipped to 0..1, NaN counts as 0)."""
    tets = np.asarray(tets)
    if tets.ndim != 2 or tets.shape[1] != 4 or alive.shape != (tets.shape[0],) or damage.shape != alive.shape:
        raise ValueError("tets must be (m, 4), alive and damage (m,)")
    levels = np.zeros(int(n_vertices), np.uint8)
    d = np.nan_to_num(np.asarray(damage, np.float64), nan=0.0)
    q = np.rint(np.clip(d, 0.0, 1.0) * MAX_LEVEL).astype(np.uint8)
    hot = np.flatnonzero(alive & (q > 0))  # the burn zone: usually a few tets, so the scatter below is small
    if hot.size:
        np.maximum.at(levels, tets[hot].ravel(), np.repeat(q[hot], 4))
    return levels


def heated_frames(counters: dict) -> int:
    """Frames in which an energized tip heated some tissue (the physics state's counters)."""
    return int(counters.get("energy_frames", 0)) - int(counters.get("energy_frames_without_tissue", 0))


def damage_messages(vertices: np.ndarray, levels: np.ndarray, reset: bool) -> list[Message]:
    """``surface_damage`` messages of (ascending mesh vertex ids, levels), MAX_DAMAGE_VERTICES per message;
    only the first carries ``reset``."""
    out = []
    for start in range(0, len(vertices), MAX_DAMAGE_VERTICES):
        chunk = slice(start, start + MAX_DAMAGE_VERTICES)
        fields = {
            "vertices": np.asarray(vertices[chunk], "<u4").tobytes(),
            "levels": np.asarray(levels[chunk], np.uint8).tobytes(),
            "reset": reset and start == 0,
        }
        out.append(Message("surface_damage", fields))
    if not out and reset:
        out.append(Message("surface_damage", {"vertices": b"", "levels": b"", "reset": True}))
    return out


class SurfaceDamage:
    """What a room's clients were told of its burns, and the messages that bring them up to date."""

    def __init__(self) -> None:
        self.sent: np.ndarray | None = None  # (n_vertices,) uint8: the level every client holds per mesh vertex
        self._state: object = None  # the physics state last looked at (a reset or resume replaces it)
        self._heated = -1

    def update(self, model, state, topology_changed: bool = False) -> list[Message]:
        """The ``surface_damage`` messages for everyone after a frame (empty when no level changed).

        ``model``/``state``: the room's physics Model and State; the damage is read only when the state was
        replaced, a frame heated tissue since the last call, or ``topology_changed`` (tets were removed)."""
        heated = heated_frames(state.counters)
        same_world = state is self._state
        if same_world and heated == self._heated and not topology_changed:
            return []
        self._state, self._heated = state, heated
        levels = vertex_levels(model.tets, model.alive, state.damage, model.n_vertices)
        sent = self.sent
        if same_world and sent is not None and sent.size < levels.size:  # a split cut appended vertices
            sent = np.concatenate([sent, np.zeros(levels.size - sent.size, np.uint8)])
        forget = sent is not None and sent.shape != levels.shape  # another mesh: clients start over
        previous = np.zeros_like(levels) if sent is None or forget else sent
        on_surface = np.zeros(levels.shape, bool)
        on_surface[np.asarray(model.surface, np.int64).ravel()] = True
        changed = np.flatnonzero(on_surface & (levels != previous))
        previous[changed] = levels[changed]  # off-surface vertices keep what clients hold until they surface
        self.sent = previous
        if not changed.size and not forget:
            return []
        return damage_messages(changed, levels[changed], forget)

    def full_messages(self) -> list[Message]:
        """Everything the room's clients were told (nonzero levels), for a newcomer: the first has ``reset``."""
        if self.sent is None:
            return []
        ids = np.flatnonzero(self.sent)
        if not ids.size:
            return []
        return damage_messages(ids, self.sent[ids], True)
