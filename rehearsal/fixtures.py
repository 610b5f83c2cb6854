"""Virtual fixtures in a room: the scenario's forbidden regions, no-energy zones and guidance fixtures, enforced
on every instrument tip each tick before the pose reaches physics.

Why: robotic surgery keeps instruments off vessels with virtual fixtures; a rehearsal teaches the same. The
server is the authority: ``FixtureEnforcer.constrain`` takes a hand's pose as the room accepted it and returns
the pose physics gets. A tip that would enter an active forbidden region is stopped where its motion since the
last tick first touches the region (a swept test: ``netcode.protocol.fixture_shapes.first_contact``) and slides
along the boundary for the rest of the motion, so even a fast tip never ends up inside or beyond a thin region;
the whole instrument moves with its tip. Energy is cut while the tip is inside an active no-energy zone.
Guidance fixtures do not move the pose (the client's haptic loop renders them as springs); their deviation is
measured. What happened comes back as ``FixtureOutcome`` (the room turns it into events and skill metrics).

A ``mesh`` fixture surrounds a material region of the scenario's anatomy: the boundary triangles of that
region's tets at rest, grown by ``margin``. It does not follow the tissue as it deforms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netcode.messaging.messages import Message
from netcode.protocol.fixture_shapes import (
    CONTACT_TOLERANCE,
    Capsule,
    Plane,
    Polyline,
    Sphere,
    TriangleMesh,
    boundary_point,
    deviation,
    first_contact,
    inside,
)
from netcode.protocol.fixtures import Fixture, FixtureSet, fixture_fields
from physics.instruments import InstrumentSpec, quat_to_matrix
from physics.model import Model
from physics.surface import boundary_triangles

DEFAULT_GUIDE_STIFFNESS = 200.0  # N/m: a spring a hand follows without fighting it
DEFAULT_WALL_STIFFNESS = 2000.0  # N/m: what a desktop haptic device renders as a wall
DEFAULT_MESH_MARGIN = 0.002  # m beyond a region's surface
SKIN = 2 * CONTACT_TOLERANCE  # m: a stopped tip rests this far outside the boundary (on it, never inside)
MAX_SLIDES = 2  # boundary slides per motion and region before the tip simply stops at the contact


@dataclass(frozen=True)
class FixtureDef:
    """A fixture as the scenario declares it (``[[fixtures]]``, rehearsal/scenarios/SCENARIOS.md)."""

    id: str
    title: str
    role: str  # forbidden, no_energy, guide
    shape: str  # sphere, capsule, mesh, plane, path
    params: dict[str, Any]
    stiffness: float
    active: bool = True


def fixture_def(spec: Any) -> FixtureDef:
    """A validated ``scenario_schema.FixtureSpec`` as the domain's ``FixtureDef`` (defaults filled in)."""
    keys = {"sphere": ("center", "radius"), "capsule": ("a", "b", "radius"), "mesh": ("region", "margin")}
    keys |= {"plane": ("point", "normal"), "path": ("points",)}
    params = {k: getattr(spec, k) for k in keys[spec.shape]}
    if spec.shape == "mesh" and params["margin"] is None:
        params["margin"] = DEFAULT_MESH_MARGIN
    default = DEFAULT_GUIDE_STIFFNESS if spec.role == "guide" else DEFAULT_WALL_STIFFNESS
    stiffness = spec.stiffness if spec.stiffness is not None else default
    return FixtureDef(spec.id, spec.title, spec.role, spec.shape, params, float(stiffness), bool(spec.active))


def region_mesh(model: Model, region: int, margin: float) -> TriangleMesh:
    """The closed surface of one material region's tets at rest, grown by ``margin`` (ValueError: no such tets)."""
    mask = (model.regions == region) & model.alive
    if not np.any(mask):
        raise ValueError(f"no tissue of region {region} to surround")
    triangles = boundary_triangles(model.tets, mask)
    used, compact = np.unique(triangles, return_inverse=True)
    return TriangleMesh(model.rest_positions[used], compact.reshape(-1, 3), margin)


def build_fixture(d: FixtureDef, model: Model) -> Fixture:
    """The fixture's geometry (a mesh fixture from the model's region) with its role, stiffness and state."""
    p = d.params
    if d.shape == "sphere":
        shape: Any = Sphere(tuple(p["center"]), float(p["radius"]))
    elif d.shape == "capsule":
        shape = Capsule(tuple(p["a"]), tuple(p["b"]), float(p["radius"]))
    elif d.shape == "mesh":
        shape = region_mesh(model, int(p["region"]), float(p["margin"]))
    elif d.shape == "plane":
        shape = Plane(tuple(p["point"]), tuple(p["normal"]))
    else:
        shape = Polyline(np.asarray(p["points"], dtype=np.float64))
    return Fixture(d.id, d.role, shape, d.stiffness, d.active)


def tip_point(spec: InstrumentSpec) -> np.ndarray:
    """The instrument's tip in its own frame (m): the cautery hook's energy tip, else the far end of its jaws."""
    if spec.energy_tip is not None:
        return np.asarray(spec.energy_tip, dtype=np.float64)
    caps = spec.capsules
    far = int(np.argmax(np.maximum(caps[:, 2], caps[:, 5])))
    return np.array([0.0, 0.0, max(caps[far, 2], caps[far, 5])])


