"""Scenarios as data: TOML files describing anatomy, materials, attachments, instruments, procedure steps
and the complications a mentor may inject. Validated on load; every error names the file and the key.

The format is documented in rehearsal/scenarios/README.md; `build_model` turns a scenario into a physics
Model (the only place a scenario touches physics).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from physics import materials as presets
from physics.environment import Environment
from physics.materials import Material
from physics.mesh import TetMesh
from physics.mesh_io import load_tet_mesh
from physics.model import Model, build_model
from physics.procedural import gallbladder, liver_lobe, tissue_block, vertices_in_box
from physics.voxels import label_volume_to_mesh

SCHEMA_VERSION = 1
ANATOMY_KINDS = ("tissue_block", "liver_lobe", "gallbladder", "mesh", "label_volume")
INSTRUMENTS = ("grasper", "scissors", "cautery_hook")
CHECK_KINDS = ("displacement", "divided", "no_energy_near")
COMPLICATION_KINDS = ("bleeding_point", "stiffer_tissue", "adhesion")
MATERIAL_PRESETS = {
    "liver": presets.LIVER,
    "gallbladder": presets.GALLBLADDER,
    "cystic_duct": presets.DUCT,
    "vessel": presets.VESSEL,
    "fat": presets.FAT,
    "muscle": presets.MUSCLE,
}


# (field, lowest, highest) accepted for a material, in SI units (see physics.materials.Material).
MATERIAL_RANGES = (
    ("young", 1.0, 1e10),
    ("poisson", 0.0, 0.499),
    ("density", 1.0, 1e5),
    ("damping", 0.0, 1e3),
    ("strength", 1.0, 1e10),
    ("burn_rate", 0.0, 1e3),
)


class ScenarioError(ValueError):
    """A scenario file that cannot be used, with the file and the key that is wrong."""


@dataclass(frozen=True)
class Box:
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Mask of the (n, 3) points inside the box grown by ``margin`` on every side."""
        lo, hi = np.asarray(self.lo) - margin, np.asarray(self.hi) + margin
        return np.all((points >= lo) & (points <= hi), axis=1)


@dataclass(frozen=True)
class Attachment:
    kind: str  # "fixed" (pinned) or "anchor" (held by a compliant ligament)
    box: Box
    compliance: float = 1e-4


@dataclass(frozen=True)
class Check:
    """How the server decides a step is done (or, for no_energy_near, that it was violated)."""

    kind: str
    box: Box
    distance: float = 0.0  # displacement: at least this far (m); no_energy_near: keep energy this far (m)


@dataclass(frozen=True)
class Step:
    id: str
    title: str
    check: Check


@dataclass(frozen=True)
class Complication:
    id: str
    title: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


DEFAULT_MAX_PARTICIPANTS = 16  # a full team (5 roles) plus a class of observers
MAX_PARTICIPANTS = 128  # half the netcode server's client slots: one room never takes every slot


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    anatomy: dict[str, Any]
    materials: tuple[Material, ...]
    attachments: tuple[Attachment, ...]
    table_height: float | None
    friction: float
    instruments: tuple[str, ...]
    steps: tuple[Step, ...]
    complications: tuple[Complication, ...]
    substeps: int
    tick_hz: int
    source: Path
    max_participants: int = 16  # people connected to one room at once (``[room] max_participants``)


# --- loading --------------------------------------------------------------------------------------------


