"""A rigid curved surgical needle: held in jaws, punctures tissue, slides along its own arc, exits, is handed off.

The needle is its own object stepped after the tissue (`Needle.step(model, state, dt)` after `Solver.step`): it
reads the instruments' poses and jaws from the State and acts on the tissue positions `state.x` through small
numba kernels, so the solver needs no change. Needle frame: the arc's centre at the origin, the arc in the local
x-y plane, point(theta) = radius * (cos theta, sin theta, 0); the tail (where the thread is swaged) at theta = 0,
the tip at theta = arc_angle, so the needle advances tip first by turning about local +z.

* Before a puncture the tip presses the surface: the surface point under the tip is pushed out of the way and the
  force that takes (mass x push / dt^2, the solver's own estimate) is the tip force; past the material's puncture
  threshold the surface gives: a `puncture` event and the entry point is bound to the arc.
* In tissue, bound tissue points (entry, exit, and the vertices the arc passes close to, each at the offset it
  had when bound) are held on the arc: the needle may only turn about its own axis (friction drags the tissue
  along up to a limit, NEEDLE_FRICTION_N, then the needle slides through it); a pose that would move it
  sideways by more than `tunnel_tolerance` is clamped to the pure turn (`pose_clamped`, reason
  needle_sideways), smaller sideways moves drag the tissue and cost force.
* A pose that would carry the tip through the surface without a puncture is clamped at the surface
  (`pose_clamped`, reason needle_tunnel), like the pose guard clamps teleports.
* The tip crossing the surface outward is the exit (`needle_exit`); when the tail has passed the entry the
  stitch is placed (`stitch`): its entry and exit tissue points go to `Needle.passes` for the thread.
* Jaws closing near the needle take it (`needle_grasp`; from another holder: a hand-off), the holder's jaws
  opening or its withdrawal let it go (`needle_release`). A needle nobody holds stays where it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba as nb
import numpy as np

from physics.grasping import CLOSED_BELOW, OPEN_ABOVE
from physics.instruments import InstrumentSpec, Kind, matrix_to_quat, quat_to_matrix
from physics.model import Model
from physics.smallvec import norm3
from physics.solver import Event
from physics.state import State

PUNCTURE_FACTOR = 1.0  # default puncture force = strength x the tip's area (pi wire_radius^2) x this
TIP_CONTACT_RADIUS = 0.001  # m: the dimple's radius in the tip force's indentation model
BIND_RADIUS = 0.0015  # m: tissue vertices this close to the inserted arc are bound to it
NEEDLE_FRICTION_N = 0.03  # N: the most friction holds one bound tissue point to the wire before it slides
BIND_SHARE = 0.5  # share of a bound point's offset error corrected per frame (the tissue's give)
ARC_SAMPLES = 24


@dataclass(frozen=True)
class NeedleSpec:
    """A curved needle: arc radius (m), arc angle (rad; 3/8 circle = 3 pi / 4), wire radius (m).

    puncture_force: N per material region (index into model.materials) overriding the default threshold;
    tunnel_tolerance: m of sideways motion in tissue beyond which a pose is clamped."""

    radius: float = 0.012
    arc_angle: float = 3.0 * math.pi / 4.0
    wire_radius: float = 0.0004
    puncture_force: dict[int, float] = field(default_factory=dict)
    tunnel_tolerance: float = 0.002

    def __post_init__(self) -> None:
        ok = {
            "radius": 0.002 <= self.radius <= 0.05,
            "arc_angle": 0.3 <= self.arc_angle <= 1.9 * math.pi,
            "wire_radius": 0.0001 <= self.wire_radius <= 0.002,
            "tunnel_tolerance": 0.0 < self.tunnel_tolerance <= 0.02,
        }
        for name, good in ok.items():
            value = getattr(self, name)
            if not good or not math.isfinite(value):
                raise ValueError(f"needle: invalid {name} = {value!r}")
        for region, force in self.puncture_force.items():
            if not (math.isfinite(force) and force > 0):
                raise ValueError(f"needle: puncture_force of region {region} must be > 0 N, got {force!r}")

    def local_point(self, theta: float) -> np.ndarray:
        return np.array([self.radius * math.cos(theta), self.radius * math.sin(theta), 0.0])

    def samples(self, n: int = ARC_SAMPLES) -> np.ndarray:
        """(n, 3) points along the arc from tail to tip, needle frame."""
        t = np.linspace(0.0, self.arc_angle, n)
        return np.stack([self.radius * np.cos(t), self.radius * np.sin(t), np.zeros(n)], axis=1)


@dataclass
class TissuePoint:
    """A point of the tissue: a barycentric combination of three vertices."""

    vertices: np.ndarray  # (3,) int32
    weights: np.ndarray  # (3,)

    def position(self, x: np.ndarray) -> np.ndarray:
        return self.weights @ x[self.vertices]


@dataclass
class Stitch:
    """One completed pass of the needle: where it went in and out (tissue points), and when."""

    entry: TissuePoint
    exit: TissuePoint
    time: float
    entry_rest: np.ndarray  # rest-shape positions, for the procedure's targets
    exit_rest: np.ndarray
    # False for a bite into a wound that ended when the tip went on into the far lip (``reentry``): the tail has
    # not passed its entry yet, so the thread takes the entry once it has (physics/suture_thread.py)
    tail_through: bool = True


def grip_region(spec: InstrumentSpec) -> tuple[float, float] | None:
    """(length, radius) of the region between an instrument's jaws that can hold a needle, or None."""
    if spec.grasp_length > 0.0:
        return spec.grasp_length, spec.grasp_radius
    jaws = spec.capsules[spec.capsules[:, 7] != 0.0]
    if jaws.shape[0] == 0 or spec.kind is Kind.SCISSORS:
        return None
    return float(np.max(jaws[:, [2, 5]])), float(np.max(jaws[:, 6])) + 0.002


