"""Scenarios as data: TOML files describing anatomy, materials, attachments, instruments, procedure steps
and the complications a mentor may inject. Validated on load (``rehearsal.scenario_schema``, pydantic);
every error names the file, the line and the key.

The format is documented in rehearsal/scenarios/SCENARIOS.md; `build_model` turns a scenario into a physics
Model (the only place a scenario touches physics).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from physics import materials as presets
from physics.anatomy import dicom_seg_to_mesh, nifti_to_mesh
from physics.environment import Environment
from physics.materials import Material
from physics.mesh import MeshError, TetMesh
from physics.mesh_io import load_tet_mesh
from physics.model import Model, build_model
from physics.procedural import gallbladder, liver_lobe, tissue_block, vertices_in_box
from physics.voxels import label_volume_to_mesh
from rehearsal.fixtures import FixtureDef, fixture_def
from rehearsal.scenario_schema import (
    ANATOMY_KINDS,
    CHECK_KINDS,
    COMPLICATION_KINDS,
    DEFAULT_MAX_PARTICIPANTS,
    INSTRUMENTS,
    MATERIAL_FIELDS,
    MAX_PARTICIPANTS,
    PRESETS,
    SCHEMA_VERSION,
    BoxSpec,
    ComplicationSpec,
    Located,
    MaterialSpec,
    ScenarioError,
    ScenarioSpec,
    suggest,
    validate,
)
from rehearsal.skill_metrics import DEFAULT_THRESHOLDS, Thresholds

MATERIAL_PRESETS = {
    "liver": presets.LIVER,
    "gallbladder": presets.GALLBLADDER,
    "cystic_duct": presets.DUCT,
    "vessel": presets.VESSEL,
    "fat": presets.FAT,
    "muscle": presets.MUSCLE,
}
assert tuple(MATERIAL_PRESETS) == PRESETS, "scenario_schema.PRESETS lists the presets"
__all__ = [
    "ANATOMY_KINDS",
    "CHECK_KINDS",
    "COMPLICATION_KINDS",
    "INSTRUMENTS",
    "MAX_PARTICIPANTS",
    "SCHEMA_VERSION",
    "ScenarioError",
]


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
    max_participants: int = DEFAULT_MAX_PARTICIPANTS  # people connected to one room at once (``[room]``)
    skill_limits: Thresholds = DEFAULT_THRESHOLDS  # per-hand pass limits (``[skill_limits]``)
    fixtures: tuple[FixtureDef, ...] = ()  # virtual fixtures (``[[fixtures]]``, rehearsal/fixtures.py)


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


def resolve_scenario(name_or_path: str, scenario_dir: Path | None = None) -> tuple[str, Path]:
    """(name, file) of a scenario a server offers, given its name (``basic_skills``, ``my_flap``) or the path
    of its file inside ``scenario_dir`` (``/srv/scenarios/my_flap.toml``). A path outside the scenario folder
    is refused, so an admin request cannot make the server read arbitrary files. Raises ScenarioError."""
    known = available_scenarios(scenario_dir)
    if name_or_path in known:
        return name_or_path, known[name_or_path]
    looks_like_path = name_or_path.endswith(".toml") or "/" in name_or_path or "\\" in name_or_path
    if looks_like_path:
        file = Path(name_or_path).expanduser()
        folder = Path(scenario_dir).resolve() if scenario_dir is not None else None
        if folder is None or file.resolve().parent != folder:
            where = f"the scenario folder {folder}" if folder else "no scenario folder (set scenario_dir)"
            raise ScenarioError(f"{name_or_path}: not in the server's scenario folder: it offers {where}")
        if known.get(file.stem) != file.resolve() and file.stem in packaged_scenarios():
            raise ScenarioError(
                f"{name_or_path}: its name {file.stem!r} is a packaged scenario's, which takes precedence"
            )
        if file.stem in known:
            return file.stem, known[file.stem]
        raise ScenarioError(f"{name_or_path}: no such scenario file")
    near = suggest(name_or_path, sorted(known))
    raise ScenarioError(f"unknown scenario {name_or_path!r}{near}")


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate one scenario file (a packaged scenario's name also works)."""
    path = Path(path)
    if not path.suffix and path.name in packaged_scenarios():
        path = packaged_scenarios()[path.name]
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    spec = validate(text, data, path.name)
    return _scenario(spec, path, Located(path.name, text))


def _vec(values: list[float]) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))