def packaged_scenarios() -> dict[str, Path]:
    """The scenarios shipped in rehearsal/scenarios, by name (file stem)."""
    folder = Path(str(resources.files("rehearsal") / "scenarios"))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def available_scenarios(scenario_dir: Path | None = None) -> dict[str, Path]:
    """The scenarios a server offers, by name: the packaged ones plus the ``*.toml`` files in
    ``scenario_dir`` (``settings.scenario_dir``). A packaged name takes precedence: a file in the folder
    with the same stem is ignored, so ``basic_skills`` always means the shipped scenario."""
    found = {}
    if scenario_dir is not None and Path(scenario_dir).is_dir():
        found = {p.stem: p for p in sorted(Path(scenario_dir).glob("*.toml"))}
    found.update(packaged_scenarios())
    return found


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate one scenario file (a packaged scenario's name also works)."""
    path = Path(path)
    if not path.suffix and path.name in packaged_scenarios():
        path = packaged_scenarios()[path.name]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return _parse(_Reader(path, data, ""), path)


class _Reader:
    """Typed access to a TOML table that reports errors as 'file: key.path: problem'."""

    def __init__(self, path: Path, table: dict[str, Any], prefix: str) -> None:
        self.path, self.table, self.prefix = path, table, prefix

    def fail(self, key: str, problem: str) -> ScenarioError:
        return ScenarioError(f"{self.path.name}: {self.prefix}{key}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                raise self.fail(key, "missing")
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.fail(key, f"expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
        return value

    def number(self, key: str, default: Any = ..., low: float = -math.inf, high: float = math.inf) -> float:
        value = self.get(key, float, default)
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            raise self.fail(key, f"{value!r} is not in [{low}, {high}]")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(key, str, default)
        if value not in options:
            raise self.fail(key, f"unknown {value!r} (known: {', '.join(options)})")
        return value

    def vec3(self, key: str, default: Any = ...) -> tuple[float, float, float]:
        value = self.get(key, list, default)
        if not (len(value) == 3 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
            raise self.fail(key, "expected a list of 3 numbers")
        if not all(math.isfinite(v) for v in value):
            raise self.fail(key, "numbers must be finite")
        return (float(value[0]), float(value[1]), float(value[2]))

    def child(self, key: str, default: Any = ...) -> _Reader:
        return _Reader(self.path, self.get(key, dict, default), f"{self.prefix}{key}.")

    def children(self, key: str) -> list[_Reader]:
        items = self.get(key, list, [])
        if not all(isinstance(item, dict) for item in items):
            raise self.fail(key, "expected a list of tables ([[" + key + "]])")
        return [_Reader(self.path, item, f"{self.prefix}{key}[{i}].") for i, item in enumerate(items)]

    def box(self, key: str) -> Box:
        b = self.child(key)
        lo, hi = b.vec3("lo"), b.vec3("hi")
        if any(h < low for low, h in zip(lo, hi, strict=True)):
            raise self.fail(key, "hi must be >= lo on every axis")
        return Box(lo, hi)


def _parse(r: _Reader, path: Path) -> Scenario:
    schema = r.get("schema", int)
    if schema != SCHEMA_VERSION:
        raise r.fail("schema", f"version {schema} is not supported (this server reads {SCHEMA_VERSION})")
    anatomy = _anatomy(r.child("anatomy"), path)
    by_region = dict(_material(m) for m in r.children("materials"))
    if sorted(by_region) != list(range(len(by_region))) or len(by_region) != len(r.table.get("materials", [])):
        raise r.fail("materials", "need one [[materials]] entry per region 0, 1, 2, ... (each region once)")
    mats = tuple(by_region[i] for i in range(len(by_region)))
    env = r.child("environment", {})
    physics = r.child("physics", {})
    room = r.child("room", {})
    instruments = tuple(r.get("instruments", list))
    for i, name in enumerate(instruments):
        if name not in INSTRUMENTS:
            raise r.fail(f"instruments[{i}]", f"unknown {name!r} (known: {', '.join(INSTRUMENTS)})")
    steps = tuple(_step(s) for s in r.children("steps"))
    complications = tuple(_complication(c) for c in r.children("complications"))
    for what, items in (("steps", steps), ("complications", complications)):
        ids = [item.id for item in items]
        if len(set(ids)) != len(ids):
            raise r.fail(what, "ids must be unique")
    return Scenario(
        name=path.stem,
        title=r.get("title", str),
        description=r.get("description", str, ""),
        anatomy=anatomy,
        materials=mats,
        attachments=tuple(_attachment(a) for a in r.children("attachments")),
        table_height=env.number("table_height", None),
        friction=env.number("friction", 0.5, 0.0, 5.0),
        instruments=instruments,
        steps=steps,
        complications=complications,
        substeps=int(physics.number("substeps", 20, 1, 400)),
        tick_hz=int(physics.number("tick_hz", 60, 10, 240)),
        source=path,
        max_participants=_whole(room, "max_participants", DEFAULT_MAX_PARTICIPANTS, 1, MAX_PARTICIPANTS),
    )


def _whole(r: _Reader, key: str, default: int, low: int, high: int) -> int:
    """An integer key in [low, high] (a float such as 16.5 is refused, not rounded)."""
    value = r.get(key, int, default)
    if not low <= value <= high:
        raise r.fail(key, f"{value!r} is not in [{low}, {high}]")
    return value


def _anatomy(a: _Reader, path: Path) -> dict[str, Any]:
    kind = a.choice("kind", ANATOMY_KINDS)
    out: dict[str, Any] = {"kind": kind}
    if kind == "tissue_block":
        out["size"] = a.vec3("size")
        cells = a.get("cells", list)
        if not (len(cells) == 3 and all(isinstance(c, int) and 1 <= c <= 200 for c in cells)):
            raise a.fail("cells", "expected 3 integers in [1, 200]")
        out["cells"] = tuple(cells)
    elif kind in ("liver_lobe", "gallbladder"):
        out["resolution"] = a.number("resolution", 0.006 if kind == "liver_lobe" else 0.004, 0.002, 0.02)
    else:
        file = (path.parent / a.get("path", str)).resolve()
        if not file.is_file():
            raise a.fail("path", f"{file} does not exist")
        out["path"] = file
        if kind == "label_volume":
            out["spacing"] = a.vec3("spacing")
    return out


def _material(m: _Reader) -> tuple[int, Material]:
    region = m.get("region", int)
    base = MATERIAL_PRESETS[m.choice("preset", tuple(MATERIAL_PRESETS))] if "preset" in m.table else None
    fields = {
        key: m.number(key, getattr(base, key) if base is not None else ..., low, high)
        for key, low, high in MATERIAL_RANGES
    }
    return region, Material(m.get("name", str, base.name if base else f"region {region}"), **fields)


def _attachment(a: _Reader) -> Attachment:
    kind = a.choice("kind", ("fixed", "anchor"))
    return Attachment(kind, a.box("box"), a.number("compliance", 1e-4, 1e-9, 1.0))


def _step(s: _Reader) -> Step:
    check = s.child("check")
    kind = check.choice("kind", CHECK_KINDS)
    distance = check.number("distance", 0.0 if kind == "divided" else ..., 0.0, 1.0)
    return Step(s.get("id", str), s.get("title", str), Check(kind, check.box("box"), distance))


def _complication(c: _Reader) -> Complication:
    kind = c.choice("kind", COMPLICATION_KINDS)
    params: dict[str, Any] = {}
    if kind == "bleeding_point":
        params["position"] = c.vec3("position")
        params["rate_ml_per_s"] = c.number("rate_ml_per_s", 0.5, 0.0, 100.0)
    elif kind == "stiffer_tissue":
        params["region"] = c.get("region", int)
        params["factor"] = c.number("factor", 2.0, 1.0, 100.0)
    else:  # adhesion: held with the scenario's ligament compliance (the solver has one for all anchors)
        params["box"] = c.box("box")
    return Complication(c.get("id", str), c.get("title", str), kind, params)


# --- building the physics world ----------------------------------------------------------------------


def build_mesh(scenario: Scenario) -> TetMesh:
    """The scenario's anatomy as a tet mesh (procedural, imported mesh or label volume)."""
    a = scenario.anatomy
    kind = a["kind"]
    if kind == "tissue_block":
        return tissue_block(size=a["size"], cells=a["cells"])
    if kind == "liver_lobe":
        return liver_lobe(a["resolution"])
    if kind == "gallbladder":
        return gallbladder(a["resolution"])
    if kind == "mesh":
        return load_tet_mesh(a["path"])[0]
    with np.load(a["path"]) as data:
        if "labels" not in data:
            raise ScenarioError(f"{scenario.source.name}: anatomy.path: {a['path'].name} has no 'labels' array")
        return label_volume_to_mesh(data["labels"], spacing=a["spacing"])[0]


def build_world(scenario: Scenario) -> Model:
    """A physics Model for the scenario: mesh, one material per region, attachments and the table."""
    mesh = build_mesh(scenario)
    regions = int(mesh.regions.max()) + 1
    if len(scenario.materials) < regions:
        raise ScenarioError(
            f"{scenario.source.name}: materials: the anatomy has {regions} regions but only "
            f"{len(scenario.materials)} materials are given"
        )
    fixed, anchors, compliance = [], [], 1e-4
    for att in scenario.attachments:
        ids = vertices_in_box(mesh, att.box.lo, att.box.hi)
        if ids.size == 0:
            raise ScenarioError(f"{scenario.source.name}: attachments: a {att.kind} box holds no vertex")
        if att.kind == "fixed":
            fixed.append(ids)
        else:
            anchors.append(ids)
            compliance = att.compliance
    env = Environment.table(scenario.table_height, scenario.friction) if scenario.table_height is not None else None
    return build_model(
        mesh,
        list(scenario.materials),
        fixed=np.concatenate(fixed) if fixed else None,
        anchors=np.concatenate(anchors) if anchors else None,
        anchor_compliance=compliance,
        environment=env,
    )