class Needle:
    """One needle in one world: its pose, holder, the pass in progress and the stitches placed."""

    def __init__(self, spec: NeedleSpec, model: Model, position, orientation, holder: int | None = None) -> None:
        self.spec = spec
        self.position = np.asarray(position, dtype=np.float64).reshape(3).copy()
        self.rotation = quat_to_matrix(np.asarray(orientation, dtype=np.float64) / np.linalg.norm(orientation))
        self.holder = holder
        self._grip: tuple[np.ndarray, np.ndarray] | None = None  # (p, R) of the needle in the holder's frame
        self._jaws: dict[int, float] = {}  # each instrument's jaw opening last frame
        self.punctured = False
        self.entry: TissuePoint | None = None
        self.exit: TissuePoint | None = None
        self.passes: list[Stitch] = []
        self.force = np.zeros(3)  # N the tissue exerts on the needle, last frame
        self.tip_force = 0.0  # N, last frame
        self.peak_force = 0.0  # N over the needle's life (tissue trauma)
        self.tears = 0
        self._bound_verts = np.zeros((0, 3), np.int32)
        self._bound_weights = np.zeros((0, 3))
        self._entry_rest = np.zeros(3)
        self._pressed: TissuePoint | None = None  # the surface point the tip presses (before a puncture)
        self._exit_rest = np.zeros(3)
        self._region_of_vertex = _vertex_regions(model)
        self._thresholds = _thresholds(spec, model)
        self._surface: tuple | None = None  # (surface, its vertices, vertex -> triangles CSR) for the tip
        self._tip_pose: tuple | None = None  # (position, rotation, tip, its tangent) for the pose they were made for

    def notify_model_changed(self, model: Model) -> None:
        """The model's topology changed (a split cut added vertices, a cut or burn removed tets): the tables this
        needle made from the mesh are made again, so the same needle (pose, holder, grip, the pass in progress,
        stitches, trauma) carries on in the new mesh instead of being rebuilt.

        The tissue points it holds stay valid: a split keeps every vertex id and appends the copies after them. A
        pressed surface point whose triangle is no longer on the surface is let go (the tip finds the surface
        again next frame). ValueError, changing nothing, if the model lacks a vertex the needle names."""
        points = [p for p in (self.entry, self.exit, self._pressed) if p is not None]
        points += [p for stitch in self.passes for p in (stitch.entry, stitch.exit)]
        named = max((int(p.vertices.max()) for p in points), default=-1)
        if self._bound_verts.size:
            named = max(named, int(self._bound_verts.max()))
        if named >= model.n_vertices:
            raise ValueError(f"needle: the model has {model.n_vertices} vertices, the needle holds vertex {named}")
        self._region_of_vertex = _vertex_regions(model)
        self._thresholds = _thresholds(self.spec, model)
        self._surface = None
        if self._pressed is not None and not _on_surface(model.surface, self._pressed.vertices):
            self._pressed = None

    # --- geometry --------------------------------------------------------------------------------------------

    @property
    def orientation(self) -> np.ndarray:
        """Unit quaternion (w, x, y, z) of the needle frame (for snapshots)."""
        return matrix_to_quat(self.rotation)

    def world(self, local: np.ndarray) -> np.ndarray:
        return self.position + local @ self.rotation.T

    def tip(self) -> np.ndarray:
        return self.world(self.spec.local_point(self.spec.arc_angle))

    def tail(self) -> np.ndarray:
        return self.world(self.spec.local_point(0.0))

    def polyline(self, n: int = ARC_SAMPLES) -> np.ndarray:
        return self.world(self.spec.samples(n))

    def threshold(self, region: int) -> float:
        return self._thresholds.get(region, min(self._thresholds.values(), default=1.0))

    # --- the frame -------------------------------------------------------------------------------------------

    def step(self, model: Model, state: State, dt: float) -> list[Event]:
        """Advance the needle by one frame after the tissue step; returns what happened."""
        events: list[Event] = []
        self._holding(state, events)
        prev_R = self.rotation.copy()
        target = self._target(state)
        if target is not None:
            p, R = target
            if self.punctured:
                p, R = self._slide(p, R, state.x, events)
            else:
                p, R = self._no_tunnel(model, state.x, p, R, events)
            self.position, self.rotation = p, R
            if self.holder is not None and self._grip is not None and target is not None:
                self._regrip(state)
        self.force[:] = 0.0
        self.tip_force = 0.0
        if self.punctured:
            self._in_tissue(model, state, prev_R, dt, events)
        else:
            self._press(model, state, dt, events)
        self.peak_force = max(self.peak_force, norm3(self.force), self.tip_force)
        return events

    def _holding(self, state: State, events: list[Event]) -> None:
        if self.holder is not None and self.holder not in state.instruments:
            events.append(Event("needle_release", self.holder, {"reason": "withdrawn"}))
            self.holder, self._grip = None, None
        for k, inst in state.instruments.items():
            before = self._jaws.get(k, inst.jaw)
            if k == self.holder and inst.jaw > OPEN_ABOVE:
                events.append(Event("needle_release", k, {"reason": "opened"}))
                self.holder, self._grip = None, None
            elif k != self.holder and before > CLOSED_BELOW >= inst.jaw and self._within_jaws(inst):
                detail = {} if self.holder is None else {"from": self.holder}
                self.holder = k
                self._grip = self._grip_of(inst)
                events.append(Event("needle_grasp", k, detail))
        self._jaws = {k: inst.jaw for k, inst in state.instruments.items()}

    def _within_jaws(self, inst) -> bool:
        region = grip_region(inst.spec)
        if region is None:
            return False
        length, radius = region
        local = (self.polyline() - inst.position) @ quat_to_matrix(inst.orientation)
        along = local[:, 2]
        radial = np.hypot(local[:, 0], local[:, 1])
        return bool(np.any((along >= -radius) & (along <= length + radius) & (radial <= radius)))

    def _grip_of(self, inst) -> tuple[np.ndarray, np.ndarray]:
        Rh = quat_to_matrix(inst.orientation)
        return Rh.T @ (self.position - inst.position), Rh.T @ self.rotation

    def _regrip(self, state: State) -> None:
        """After a clamp the needle turned in the jaws: keep the grip where the needle now is."""
        self._grip = self._grip_of(state.instruments[self.holder])

    def _target(self, state: State) -> tuple[np.ndarray, np.ndarray] | None:
        if self.holder is not None and self._grip is None and self.holder in state.instruments:
            self._grip = self._grip_of(state.instruments[self.holder])  # placed in these jaws at the start
        if self.holder is None or self._grip is None:
            return None
        inst = state.instruments[self.holder]
        Rh = quat_to_matrix(inst.orientation)
        gp, gR = self._grip
        return inst.position + Rh @ gp, Rh @ gR

    def _anchors(self, x: np.ndarray) -> list[np.ndarray]:
        return [a.position(x) for a in (self.entry, self.exit) if a is not None]

    def _slide(self, p, R, x, events) -> tuple[np.ndarray, np.ndarray]:
        """In tissue the needle may only turn about its own axis: a sideways pose is clamped to that turn."""
        worst = 0.0
        for a in self._anchors(x):
            local = R.T @ (a - p)
            worst = max(worst, math.hypot(math.hypot(local[0], local[1]) - self.spec.radius, local[2]))
        if worst <= self.spec.tunnel_tolerance:
            return p, R
        tip_now = R @ self.spec.local_point(self.spec.arc_angle) + p
        local = self.rotation.T @ (tip_now - self.position)
        turn = math.atan2(local[1], local[0]) - self.spec.arc_angle
        events.append(Event("pose_clamped", self.holder, {"reason": "needle_sideways", "offset": worst}))
        return self.position.copy(), self.rotation @ _rot_z(turn)

    def _no_tunnel(self, model: Model, x, p, R, events) -> tuple[np.ndarray, np.ndarray]:
        """A tip that would cross the surface inward without puncturing stops at it."""
        a = self.tip()
        b = R @ self.spec.local_point(self.spec.arc_angle) + p
        tri, t = first_crossing(x, model.surface, a, b, -1)
        if tri < 0:
            return p, R
        i, j, k = model.surface[tri]
        n = np.cross(x[j] - x[i], x[k] - x[i])
        n /= np.linalg.norm(n)
        if (x[i] - b) @ n <= self.spec.tunnel_tolerance:
            return p, R  # a shallow press: the tip pushes the surface in (_press)
        f = max(0.0, t)
        events.append(Event("pose_clamped", self.holder, {"reason": "needle_tunnel"}))
        q = _nlerp(matrix_to_quat(self.rotation), matrix_to_quat(R), f)
        return self.position + f * (p - self.position), quat_to_matrix(q)

    def _press(self, model: Model, state: State, dt: float, events: list[Event]) -> None:
        """The tip presses the surface point under it in (a kept contact); past the threshold the surface gives.

        The tip force is the indentation's (Boussinesq, a flat punch of TIP_CONTACT_RADIUS): 2 a E / (1 - nu^2)
        x how far the point is pushed in from its rest position along the surface normal."""
        x = state.x
        tip, tangent = self._tip_and_tangent()
        if self._pressed is not None:
            point = self._pressed.position(x)
            if np.linalg.norm(
                (tip - point) - ((tip - point) @ _normal(x, self._pressed)) * _normal(x, self._pressed)
            ) > (0.003):
                self._pressed = None  # slid off: find the surface again
        if self._pressed is None:
            tri, w0, w1, w2 = touch_near_tip(x, model.surface, *self._surface_table(model), tip, tangent,
                                             self.spec.wire_radius)  # fmt: skip
            if tri < 0:
                return
            self._pressed = TissuePoint(model.surface[tri].astype(np.int32), np.array([w0, w1, w2]))
        pt = self._pressed
        n = _normal(x, pt)
        gap = (tip - pt.position(x)) @ n - self.spec.wire_radius
        if gap > 0.0:
            if gap > 0.002:
                self._pressed = None
            return
        _push(x, model.inv_mass, pt, gap * n)
        rest = pt.weights @ model.rest_positions[pt.vertices]
        depth = max(0.0, float((rest - pt.position(x)) @ n))
        region = int(self._region_of_vertex[pt.vertices[np.argmax(pt.weights)]])
        material = model.materials[region]
        force = 2.0 * TIP_CONTACT_RADIUS * material.young / (1.0 - material.poisson**2) * depth
        self.tip_force = force
        self.force = n * force
        if force >= self.threshold(region):
            self.punctured = True
            self.entry, self._pressed = pt, None
            self._entry_rest = rest
            self._bind(np.zeros((0, 3), np.int32), np.zeros((0, 3)))
            events.append(Event("puncture", self.holder, {"force": force, "point": pt.position(x).tolist()}))

    def _tip_and_tangent(self) -> tuple[np.ndarray, np.ndarray]:
        """The tip and the way it moves (world), made once per pose: a needle lying still (nobody holds it) keeps
        its pose arrays, which are replaced, never written in place, when it moves."""
        cached = getattr(self, "_tip_pose", None)  # (a needle from a checkpoint written before it had one)
        if cached is not None and cached[0] is self.position and cached[1] is self.rotation:
            return cached[2], cached[3]
        a = self.spec.arc_angle
        tip, tangent = self.tip(), self.rotation @ np.array([-math.sin(a), math.cos(a), 0.0])
        self._tip_pose = (self.position, self.rotation, tip, tangent)
        return tip, tangent

    def _bind(self, verts: np.ndarray, weights: np.ndarray) -> None:
        anchors = [a for a in (self.entry, self.exit) if a is not None]
        self._bound_verts = np.ascontiguousarray(
            np.concatenate([np.stack([a.vertices for a in anchors]), verts]) if anchors else verts, dtype=np.int32
        )
        self._bound_weights = np.ascontiguousarray(
            np.concatenate([np.stack([a.weights for a in anchors]), weights]) if anchors else weights
        )

    def _in_tissue(self, model: Model, state: State, prev_R: np.ndarray, dt: float, events: list[Event]) -> None:
        x = state.x
        spec = self.spec
        # The turn this frame about the needle's own axis: the bound tissue follows a share of it.
        local_tip = prev_R.T @ (self.rotation @ spec.local_point(spec.arc_angle))
        turn = math.atan2(local_tip[1], local_tip[0]) - spec.arc_angle
        if self.exit is None:
            prev_tip = self.position + prev_R @ spec.local_point(spec.arc_angle)
            tri, t = first_crossing(x, model.surface, prev_tip, self.tip(), 1)
            if tri < 0:  # the tip may also come out of a surface it was already past (a slow exit), ahead of the
                # entry on the arc (behind it, after a reentry, lies the near lip's wall the tip came out of before)
                back = max(spec.arc_angle * 0.9, self._arc_angle(self.entry.position(x)) + 1e-6)
                tri, t = first_crossing(x, model.surface, self.world(spec.local_point(back)), self.tip(), 1)
            if tri >= 0:
                verts = model.surface[tri].astype(np.int32)
                point = prev_tip + t * (self.tip() - prev_tip)
                weights = _barycentric(x[verts], point)
                self.exit = TissuePoint(verts, weights)
                self._exit_rest = weights @ model.rest_positions[verts]
                events.append(Event("needle_exit", self.holder, {"point": self.exit.position(x).tolist()}))
        elif self._reentry(model, state, prev_R, events):
            return
        # Bind the vertices the inserted arc passes close to (entry and exit are always bound).
        verts, weights = self._near_arc(model, x)
        self._bind(verts, weights)
        n_anchor = sum(a is not None for a in (self.entry, self.exit))
        out = np.zeros(3)
        angles = np.empty(self._bound_verts.shape[0])
        R9 = np.ascontiguousarray(self.rotation).reshape(9)
        rest = np.einsum("ij,ijk->ik", self._bound_weights, model.rest_positions[self._bound_verts])
        hold_on_arc(
            x, model.inv_mass, model.mass, self._bound_verts, self._bound_weights, n_anchor,
            self.position, R9, spec.radius, turn, BIND_SHARE, 1.0 / (dt * dt), out, angles, rest,
            self._slip_length(model),
        )  # fmt: skip
        self.force = -out
        self.tip_force = float(np.linalg.norm(out))
        # The anchors' angle on the arc: below 0 the tail has passed it, above the arc the tip went back out.
        entry_angle = angles[0]
        if entry_angle > spec.arc_angle + 0.05 and self.exit is None:
            events.append(Event("needle_withdrawn", self.holder, {}))
            self._leave()
        elif entry_angle < 0.0 and self.exit is not None:
            stitch = Stitch(self.entry, self.exit, state.time, self._entry_rest, self._exit_rest)
            self.passes.append(stitch)
            events.append(
                Event("stitch", self.holder, {"entry": self.entry.position(x).tolist(),
                                              "exit": self.exit.position(x).tolist(), "index": len(self.passes) - 1})
            )  # fmt: skip
            self._leave()
        tear = self._tear_limit(model)
        if self.tip_force > tear and self.punctured:
            self.tears += 1
            state.counters["needle_tears"] += 1
            events.append(Event("tear", self.holder, {"force": self.tip_force, "limit": tear, "by": "needle"}))

    def _arc_angle(self, point: np.ndarray) -> float:
        """The angle (rad) of a world point about the needle's axis, from the tail (0) toward the tip."""
        local = self.rotation.T @ (point - self.position)
        return math.atan2(local[1], local[0])

    def _reentry(self, model: Model, state: State, prev_R: np.ndarray, events: list[Event]) -> bool:
        """Out into a wound, the tip going on into the far lip (crossing a surface inward): the bite ends there as
        a pass (``stitch``, its tail not through yet) and the far lip is punctured where the tip went in (the tip
        is already in it, so it does not press the surface first). Without this the tip ran through the far lip
        unchecked, and the press that followed the pass shoved that lip aside by the tip's depth."""
        x = state.x
        spec = self.spec
        prev_tip = self.position + prev_R @ spec.local_point(spec.arc_angle)
        tri, t = first_crossing(x, model.surface, prev_tip, self.tip(), -1)
        if tri < 0:
            return False
        stitch = Stitch(self.entry, self.exit, state.time, self._entry_rest, self._exit_rest, tail_through=False)
        self.passes.append(stitch)
        events.append(
            Event("stitch", self.holder, {"entry": self.entry.position(x).tolist(),
                                          "exit": self.exit.position(x).tolist(),
                                          "index": len(self.passes) - 1, "reentry": True})
        )  # fmt: skip
        verts = model.surface[tri].astype(np.int32)
        point = prev_tip + t * (self.tip() - prev_tip)
        weights = _barycentric(x[verts], point)
        self.entry, self.exit = TissuePoint(verts, weights), None
        self._entry_rest = weights @ model.rest_positions[verts]
        self._bind(np.zeros((0, 3), np.int32), np.zeros((0, 3)))
        events.append(Event("puncture", self.holder, {"force": 0.0, "point": point.tolist(), "reentry": True}))
        return True

    def _slip_length(self, model: Model) -> float:
        """How far (m) friction drags a bound tissue point along the wire from its rest before the wire slides
        through it: NEEDLE_FRICTION_N over the tissue's stiffness there (2 E x the tets' size)."""
        region = int(self._region_of_vertex[self.entry.vertices[0]]) if self.entry is not None else 0
        young = model.materials[region].young if model.materials else 1e4
        size = float(np.cbrt(6.0 * np.mean(model.rest_volume))) if model.rest_volume.size else 0.005
        return NEEDLE_FRICTION_N / (2.0 * young * size)

    def _surface_table(self, model: Model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The surface's vertices and, per vertex, its triangles (CSR), for the tip's broad phase; made once per
        surface (a topology change makes a new surface array)."""
        table = getattr(self, "_surface", None)  # (a needle from a checkpoint written before it had one)
        if table is None or table[0] is not model.surface:
            tris = model.surface
            flat = tris.reshape(-1).astype(np.int64)
            start = np.zeros(model.n_vertices + 1, dtype=np.int64)
            start[1:] = np.cumsum(np.bincount(flat, minlength=model.n_vertices))
            by_vertex = (np.argsort(flat, kind="stable") // 3).astype(np.int64)
            table = (tris, np.unique(flat), start, by_vertex)
            self._surface = table
        return table[1], table[2], table[3]

    def _tear_limit(self, model: Model) -> float:
        """The force at which the tissue around the needle rips (strength x the needle's side area in it)."""
        region = int(self._region_of_vertex[self.entry.vertices[0]]) if self.entry is not None else 0
        strength = model.materials[region].strength if model.materials else 1e5
        return strength * 2.0 * self.spec.wire_radius * self.spec.radius * 0.5

    def _leave(self) -> None:
        self.punctured = False
        self.entry = self.exit = None
        self._bind(np.zeros((0, 3), np.int32), np.zeros((0, 3)))

    def _near_arc(self, model: Model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = near_arc(x, model.inv_mass, self.position, np.ascontiguousarray(self.rotation).reshape(9),
                       self.spec.radius, self.spec.arc_angle, BIND_RADIUS)  # fmt: skip
        verts = np.repeat(ids[:, None], 3, axis=1).astype(np.int32)
        weights = np.zeros((ids.size, 3))
        weights[:, 0] = 1.0
        return verts, weights


def _thresholds(spec: NeedleSpec, model: Model) -> dict[int, float]:
    """Puncture force (N) per material region: the spec's, or strength x the tip's area x PUNCTURE_FACTOR."""
    return {
        r: spec.puncture_force.get(r, m.strength * math.pi * spec.wire_radius**2 * PUNCTURE_FACTOR)
        for r, m in enumerate(model.materials)
    }


def _on_surface(surface: np.ndarray, vertices: np.ndarray) -> bool:
    """Whether the triangle of these three vertices (any order) is one of the surface's."""
    return bool(np.any((np.sort(surface, axis=1) == np.sort(vertices)).all(axis=1)))


def _vertex_regions(model: Model) -> np.ndarray:
    out = np.zeros(model.n_vertices, dtype=np.int32)
    for c in range(4):
        out[model.tets[:, c]] = model.regions
    return out


def _normal(x: np.ndarray, point: TissuePoint) -> np.ndarray:
    """Outward unit normal of the surface triangle a pressed point lies on (winding as in model.surface)."""
    a, b, c = x[point.vertices]
    n = np.cross(b - a, c - a)
    return n / max(float(np.linalg.norm(n)), 1e-30)


def _push(x: np.ndarray, inv_mass: np.ndarray, point: TissuePoint, delta: np.ndarray) -> None:
    """Move a tissue point by delta, shared by its vertices in proportion to weight x inverse mass."""
    w = point.weights * inv_mass[point.vertices]
    denom = float(point.weights @ w)
    if denom > 0.0:
        x[point.vertices] += (w / denom)[:, None] * delta


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _nlerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    if np.dot(q0, q1) < 0:
        q1 = -q1
    q = (1 - t) * q0 + t * q1
    return q / np.linalg.norm(q)


def _barycentric(tri: np.ndarray, p: np.ndarray) -> np.ndarray:
    a, b, c = tri
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = v0 @ v0, v0 @ v1, v1 @ v1
    d20, d21 = v2 @ v0, v2 @ v1
    den = d00 * d11 - d01 * d01
    if den <= 0:
        return np.array([1.0, 0.0, 0.0])
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    out = np.clip(np.array([1.0 - v - w, v, w]), 0.0, 1.0)
    return out / out.sum()


TIP_REACH = 0.02  # m: a surface triangle is the tip's candidate when one of its corners lies this near it


@nb.njit(nogil=True, cache=True)
def tip_candidates(x, surf_verts, vt_start, vt_tris, n_tris, tip):
    """The surface triangles with a corner within TIP_REACH of the tip, ascending: the surface's vertices near
    the tip (one pass over them, a third of the work of testing every triangle's three corners), each one's
    triangles taken from the vertex-to-triangle table (vt_start, vt_tris: CSR by vertex id)."""
    mark = np.zeros(n_tris, dtype=np.bool_)
    count = 0
    r2 = TIP_REACH * TIP_REACH
    for v in surf_verts:
        d = (x[v, 0] - tip[0]) ** 2 + (x[v, 1] - tip[1]) ** 2 + (x[v, 2] - tip[2]) ** 2
        if d < r2:
            for e in range(vt_start[v], vt_start[v + 1]):
                t = vt_tris[e]
                if not mark[t]:
                    mark[t] = True
                    count += 1
    out = np.empty(count, dtype=np.int64)
    k = 0
    for t in range(n_tris):
        if mark[t]:
            out[k] = t
            k += 1
    return out


@nb.njit(nogil=True, cache=True)
def touch_near_tip(x, tris, surf_verts, vt_start, vt_tris, tip, tangent, wire_r):
    """`touch_tip` among `tip_candidates` in one call (the needle's frame while it lies or presses): the triangle
    the tip touches and the barycentric weights of the tip's projection on it; (-1, 0, 0, 0) when none."""
    near = tip_candidates(x, surf_verts, vt_start, vt_tris, tris.shape[0], tip)
    tri, w0, w1, w2, _ = touch_tip(x, tris, near, tip, tangent, wire_r)
    return tri, w0, w1, w2


@nb.njit(nogil=True, cache=True)
def touch_tip(x, tris, candidates, tip, tangent, wire_r):
    """The surface triangle the tip touches or is in (within 1 cm under it, facing the tip's motion), among the
    candidates (ascending ids; `tip_candidates`), the barycentric weights of the tip's projection on it and the
    depth; (-1, 0, 0, 0, 0) when none."""
    best, bw0, bw1, bw2, bdepth = -1, 0.0, 0.0, 0.0, -1.0
    for t in candidates:
        a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
        e1x, e1y, e1z = x[b, 0] - x[a, 0], x[b, 1] - x[a, 1], x[b, 2] - x[a, 2]
        e2x, e2y, e2z = x[c, 0] - x[a, 0], x[c, 1] - x[a, 1], x[c, 2] - x[a, 2]
        nx, ny, nz = e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x
        area2 = math.sqrt(nx * nx + ny * ny + nz * nz)
        if area2 <= 0.0:
            continue
        nx, ny, nz = nx / area2, ny / area2, nz / area2
        if nx * tangent[0] + ny * tangent[1] + nz * tangent[2] >= 0.0:
            continue  # the tip moves out of this face, not into it
        dist = (tip[0] - x[a, 0]) * nx + (tip[1] - x[a, 1]) * ny + (tip[2] - x[a, 2]) * nz
        depth = wire_r - dist
        if depth < 0.0 or depth > 0.01:
            continue
        vx, vy, vz = tip[0] - dist * nx - x[a, 0], tip[1] - dist * ny - x[a, 1], tip[2] - dist * nz - x[a, 2]
        d00 = e1x * e1x + e1y * e1y + e1z * e1z
        d01 = e1x * e2x + e1y * e2y + e1z * e2z
        d11 = e2x * e2x + e2y * e2y + e2z * e2z
        d20 = vx * e1x + vy * e1y + vz * e1z
        d21 = vx * e2x + vy * e2y + vz * e2z
        den = d00 * d11 - d01 * d01
        if den <= 0.0:
            continue
        v = (d11 * d20 - d01 * d21) / den
        w = (d00 * d21 - d01 * d20) / den
        u = 1.0 - v - w
        if u < -1e-6 or v < -1e-6 or w < -1e-6:
            continue
        if best < 0 or depth < bdepth:  # the face nearest the tip, not one deep under it
            best, bw0, bw1, bw2, bdepth = t, max(u, 0.0), max(v, 0.0), max(w, 0.0), depth
    if best < 0:
        return -1, 0.0, 0.0, 0.0, 0.0
    s = bw0 + bw1 + bw2
    return best, bw0 / s, bw1 / s, bw2 / s, bdepth


@nb.njit(nogil=True, cache=True)
def first_crossing(x, tris, a, b, direction):
    """The first surface triangle the segment a-b crosses (going in: direction -1, out: +1), and where (0..1).

    Returns (-1, 1.0) when it crosses none (Moller-Trumbore per triangle; outward normals from the winding)."""
    dx, dy, dz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
    lo = np.minimum(a, b)
    hi = np.maximum(a, b)
    best, best_t = -1, 1.0
    for t in range(tris.shape[0]):
        i, j, k = tris[t, 0], tris[t, 1], tris[t, 2]
        outside = False
        for d in range(3):
            m0 = min(x[i, d], x[j, d], x[k, d])
            m1 = max(x[i, d], x[j, d], x[k, d])
            if m1 < lo[d] - 1e-9 or m0 > hi[d] + 1e-9:
                outside = True
        if outside:
            continue
        e1x, e1y, e1z = x[j, 0] - x[i, 0], x[j, 1] - x[i, 1], x[j, 2] - x[i, 2]
        e2x, e2y, e2z = x[k, 0] - x[i, 0], x[k, 1] - x[i, 1], x[k, 2] - x[i, 2]
        nx, ny, nz = e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x
        facing = nx * dx + ny * dy + nz * dz
        if facing * direction <= 0.0:
            continue
        px, py, pz = dy * e2z - dz * e2y, dz * e2x - dx * e2z, dx * e2y - dy * e2x
        det = e1x * px + e1y * py + e1z * pz
        if abs(det) < 1e-30:
            continue
        inv = 1.0 / det
        sx, sy, sz = a[0] - x[i, 0], a[1] - x[i, 1], a[2] - x[i, 2]
        u = (sx * px + sy * py + sz * pz) * inv
        if u < 0.0 or u > 1.0:
            continue
        qx, qy, qz = sy * e1z - sz * e1y, sz * e1x - sx * e1z, sx * e1y - sy * e1x
        v = (dx * qx + dy * qy + dz * qz) * inv
        if v < 0.0 or u + v > 1.0:
            continue
        s = (e2x * qx + e2y * qy + e2z * qz) * inv
        if 0.0 <= s <= 1.0 and s < best_t:
            best, best_t = t, s
    return best, best_t


@nb.njit(nogil=True, cache=True)
def near_arc(x, inv_mass, p, R, radius, arc, reach):
    """Movable vertices within reach of the arc (needle frame p, R row-major 3x3), in id order."""
    n = x.shape[0]
    keep = np.zeros(n, dtype=np.bool_)
    count = 0
    r_out = radius + reach
    for i in range(n):
        if inv_mass[i] <= 0.0:
            continue
        rx, ry, rz = x[i, 0] - p[0], x[i, 1] - p[1], x[i, 2] - p[2]
        if rx * rx + ry * ry + rz * rz > r_out * r_out:
            continue
        lx = R[0] * rx + R[3] * ry + R[6] * rz
        ly = R[1] * rx + R[4] * ry + R[7] * rz
        lz = R[2] * rx + R[5] * ry + R[8] * rz
        ang = math.atan2(ly, lx)
        if ang < 0.0 or ang > arc:
            continue
        rho = math.sqrt(lx * lx + ly * ly)
        if (rho - radius) ** 2 + lz * lz <= reach * reach:
            keep[i] = True
            count += 1
    out = np.empty(count, dtype=np.int64)
    c = 0
    for i in range(n):
        if keep[i]:
            out[c] = i
            c += 1
    return out


@nb.njit(nogil=True, cache=True)
def hold_on_arc(x, inv_mass, mass, verts, weights, n_anchor, p, R, radius, turn, share, inv_dt2, out_force,
                out_angle, rest, slip):  # fmt: skip
    """Pull the first n_anchor bound tissue points (entry, exit) onto the arc and the others (vertices the wire
    passes) halfway in to it, keeping their side; each follows the needle's `turn` (rad) about its axis (static
    friction) as long as that keeps it within `slip` (m, along the arc) of its rest position `rest`, else the
    wire slides through it (it is dragged no farther; its elasticity may take it back).
    out_force sums the force on the tissue (N); out_angle gets each point's angle on the arc before the pull."""
    for g in range(verts.shape[0]):
        px = py = pz = 0.0
        for c in range(3):
            v, b = verts[g, c], weights[g, c]
            px += b * x[v, 0]
            py += b * x[v, 1]
            pz += b * x[v, 2]
        rx, ry, rz = px - p[0], py - p[1], pz - p[2]
        lx = R[0] * rx + R[3] * ry + R[6] * rz
        ly = R[1] * rx + R[4] * ry + R[7] * rz
        lz = R[2] * rx + R[5] * ry + R[8] * rz
        ang = math.atan2(ly, lx)
        out_angle[g] = ang
        rho = math.sqrt(lx * lx + ly * ly)
        want_rho = radius
        want_z = 0.0
        if g >= n_anchor:  # a vertex the wire passes close by keeps its side, pulled halfway in to the wire
            want_rho = radius + 0.5 * (rho - radius)
            want_z = 0.5 * lz
        qx, qy, qz = rest[g, 0] - p[0], rest[g, 1] - p[1], rest[g, 2] - p[2]
        ang_rest = math.atan2(R[1] * qx + R[4] * qy + R[7] * qz, R[0] * qx + R[3] * qy + R[6] * qz)
        reach = slip / radius
        a2 = min(max(ang + turn, min(ang, ang_rest - reach)), max(ang, ang_rest + reach))
        tx, ty, tz = want_rho * math.cos(a2), want_rho * math.sin(a2), want_z
        dlx, dly, dlz = (tx - lx) * share, (ty - ly) * share, (tz - lz) * share
        dx = R[0] * dlx + R[1] * dly + R[2] * dlz
        dy = R[3] * dlx + R[4] * dly + R[5] * dlz
        dz = R[6] * dlx + R[7] * dly + R[8] * dlz
        denom = 0.0
        for c in range(3):
            denom += weights[g, c] * weights[g, c] * inv_mass[verts[g, c]]
        if denom <= 0.0:
            continue
        for c in range(3):
            v, b = verts[g, c], weights[g, c]
            s = inv_mass[v] * b / denom
            x[v, 0] += s * dx
            x[v, 1] += s * dy
            x[v, 2] += s * dz
            m = mass[v] * s * inv_dt2
            out_force[0] += m * dx
            out_force[1] += m * dy
            out_force[2] += m * dz