def _box(spec: BoxSpec) -> Box:
    return Box(_vec(spec.lo), _vec(spec.hi))


def _scenario(spec: ScenarioSpec, path: Path, where: Located) -> Scenario:
    """The validated spec as the domain's frozen Scenario (defaults filled in, files resolved)."""
    limits = {k: v for k, v in spec.skill_limits.model_dump().items() if v is not None}
    return Scenario(
        name=path.stem,
        title=spec.title,
        description=spec.description,
        anatomy=_anatomy(spec, path, where),
        materials=tuple(_material(m) for m in sorted(spec.materials, key=lambda m: m.region)),
        attachments=tuple(Attachment(a.kind, _box(a.box), a.compliance) for a in spec.attachments),
        table_height=spec.environment.table_height,
        friction=spec.environment.friction,
        instruments=tuple(spec.instruments),
        steps=tuple(
            Step(s.id, s.title, Check(s.check.kind, _box(s.check.box), s.check.distance or 0.0)) for s in spec.steps
        ),
        complications=tuple(_complication(c) for c in spec.complications),
        substeps=spec.physics.substeps,
        tick_hz=spec.physics.tick_hz,
        source=path,
        max_participants=spec.room.max_participants,
        skill_limits=replace(DEFAULT_THRESHOLDS, **limits),
        fixtures=tuple(fixture_def(f) for f in spec.fixtures),
    )


def _anatomy(spec: ScenarioSpec, path: Path, where: Located) -> dict[str, Any]:
    a = spec.anatomy
    out: dict[str, Any] = {"kind": a.kind}
    if a.kind == "tissue_block":
        out["size"], out["cells"] = _vec(a.size), tuple(a.cells)
    elif a.kind in ("liver_lobe", "gallbladder"):
        out["resolution"] = a.resolution if a.resolution is not None else (0.006 if a.kind == "liver_lobe" else 0.004)
    else:
        file = (path.parent / a.path).resolve()
        if not file.is_file():
            raise where.error(("anatomy", "path"), f"{file} does not exist")
        out["path"] = file
        if a.kind == "label_volume":
            out["spacing"] = _vec(a.spacing)
        if a.kind in ("nifti", "dicom_seg"):
            out["labels"] = _label_map(a.labels, where)
    return out


def _label_map(labels: dict[str, int], where: Located) -> dict[int, int]:
    """``{"3": 0, "7": 1}`` (TOML keys are strings) -> {label value: material region}."""
    out = {}
    for key, region in labels.items():
        if not key.isdigit() or not 1 <= int(key) <= 65535:
            raise where.error(("anatomy", "labels", key), "a label value is an integer in [1, 65535] (0 is background)")
        out[int(key)] = region
    if sorted(set(out.values())) != list(range(len(set(out.values())))):
        raise where.error(("anatomy", "labels"), "the regions must be 0, 1, 2, ... (every region used)")
    return out


def _material(m: MaterialSpec) -> Material:
    base = MATERIAL_PRESETS[m.preset] if m.preset is not None else None
    values = {key: getattr(m, key) if getattr(m, key) is not None else getattr(base, key) for key in MATERIAL_FIELDS}
    name = m.name if m.name is not None else (base.name if base is not None else f"region {m.region}")
    return Material(name, **values)


def _complication(c: ComplicationSpec) -> Complication:
    params: dict[str, Any] = {}
    if c.kind == "bleeding_point":
        params["position"] = _vec(c.position)
        params["rate_ml_per_s"] = c.rate_ml_per_s if c.rate_ml_per_s is not None else 0.5
    elif c.kind == "stiffer_tissue":
        params["region"] = c.region
        params["factor"] = c.factor if c.factor is not None else 2.0
    else:  # adhesion: held with the scenario's ligament compliance (the solver has one for all anchors)
        params["box"] = _box(c.box)
    return Complication(c.id, c.title, c.kind, params)


# --- building the physics world ----------------------------------------------------------------------


def build_mesh(scenario: Scenario) -> TetMesh:
    """The scenario's anatomy as a tet mesh (procedural, imported mesh, label volume, NIfTI label map or
    DICOM segmentation)."""
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
    if kind in ("nifti", "dicom_seg"):
        read = nifti_to_mesh if kind == "nifti" else dicom_seg_to_mesh
        try:
            return read(a["path"], a["labels"])
        except MeshError as exc:
            raise ScenarioError(f"{scenario.source.name}: anatomy: {exc}") from None
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
