"""Complications a mentor injects into a running world, and how each one plays out.

* ``bleeding_point``: the surface vertex nearest the scenario's position bleeds at ``rate_ml_per_s`` until
  the tissue within ``COAGULATION_RADIUS`` of it is coagulated (cautery damage >= ``COAGULATED``); the
  blood lost is reported. Cutting there does not stop it; burning does.
* ``stiffer_tissue``: every tet of a material region becomes ``factor`` times stiffer.
* ``adhesion``: the tissue vertices in a box are tied to where they are now by compliant springs, so
  retracting there pulls against them.

``Complications.inject`` changes the physics Model, so it runs on the room's thread between steps (the
room queues it; see Room.advance). Each complication can be active once per world; a reset clears them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from physics.model import Model, add_anchors, scale_stiffness
from physics.state import State
from rehearsal.procedure import tet_centres
from rehearsal.scenario import Complication, Scenario

COAGULATION_RADIUS = 0.005  # m around the bleeding point
COAGULATED = 0.3  # damage at which tissue counts as sealed


class ComplicationError(ValueError):
    """A complication that cannot be injected into this world (unknown, already active, no tissue there)."""


@dataclass
class Bleeding:
    """An active bleeding point: the vertex it bleeds from and the tets whose coagulation stops it."""

    complication: str
    vertex: int
    tets: np.ndarray
    rate_ml_per_s: float
    lost_ml: float = 0.0
    stopped_at: float | None = None


class Complications:
    """The complications active in one world."""

    def __init__(self, scenario: Scenario) -> None:
        self.known = {c.id: c for c in scenario.complications}
        self.active: list[str] = []
        self.bleeding: list[Bleeding] = []

    def check(self, complication_id: object) -> Complication:
        """The scenario's complication by id, if it may be injected now (raises ComplicationError)."""
        found = self.known.get(complication_id) if isinstance(complication_id, str) else None
        if found is None:
            raise ComplicationError(
                f"no complication {complication_id!r} in this scenario (known: {', '.join(sorted(self.known))})"
            )
        if found.id in self.active:
            raise ComplicationError(f"{found.id} is already active")
        return found

    def inject(self, complication_id: str, model: Model, state: State) -> dict:
        """Make the complication happen in the world; returns what clients need to show it."""
        c = self.check(complication_id)
        detail = {"complication": c.id, "kind": c.kind, "title": c.title}
        if c.kind == "bleeding_point":
            bleeding = _bleeding(c, model, state)
            self.bleeding.append(bleeding)
            detail.update(vertex=bleeding.vertex, position=state.x[bleeding.vertex].tolist())
        elif c.kind == "stiffer_tissue":
            mask = (model.regions == c.params["region"]) & model.alive
            if not mask.any():
                raise ComplicationError(f"{c.id}: no live tissue of region {c.params['region']}")
            detail["tets"] = scale_stiffness(model, mask, c.params["factor"])
        else:
            ids = np.flatnonzero(c.params["box"].contains(model.rest_positions) & model.vertex_used())
            if ids.size == 0:
                raise ComplicationError(f"{c.id}: no tissue in the adhesion's box")
            detail["vertices"] = add_anchors(model, ids, state.x[ids])
        self.active.append(c.id)
        return detail

    def update(self, state: State, dt: float, now: float) -> list[dict]:
        """Advance bleeding by one tick; returns a detail dict per bleeding point that stopped now."""
        stopped = []
        for b in self.bleeding:
            if b.stopped_at is not None:
                continue
            b.lost_ml += b.rate_ml_per_s * dt
            if b.tets.size and float(state.damage[b.tets].max()) >= COAGULATED:
                b.stopped_at = now
                stopped.append({"complication": b.complication, "lost_ml": round(b.lost_ml, 3)})
        return stopped

    def summary(self) -> dict:
        return {
            "active": list(self.active),
            "bleeding": [
                {"complication": b.complication, "lost_ml": round(b.lost_ml, 3), "stopped": b.stopped_at is not None}
                for b in self.bleeding
            ],
        }


def _bleeding(c: Complication, model: Model, state: State) -> Bleeding:
    surface = np.unique(model.surface)
    if surface.size == 0:
        raise ComplicationError(f"{c.id}: there is no tissue surface left to bleed")
    target = np.asarray(c.params["position"])
    vertex = int(surface[np.argmin(np.sum((state.x[surface] - target) ** 2, axis=1))])
    centres = tet_centres(state.x, model.tets)
    near = np.sum((centres - state.x[vertex]) ** 2, axis=1) <= COAGULATION_RADIUS**2
    touching = np.any(model.tets == vertex, axis=1)
    tets = np.flatnonzero((near | touching) & model.alive)
    return Bleeding(c.id, vertex, tets, float(c.params["rate_ml_per_s"]))