def keep_out(regions: list[Any], p0: np.ndarray | None, p1: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Where a tip moving from p0 (outside every region, or None: no previous tip) towards p1 may go: p1 unless
    the motion touches a region, else the first contact plus a slide along the boundary. Returns the point and
    the indices of the regions it was stopped by. Pure geometry; the result is never strictly inside a region."""
    target = np.asarray(p1, dtype=np.float64)
    hits: list[int] = []
    if p0 is None or any(inside(r, p0) for r in regions):
        # no motion to sweep (first pose, or a region switched on around the tip): push out to the nearest boundary
        for i, r in enumerate(regions):
            if inside(r, target):
                target = boundary_point(r, target, SKIN)
                hits.append(i)
        if any(inside(r, target) for r in regions):
            return (target if p0 is None else np.asarray(p0, dtype=np.float64).copy()), hits
        return target, hits
    start = np.asarray(p0, dtype=np.float64)
    for _ in range(MAX_SLIDES + 1):
        best, which = None, -1
        for i, r in enumerate(regions):
            t = first_contact(r, start, target)
            if t is not None and (best is None or t < best):
                best, which = t, i
        if best is None:
            return target, hits
        hits.append(which)
        motion = target - start
        contact = start + best * motion
        _, normal = regions[which].distance(contact)
        contact = contact + SKIN * normal  # rest on the boundary, not in it
        rest = (1.0 - best) * motion
        into = float(rest @ normal)
        slide = rest - min(into, 0.0) * normal
        start, target = contact, contact + slide
    return start, hits  # still sliding into regions after MAX_SLIDES: stop at the last contact


@dataclass
class FixtureOutcome:
    """What the fixtures did to one hand this tick."""

    position: np.ndarray
    energy: bool
    stopped_by: list[str] = field(default_factory=list)  # forbidden fixtures whose boundary the tip was held on
    entered: list[str] = field(default_factory=list)  # of those, the ones it was not already touching last tick
    energy_cut: str | None = None  # the no-energy zone that cut a pressed pedal
    deviation: float | None = None  # m from the nearest active guide (None: no guide active)


class FixtureEnforcer:
    """A room's fixtures and their state: which are on (``set_active``), each instrument's last tip, and
    ``constrain`` (see the module doc). Runs on the reactor thread where the room builds its control."""

    def __init__(self, fixtures: list[Fixture]) -> None:
        self.fixtures = list(fixtures)
        self.active = {f.id: f.active for f in self.fixtures}
        self.revision = 1
        self._tips: dict[int, np.ndarray] = {}  # instrument id -> its tip as physics got it last tick
        self._touching: dict[int, set[str]] = {}  # instrument id -> forbidden fixtures it was held on last tick

    @classmethod
    def for_model(cls, defs: tuple[FixtureDef, ...], model: Model) -> FixtureEnforcer:
        return cls([build_fixture(d, model) for d in defs])

    def ids(self) -> list[str]:
        return [f.id for f in self.fixtures]

    def set_active(self, fixture_id: str, on: bool) -> bool:
        """Switch a fixture; False when the id is unknown. A change bumps the revision clients see."""
        if fixture_id not in self.active:
            return False
        if self.active[fixture_id] != on:
            self.active[fixture_id] = on
            self.revision += 1
        return True

    def fixture_set(self) -> FixtureSet:
        """The set as the ``fixtures`` message carries it, with the current on/off state."""
        items = tuple(Fixture(f.id, f.role, f.shape, f.stiffness, self.active[f.id]) for f in self.fixtures)
        return FixtureSet(self.revision, items)

    def _on(self, role: str) -> list[Fixture]:
        return [f for f in self.fixtures if f.role == role and self.active[f.id]]

    def forget(self, instrument: int) -> None:
        """An instrument left (withdrawn): its next pose has no motion to sweep."""
        self._tips.pop(instrument, None)
        self._touching.pop(instrument, None)

    def constrain(
        self, instrument: int, spec: InstrumentSpec, position: np.ndarray, orientation: np.ndarray, energy: bool
    ) -> FixtureOutcome:
        """The hinge position and energy physics gets for one hand this tick (see the module doc)."""
        if not self.fixtures:
            return FixtureOutcome(position, energy)
        offset = quat_to_matrix(orientation) @ tip_point(spec)
        tip = np.asarray(position, dtype=np.float64) + offset
        forbidden = self._on("forbidden")
        outcome = FixtureOutcome(position, energy)
        if forbidden:
            held, hits = keep_out([f.shape for f in forbidden], self._tips.get(instrument), tip)
            if hits:
                outcome.position = held - offset
                tip = held
            touching = {forbidden[i].id for i in hits}
            touching |= {f.id for f in forbidden if f.shape.distance(tip)[0] <= 4 * SKIN}
            before = self._touching.get(instrument, set())
            outcome.stopped_by = sorted({forbidden[i].id for i in hits})
            outcome.entered = sorted(set(outcome.stopped_by) - before)
            self._touching[instrument] = touching
        else:
            self._touching.pop(instrument, None)
        self._tips[instrument] = tip.copy()
        if energy:
            zone = next((f for f in self._on("no_energy") if inside(f.shape, tip)), None)
            if zone is not None:
                outcome.energy, outcome.energy_cut = False, zone.id
        guides = self._on("guide")
        if guides:
            outcome.deviation = min(deviation(g.shape, tip) for g in guides)
        return outcome

    def touching(self, instrument: int) -> bool:
        """Whether the instrument's tip rests on an active forbidden region's boundary (after the last tick)."""
        return bool(self._touching.get(instrument))


def fixtures_message(enforcer: FixtureEnforcer) -> Message:
    """The ``fixtures`` message of a room's fixtures and their state now (netcode/protocol/fixtures.py)."""
    return Message("fixtures", fixture_fields(enforcer.fixture_set()))
