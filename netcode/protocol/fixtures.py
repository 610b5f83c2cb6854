"""The ``fixtures`` message: the room's virtual fixtures, their shapes and which are switched on.

Why: a client's haptic loop renders forbidden regions as walls and guidance fixtures as springs at 1 kHz, so it
needs the geometry itself, not just events. The server sends the whole set (reliable, ordered) to each
newcomer after ``welcome`` and to the whole room whenever a mentor switches a fixture on or off; each message
replaces the set held before (``revision`` only grows). The geometry is ``netcode.protocol.fixture_shapes``'s.

| field     | kind          | meaning |
|-----------|---------------|---------|
| revision  | int           | grows with every change (a client keeps the highest) |
| ids       | list of str   | the fixtures' ids (from the scenario), N <= ``MAX_FIXTURES`` |
| roles     | list of str   | ``forbidden`` (tips may not enter), ``no_energy`` (energy is cut inside), ``guide`` |
| shapes    | list of str   | ``sphere``, ``capsule``, ``mesh`` (regions); ``plane``, ``path`` (guides) |
| active    | list of bool  | switched on now |
| stiffness | list of float | N/m: the guide's spring, the wall stiffness a haptic device should render for a region |
| params    | list of bytes | f32 LE values per shape (below) |
| triangles | list of bytes | u32 LE vertex indices, 3 per triangle (``mesh`` only; empty otherwise) |

Parameters: sphere cx cy cz r; capsule ax ay az bx by bz r; plane px py pz nx ny nz; path x y z per point
(2..``MAX_PATH_POINTS``); mesh: its margin, then x y z per vertex (<= ``MAX_MESH_VERTICES``, with at most
``MAX_MESH_TRIANGLES`` triangles).

A port decodes with the same checks as ``fixture_set_from_fields``: equal list lengths, known roles and shapes,
the right number of finite parameters, indices that name vertices; a bad message is dropped whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from netcode.messaging.messages import Field, MessageRegistry
from netcode.protocol.fixture_shapes import Capsule, Guide, Plane, Polyline, Region, Sphere, TriangleMesh

MAX_FIXTURES = 32
MAX_PATH_POINTS = 256
MAX_MESH_TRIANGLES = 4096
MAX_MESH_VERTICES = 4096
ROLES = ("forbidden", "no_energy", "guide")
REGION_SHAPES = ("sphere", "capsule", "mesh")
GUIDE_SHAPES = ("plane", "path")
MAX_ID_LENGTH = 64
MAX_PARAM_BYTES = 4 * (1 + 3 * MAX_MESH_VERTICES)


class FixtureSetError(ValueError):
    """Inconsistent ``fixtures`` fields (lengths, unknown roles or shapes, bad parameters)."""


@dataclass(frozen=True, eq=False)
class Fixture:
    """One virtual fixture: its id, role, shape (a region for forbidden / no_energy, a guide for guide), the
    stiffness its haptic rendering uses (N/m) and whether it is on."""

    id: str
    role: str
    shape: Region | Guide
    stiffness: float
    active: bool = True

    @property
    def shape_name(self) -> str:
        return _SHAPE_NAMES[type(self.shape)]


_SHAPE_NAMES = {Sphere: "sphere", Capsule: "capsule", TriangleMesh: "mesh", Plane: "plane", Polyline: "path"}


@dataclass(frozen=True)
class FixtureSet:
    """The room's fixtures as one message carries them."""

    revision: int
    fixtures: tuple[Fixture, ...]

    def active(self, role: str) -> list[Fixture]:
        """The fixtures of one role that are switched on."""
        return [f for f in self.fixtures if f.active and f.role == role]


def register_fixture_types(registry: MessageRegistry) -> MessageRegistry:
    """Add ``fixtures`` to ``registry`` (returns it)."""
    n = MAX_FIXTURES
    params = MAX_PARAM_BYTES
    registry.register(
        "fixtures",
        Field("revision", "int"),
        # item kinds are checked by fixture_set_from_fields (a registry's items= holds scalars of one kind only)
        Field("ids", "list", max_length=n),
        Field("roles", "list", max_length=n),
        Field("shapes", "list", max_length=n),
        Field("active", "list", max_length=n),
        Field("stiffness", "list", items="float", max_length=n),
        Field("params", "list", max_length=n),
        Field("triangles", "list", max_length=n),
        doc=f"The room's virtual fixtures (<= {n}), their shapes and on/off state; replaces the set held before "
        f"(params: f32 LE, at most {params} bytes each).",
    )
    return registry


def _params(shape: Region | Guide) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(shape, Sphere):
        return np.array([*shape.center, shape.radius]), np.zeros(0)
    if isinstance(shape, Capsule):
        return np.array([*shape.a, *shape.b, shape.radius]), np.zeros(0)
    if isinstance(shape, Plane):
        return np.array([*shape.point, *shape.normal]), np.zeros(0)
    if isinstance(shape, Polyline):
        return shape.points.reshape(-1), np.zeros(0)
    return np.concatenate([[shape.margin], shape.vertices.reshape(-1)]), shape.triangles.reshape(-1)


