"""Scenarios as data: TOML files describing anatomy, materials, attachments, instruments, procedure steps
and the complications a mentor may inject. Validated on load (``rehearsal.scenario_schema``, pydantic);
every error names the file, the line and the key.

The format is documented in rehearsal/scenarios/SCENARIOS.md; `build_model` turns a scenario into a physics
Model (the only place a scenario touches physics).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from physics import materials as presets
from physics.anatomy import dicom_seg_to_mesh, nifti_to_mesh
from physics.environment import Environment
from physics.incision import slit
from physics.materials import Material
from physics.mesh import MeshError, TetMesh
from physics.mesh_io import load_tet_mesh
from physics.model import Model, build_model
from physics.needle import NeedleSpec
from physics.procedural import gallbladder, liver_lobe, tissue_block, vertices_in_box
from physics.suture_thread import ThreadSpec
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
    SutureSpec,
    suggest,
    validate,
)
from rehearsal.scenario_schema import THREAD_MATERIALS as THREAD_MATERIAL_NAMES
from rehearsal.skill_metrics import DEFAULT_SUTURE_LIMITS, DEFAULT_THRESHOLDS, SutureLimits, Thresholds

MATERIAL_PRESETS = {
    "liver": presets.LIVER,
    "gallbladder": presets.GALLBLADDER,
    "cystic_duct": presets.DUCT,
    "vessel": presets.VESSEL,
    "fat": presets.FAT,
    "muscle": presets.MUSCLE,
}
assert tuple(MATERIAL_PRESETS) == PRESETS, "scenario_schema.PRESETS lists the presets"
# Suture materials as thread parameters (physics.suture_thread.ThreadSpec): a monofilament is stiffer in bending
# (it keeps its curls) than a braid, which is supple and damps more. All 4-0-ish: 0.3 mm across.
THREAD_MATERIALS: dict[str, dict[str, float]] = {
    "polypropylene": {"radius": 0.00015, "bend_compliance": 3e-5, "damping": 2.0},
    "nylon": {"radius": 0.00015, "bend_compliance": 5e-5, "damping": 2.0},
    "silk": {"radius": 0.00015, "bend_compliance": 3e-4, "damping": 4.0},
    "polyglactin": {"radius": 0.00015, "bend_compliance": 2e-4, "damping": 3.0},
}
assert tuple(THREAD_MATERIALS) == THREAD_MATERIAL_NAMES, "scenario_schema.THREAD_MATERIALS lists them"
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
    box: Box | None  # None for the suturing checks
    distance: float = 0.0  # displacement: at least this far (m); no_energy_near: keep energy this far (m)
    target: str | None = None  # stitch_placed, thread_cut: the stitch target's id (thread_cut: None, any stitch)
    knot: str | None = None  # knot_tied: the knot's kind it must be (None: any tight knot)
    tolerance: float = 0.001  # wound_closed: the widest gap (m) left
    tail: tuple[float, float] = (0.003, 0.005)  # thread_cut: the tail (m) left above the knot, shortest and longest


@dataclass(frozen=True)
class StitchTarget:
    """A marked stitch: where the needle should enter and exit (rest coordinates), and within how far (m)."""

    id: str
    entry: tuple[float, float, float]
    exit: tuple[float, float, float]
    tolerance: float = 0.003


@dataclass(frozen=True)
class Suture:
    """A scenario's suturing (``[suture]``): the needle, its thread, the hand whose needle driver holds the
    needle at the start, the marked stitch targets and the suturing skill limits."""

    hand: str
    needle: NeedleSpec
    thread: ThreadSpec
    thread_material: str
    targets: tuple[StitchTarget, ...]
    loaded: bool = True  # the needle starts in the jaws of the needle driver in ``hand``
    needle_position: tuple[float, float, float] | None = None  # where it lies until taken (None: above the tissue)
    limits: SutureLimits = DEFAULT_SUTURE_LIMITS

    def target(self, target_id: str) -> StitchTarget | None:
        return next((t for t in self.targets if t.id == target_id), None)


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
    solver: str = "xpbd"  # the tissue solver's mode (physics.solver.MODES; ``[physics] solver``)
    max_participants: int = DEFAULT_MAX_PARTICIPANTS  # people connected to one room at once (``[room]``)
    skill_limits: Thresholds = DEFAULT_THRESHOLDS  # per-hand pass limits (``[skill_limits]``)
    fixtures: tuple[FixtureDef, ...] = ()  # virtual fixtures (``[[fixtures]]``, rehearsal/fixtures.py)
    suture: Suture | None = None  # a needle and thread (``[suture]``, physics/suturing.py)


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
        steps=tuple(Step(s.id, s.title, _check(s.check)) for s in spec.steps),
        complications=tuple(_complication(c) for c in spec.complications),
        substeps=spec.physics.substeps,
        tick_hz=spec.physics.tick_hz,
        solver=spec.physics.solver,
        source=path,
        max_participants=spec.room.max_participants,
        skill_limits=replace(DEFAULT_THRESHOLDS, **limits),
        fixtures=tuple(fixture_def(f) for f in spec.fixtures),
        suture=_suture(spec.suture, len(spec.materials)) if spec.suture is not None else None,
    )


def _check(c) -> Check:
    box = _box(c.box) if c.box is not None else None
    tolerance = c.tolerance if c.tolerance is not None else 0.001
    tail = (float(c.tail[0]), float(c.tail[1])) if c.tail is not None else (0.003, 0.005)
    return Check(c.kind, box, c.distance or 0.0, target=c.target, knot=c.knot, tolerance=tolerance, tail=tail)


def _suture(s: SutureSpec, regions: int) -> Suture:
    """The [suture] section as physics specs: the needle's arc as an angle, the thread as segments."""
    n = s.needle
    punctures = {r: n.puncture_force for r in range(regions)} if n.puncture_force is not None else {}
    needle = NeedleSpec(
        radius=n.radius, arc_angle=2.0 * math.pi * n.arc, wire_radius=n.wire_radius, puncture_force=punctures
    )
    t = s.thread
    thread = ThreadSpec(
        segments=max(2, round(t.length / t.segment_length)),
        segment_length=t.segment_length,
        **THREAD_MATERIALS[t.material],
    )
    targets = tuple(StitchTarget(x.id, _vec(x.entry), _vec(x.exit), x.tolerance) for x in s.targets)
    limits = SutureLimits(
        stitch_error_m=max((x.tolerance for x in s.targets), default=DEFAULT_SUTURE_LIMITS.stitch_error_m),
        needle_force_n=s.max_needle_force_n,
        tears=s.max_tears,
        stitch_time_s=s.max_stitch_time_s,
    )
    position = _vec(n.position) if n.position is not None else None
    return Suture(s.hand, needle, thread, t.material, targets, n.loaded, position, limits)


def _anatomy(spec: ScenarioSpec, path: Path, where: Located) -> dict[str, Any]:
    a = spec.anatomy
    out: dict[str, Any] = {"kind": a.kind}
    if a.kind == "tissue_block":
        out["size"], out["cells"] = _vec(a.size), tuple(a.cells)
        if a.incision is not None:
            i = a.incision
            out["incision"] = {"x": i.x, "depth": i.depth, "z": (i.z[0], i.z[1]), "gape": i.gape}
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
    return _mesh_and_wound(scenario)[0]


def _mesh_and_wound(scenario: Scenario) -> tuple[TetMesh, np.ndarray | None]:
    """The anatomy's mesh and, for a block with an incision, its wound edges as (k, 2) vertex pairs."""
    a = scenario.anatomy
    kind = a["kind"]
    if kind == "tissue_block":
        block = tissue_block(size=a["size"], cells=a["cells"])
        if "incision" not in a:
            return block, None
        i = a["incision"]
        try:
            cut = slit(block, i["x"], i["depth"], i["z"], gape=i["gape"], tol=1e-6)
        except ValueError as exc:
            raise ScenarioError(f"{scenario.source.name}: anatomy.incision: {exc}") from None
        return cut.mesh, np.stack([cut.left_edge, cut.right_edge], axis=1).astype(np.int32)
    return _anatomy_mesh(scenario), None


def _anatomy_mesh(scenario: Scenario) -> TetMesh:
    a = scenario.anatomy
    kind = a["kind"]
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
    """A physics Model for the scenario: mesh, one material per region, attachments and the table (and an
    incision's lips as the model's wound pairs, which ``physics.cutting.wound_gap`` measures)."""
    mesh, wound = _mesh_and_wound(scenario)
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
    model = build_model(
        mesh,
        list(scenario.materials),
        fixed=np.concatenate(fixed) if fixed else None,
        anchors=np.concatenate(anchors) if anchors else None,
        anchor_compliance=compliance,
        environment=env,
    )
    if wound is not None:
        model.wound_pairs = wound
    return model