def fixture_fields(fixtures: FixtureSet) -> dict[str, Any]:
    """The ``fixtures`` message fields of a set (``ValueError`` beyond the limits)."""
    items = fixtures.fixtures
    if len(items) > MAX_FIXTURES:
        raise ValueError(f"{len(items)} fixtures, at most {MAX_FIXTURES}")
    params, triangles = [], []
    for f in items:
        values, tris = _params(f.shape)
        params.append(np.asarray(values, dtype="<f4").tobytes())
        triangles.append(np.asarray(tris, dtype="<u4").tobytes())
    return {
        "revision": int(fixtures.revision),
        "ids": [f.id for f in items],
        "roles": [f.role for f in items],
        "shapes": [f.shape_name for f in items],
        "active": [bool(f.active) for f in items],
        "stiffness": [float(f.stiffness) for f in items],
        "params": params,
        "triangles": triangles,
    }


def _shape(name: str, values: np.ndarray, tris: np.ndarray) -> Region | Guide:
    def need(count: int) -> None:
        if values.size != count:
            raise FixtureSetError(f"a {name} has {count} parameters, got {values.size}")

    if name == "sphere":
        need(4)
        if values[3] <= 0:
            raise FixtureSetError("a sphere's radius must be > 0")
        return Sphere(tuple(values[:3].tolist()), float(values[3]))
    if name == "capsule":
        need(7)
        if values[6] <= 0:
            raise FixtureSetError("a capsule's radius must be > 0")
        return Capsule(tuple(values[:3].tolist()), tuple(values[3:6].tolist()), float(values[6]))
    if name == "plane":
        need(6)
        if np.linalg.norm(values[3:]) < 1e-9:
            raise FixtureSetError("a plane's normal must not be zero")
        return Plane(tuple(values[:3].tolist()), tuple(values[3:].tolist()))
    if name == "path":
        if values.size % 3 or not 2 <= values.size // 3 <= MAX_PATH_POINTS:
            raise FixtureSetError(f"a path has 2..{MAX_PATH_POINTS} points of 3 values")
        return Polyline(values.reshape(-1, 3))
    if values.size < 10 or (values.size - 1) % 3 or (values.size - 1) // 3 > MAX_MESH_VERTICES:
        raise FixtureSetError(f"a mesh has a margin and 3..{MAX_MESH_VERTICES} vertices of 3 values")
    if tris.size == 0 or tris.size % 3 or tris.size // 3 > MAX_MESH_TRIANGLES:
        raise FixtureSetError(f"a mesh has 1..{MAX_MESH_TRIANGLES} triangles of 3 indices")
    vertices = values[1:].reshape(-1, 3)
    if tris.max() >= len(vertices) or values[0] < 0:
        raise FixtureSetError("a mesh's indices must name its vertices and its margin be >= 0")
    return TriangleMesh(vertices, tris.reshape(-1, 3).astype(np.int64), float(values[0]))


def fixture_set_from_fields(fields: Mapping[str, Any]) -> FixtureSet:
    """A ``FixtureSet`` from ``fixtures`` fields; raises ``FixtureSetError`` when they are inconsistent."""
    names = ("ids", "roles", "shapes", "active", "stiffness", "params", "triangles")
    lists = [fields[name] for name in names]
    if len({len(v) for v in lists}) != 1:
        raise FixtureSetError("ids, roles, shapes, active, stiffness, params and triangles must be equally long")
    out = []
    for fid, role, shape, active, stiffness, raw, raw_tris in zip(*lists, strict=True):
        kinds_ok = isinstance(fid, str) and 0 < len(fid) <= MAX_ID_LENGTH and isinstance(active, bool)
        if not (kinds_ok and isinstance(raw, bytes) and isinstance(raw_tris, bytes)):
            raise FixtureSetError("ids are strings (1..64 characters), active booleans, params and triangles bytes")
        if not isinstance(stiffness, int | float) or isinstance(stiffness, bool):
            raise FixtureSetError("stiffness values are numbers")
        if len(raw) > MAX_PARAM_BYTES or len(raw_tris) > 12 * MAX_MESH_TRIANGLES:
            raise FixtureSetError("a fixture's params or triangles are too long")
        if role not in ROLES:
            raise FixtureSetError(f"unknown fixture role {role!r}")
        if shape not in (GUIDE_SHAPES if role == "guide" else REGION_SHAPES):
            raise FixtureSetError(f"a {role} fixture cannot be a {shape!r}")
        if len(raw) % 4 or len(raw_tris) % 4:
            raise FixtureSetError("params are f32 and triangles u32 arrays")
        values = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        if not np.all(np.isfinite(values)) or not (np.isfinite(stiffness) and stiffness >= 0):
            raise FixtureSetError(f"fixture {fid!r}: parameters and stiffness must be finite (stiffness >= 0)")
        tris = np.frombuffer(raw_tris, dtype="<u4").astype(np.int64)
        out.append(Fixture(str(fid), role, _shape(shape, values, tris), float(stiffness), bool(active)))
    return FixtureSet(int(fields["revision"]), tuple(out))
