"""The scenario file format as pydantic models: every key's type, default and range, in one place.

``validate(text, data, name)`` checks a parsed TOML scenario and raises ``ScenarioError`` on the first problem as
``file.toml:LINE: key.path: problem``: unknown keys (with the nearest valid name), wrong types, values out of
range, and the rules that span keys (a kind's own keys, boxes, one material per region, unique ids). The
format's reference for authors is rehearsal/scenarios/SCENARIOS.md; tests/rehearsal/test_scenario_schema.py
checks that it names every key defined here.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from pydantic.fields import FieldInfo

SCHEMA_VERSION = 1
ANATOMY_KINDS = ("tissue_block", "liver_lobe", "gallbladder", "mesh", "label_volume", "nifti", "dicom_seg")
INSTRUMENTS = ("grasper", "scissors", "cautery_hook", "needle_driver")
CHECK_KINDS = (
    "displacement", "divided", "no_energy_near", "stitch_placed", "knot_tied", "wound_closed", "thread_cut"
)  # fmt: skip
SUTURE_CHECKS = ("stitch_placed", "knot_tied", "wound_closed", "thread_cut")  # need a [suture] section
KNOT_KINDS = ("square", "surgeons", "granny")  # physics/knots.py's names for a knot's kind
THREAD_MATERIALS = ("polypropylene", "nylon", "silk", "polyglactin")  # rehearsal.scenario.THREAD_MATERIALS
MAX_STITCH_TARGETS = 32  # physics.suturing.MAX_HOLDS holds: an entry and an exit each
COMPLICATION_KINDS = ("bleeding_point", "stiffer_tissue", "adhesion")
PRESETS = ("liver", "gallbladder", "cystic_duct", "vessel", "fat", "muscle")
DEFAULT_MAX_PARTICIPANTS = 16  # a full team (5 roles) plus a class of observers
MAX_PARTICIPANTS = 128  # half the netcode server's client slots: one room never takes every slot


class ScenarioError(ValueError):
    """A scenario file that cannot be used, with the file, the line and the key that is wrong."""


# Numbers: TOML integers are accepted where a float is meant (``young = 5000``); booleans and strings never are.
Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Vec3 = Annotated[list[Float], Field(min_length=3, max_length=3)]


def _range(low: float, high: float) -> Any:
    return Annotated[float, Field(strict=True, allow_inf_nan=False, ge=low, le=high)]


def _int_range(low: int, high: int) -> Any:
    return Annotated[int, Field(strict=True, ge=low, le=high)]


class _Table(BaseModel):
    """A TOML table: unknown keys are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BoxSpec(_Table):
    lo: Vec3  # m, rest coordinates
    hi: Vec3


class AnatomySpec(_Table):
    kind: Literal["tissue_block", "liver_lobe", "gallbladder", "mesh", "label_volume", "nifti", "dicom_seg"]
    size: Annotated[list[_range(1e-4, 10.0)], Field(min_length=3, max_length=3)] | None = None  # m
    cells: Annotated[list[_int_range(1, 200)], Field(min_length=3, max_length=3)] | None = None
    resolution: _range(0.002, 0.02) | None = None  # m; default 0.006 (liver_lobe), 0.004 (gallbladder)
    path: StrictStr | None = None  # relative to the scenario file
    spacing: Annotated[list[_range(1e-5, 1.0)], Field(min_length=3, max_length=3)] | None = None  # m per voxel
    # nifti / dicom_seg: label value or segment number (a TOML key, e.g. 3) -> material region; the rest is
    # background
    labels: dict[StrictStr, _int_range(0, 255)] | None = None
    incision: IncisionSpec | None = None  # tissue_block: a slit to close (physics/incision.py)


class IncisionSpec(_Table):
    """A slit in a tissue block's top face along the plane x = ``x`` (on a plane of mesh vertices), ``depth``
    deep over ``z`` = [from, to]; ``gape``: how far its lips part in the middle (a wound in tense skin)."""

    x: Float  # m, rest coordinates
    depth: _range(1e-4, 1.0)  # m
    z: Annotated[list[Float], Field(min_length=2, max_length=2)]  # m: [from, to]
    gape: _range(0.0, 0.1) = 0.0  # m


AnatomySpec.model_rebuild()

# The keys each anatomy kind needs and may have (beside ``kind``).
ANATOMY_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tissue_block": (("size", "cells"), ("incision",)),
    "liver_lobe": ((), ("resolution",)),
    "gallbladder": ((), ("resolution",)),
    "mesh": (("path",), ()),
    "label_volume": (("path", "spacing"), ()),
    "nifti": (("path", "labels"), ()),
    "dicom_seg": (("path", "labels"), ()),
}


class MaterialSpec(_Table):
    region: _int_range(0, 255)
    preset: Literal["liver", "gallbladder", "cystic_duct", "vessel", "fat", "muscle"] | None = None
    name: StrictStr | None = None  # default: the preset's name, else "region N"
    young: _range(1.0, 1e10) | None = None  # Pa
    poisson: _range(0.0, 0.499) | None = None
    density: _range(1.0, 1e5) | None = None  # kg/m^3
    damping: _range(0.0, 1e3) | None = None  # 1/s
    strength: _range(1.0, 1e10) | None = None  # Pa
    burn_rate: _range(0.0, 1e3) | None = None  # damage per second of energy


MATERIAL_FIELDS = ("young", "poisson", "density", "damping", "strength", "burn_rate")


class EnvironmentSpec(_Table):
    table_height: Float | None = None  # m; omitted: no table
    friction: _range(0.0, 5.0) = 0.5


class PhysicsSpec(_Table):
    solver: Literal["xpbd", "implicit"] = "xpbd"  # physics.solver.MODES
    substeps: _int_range(1, 400) = 20
    tick_hz: _int_range(10, 240) = 60


class RoomSpec(_Table):
    max_participants: _int_range(1, MAX_PARTICIPANTS) = DEFAULT_MAX_PARTICIPANTS


class AttachmentSpec(_Table):
    kind: Literal["fixed", "anchor"]
    box: BoxSpec
    compliance: _range(1e-9, 1.0) = 1e-4  # m/N


class CheckSpec(_Table):
    kind: Literal[
        "displacement", "divided", "no_energy_near", "stitch_placed", "knot_tied", "wound_closed", "thread_cut"
    ]
    box: BoxSpec | None = None  # displacement, divided, no_energy_near
    distance: _range(0.0, 1.0) | None = None  # m; displacement, no_energy_near (divided may have it)
    target: StrictStr | None = None  # stitch_placed, thread_cut: the id of a [[suture.targets]] entry
    knot: Literal["square", "surgeons", "granny"] | None = None  # knot_tied: the kind it must be (default: any)
    tolerance: _range(0.0, 0.1) | None = None  # m; wound_closed: the widest gap left (default 0.001)
    # m; thread_cut: [shortest, longest] tail left above the knot (default [0.003, 0.005], surgeons' 3-5 mm)
    tail: Annotated[list[_range(0.0, 0.05)], Field(min_length=2, max_length=2)] | None = None


# The keys each check kind needs and may have (beside ``kind``).
CHECK_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "displacement": (("box", "distance"), ()),
    "divided": (("box",), ("distance",)),
    "no_energy_near": (("box", "distance"), ()),
    "stitch_placed": (("target",), ()),
    "knot_tied": ((), ("knot",)),
    "wound_closed": ((), ("tolerance",)),
    "thread_cut": ((), ("target", "tail")),
}


class StepSpec(_Table):
    id: StrictStr
    title: StrictStr
    check: CheckSpec


class ComplicationSpec(_Table):
    id: StrictStr
    title: StrictStr
    kind: Literal["bleeding_point", "stiffer_tissue", "adhesion"]
    position: Vec3 | None = None  # m (bleeding_point)
    rate_ml_per_s: _range(0.0, 100.0) | None = None  # bleeding_point, default 0.5
    region: _int_range(0, 255) | None = None  # stiffer_tissue
    factor: _range(1.0, 100.0) | None = None  # stiffer_tissue, default 2
    box: BoxSpec | None = None  # adhesion


COMPLICATION_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bleeding_point": (("position",), ("rate_ml_per_s",)),
    "stiffer_tissue": (("region",), ("factor",)),
    "adhesion": (("box",), ()),
}


class SkillLimitsSpec(_Table):
    """Per-hand pass limits (a metric passes when <= its limit); omitted keys keep the server's defaults."""

    active_time_s: _range(0.0, 86400.0) | None = None
    path_length_m: _range(0.0, 1e4) | None = None
    angular_path_rad: _range(0.0, 1e6) | None = None
    mean_squared_jerk: _range(0.0, 1e12) | None = None
    idle_time_s: _range(0.0, 86400.0) | None = None
    volume_m3: _range(0.0, 10.0) | None = None
    collisions: _int_range(0, 100000) | None = None
    peak_force_n: _range(0.0, 1e4) | None = None
    excessive_force_s: _range(0.0, 86400.0) | None = None
    tissue_damage: _int_range(0, 10**7) | None = None
    misapplied_energy_events: _int_range(0, 100000) | None = None
    misapplied_energy_s: _range(0.0, 86400.0) | None = None
    # virtual fixtures (rehearsal/fixtures.py)
    fixture_violations: _int_range(0, 100000) | None = None
    forbidden_contact_s: _range(0.0, 86400.0) | None = None
    guidance_deviation_m: _range(0.0, 1.0) | None = None


# --- virtual fixtures ([[fixtures]]: forbidden regions, no-energy zones, guidance; rehearsal/fixtures.py) ------

FIXTURE_ROLES = ("forbidden", "no_energy", "guide")
FIXTURE_SHAPES = ("sphere", "capsule", "mesh", "plane", "path")
MAX_SCENARIO_FIXTURES = 32  # netcode.protocol.fixtures.MAX_FIXTURES: one message carries them all
MAX_FIXTURE_PATH_POINTS = 256


class FixtureSpec(_Table):
    """One virtual fixture: a region a tip may not enter (``forbidden``), a region where energy is cut
    (``no_energy``), or a path or plane the haptic loop guides the tip along (``guide``)."""

    id: StrictStr
    title: StrictStr = ""
    role: Literal["forbidden", "no_energy", "guide"]
    shape: Literal["sphere", "capsule", "mesh", "plane", "path"]
    center: Vec3 | None = None  # m (sphere)
    radius: _range(1e-4, 1.0) | None = None  # m (sphere, capsule)
    a: Vec3 | None = None  # m (capsule: one end of its axis)
    b: Vec3 | None = None  # m (capsule: the other end)
    region: _int_range(0, 255) | None = None  # mesh: the material region whose tets (at rest) it surrounds
    margin: _range(0.0, 0.05) | None = None  # m (mesh: how far beyond the region's surface), default 0.002
    point: Vec3 | None = None  # m (plane)
    normal: Vec3 | None = None  # plane
    points: Annotated[list[Vec3], Field(min_length=2, max_length=MAX_FIXTURE_PATH_POINTS)] | None = None  # path
    stiffness: _range(0.0, 1e5) | None = None  # N/m: guide spring (default 200), rendered wall (default 2000)
    active: StrictBool = True  # switched on when the room starts (a mentor may switch it live)


FIXTURE_SHAPE_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sphere": (("center", "radius"), ()),
    "capsule": (("a", "b", "radius"), ()),
    "mesh": (("region",), ("margin",)),
    "plane": (("point", "normal"), ()),
    "path": (("points",), ()),
}
_FIXTURE_COMMON = ("role", "shape", "stiffness", "active")


def _fixture_checks(spec: ScenarioSpec, where: Located) -> None:
    """Each fixture's shape keys, a role that fits the shape, unique ids, and meshes over existing regions."""
    fixtures = spec.fixtures
    if len(fixtures) > MAX_SCENARIO_FIXTURES:
        raise where.error(("fixtures",), f"at most {MAX_SCENARIO_FIXTURES} fixtures")
    ids = [f.id for f in fixtures]
    if len(set(ids)) != len(ids):
        raise where.error(("fixtures",), "ids must be unique")
    regions = {m.region for m in spec.materials}
    for i, f in enumerate(fixtures):
        loc = ("fixtures", i)
        guide = f.shape in ("plane", "path")
        if (f.role == "guide") != guide:
            shapes = "plane or path" if f.role == "guide" else "sphere, capsule or mesh"
            raise where.error((*loc, "shape"), f"a {f.role} fixture is a {shapes}, not a {f.shape}")
        required, optional = FIXTURE_SHAPE_KEYS[f.shape]
        _kind_keys(f, (required, (*optional, *_FIXTURE_COMMON)), loc, f"a {f.shape} fixture", where)
        if f.shape == "plane" and sum(v * v for v in f.normal) < 1e-18:
            raise where.error((*loc, "normal"), "must not be zero")
        if f.shape == "mesh" and f.region not in regions:
            raise where.error((*loc, "region"), f"no material region {f.region} in this scenario")


# --- suturing ([suture]: a needle, its thread and the marked stitch targets; physics/suturing.py) ----------


class NeedleTomlSpec(_Table):
    """The curved needle (physics.needle.NeedleSpec): its arc's radius, how much of a circle it is, its wire."""

    radius: _range(0.002, 0.05) = 0.012  # m
    arc: _range(0.1, 0.9) = 0.375  # share of a full circle: 3/8 circle = 0.375, 1/2 circle = 0.5
    wire_radius: _range(0.0001, 0.002) = 0.0004  # m
    puncture_force: _range(0.001, 100.0) | None = None  # N in every region (default: from its strength)
    position: Vec3 | None = None  # m: where the needle's centre lies before a hand takes it (default: above)
    loaded: StrictBool = True  # it starts in the jaws of the needle driver in the [suture] hand


class ThreadTomlSpec(_Table):
    """The suture thread (physics.suture_thread.ThreadSpec): its length, segments and material."""

    length: _range(0.01, 2.0) = 0.3  # m
    segment_length: _range(0.0005, 0.02) = 0.003  # m
    material: Literal["polypropylene", "nylon", "silk", "polyglactin"] = "polypropylene"


class StitchTargetSpec(_Table):
    """Where one stitch should go in and come out (rest coordinates, like the steps' boxes), and how near."""

    id: StrictStr
    entry: Vec3  # m
    exit: Vec3  # m
    tolerance: _range(1e-4, 0.05) = 0.003  # m from each point


class SutureSpec(_Table):
    hand: Literal["left", "right"] = "right"  # which hand a surgeon's needle driver is in when they join
    needle: NeedleTomlSpec = NeedleTomlSpec()
    thread: ThreadTomlSpec = ThreadTomlSpec()
    targets: Annotated[list[StitchTargetSpec], Field(max_length=MAX_STITCH_TARGETS)] = []
    max_needle_force_n: _range(0.0, 1e3) = 3.0  # skill metrics: the peak force on the needle that passes
    max_tears: _int_range(0, 1000) = 0  # skill metrics: tissue torn by the needle or pulled through by a suture
    max_stitch_time_s: _range(0.0, 86400.0) = 120.0  # skill metrics: puncture to stitch placed


def _suture_checks(spec: ScenarioSpec, where: Located) -> None:
    """A needle driver to hold the needle, unique target ids, and steps that name targets which exist."""
    suture = spec.suture
    uses = [i for i, s in enumerate(spec.steps) if s.check.kind in SUTURE_CHECKS]
    if suture is None:
        if uses:
            raise where.error(("steps", uses[0], "check", "kind"), "needs a [suture] section")
        return
    if "needle_driver" not in spec.instruments:
        raise where.error(("instruments",), "a scenario with a [suture] section needs the needle_driver")
    if spec.suture.thread.length / spec.suture.thread.segment_length > 2000:
        raise where.error(("suture", "thread", "segment_length"), "at most 2000 segments: make them longer")
    if spec.suture.thread.length < 2 * spec.suture.thread.segment_length:
        raise where.error(("suture", "thread", "length"), "at least two segments long")
    ids = [t.id for t in suture.targets]
    if len(set(ids)) != len(ids):
        raise where.error(("suture", "targets"), "ids must be unique")
    for i, t in enumerate(suture.targets):
        if sum((a - b) ** 2 for a, b in zip(t.entry, t.exit, strict=True)) < 1e-12:
            raise where.error(("suture", "targets", i, "exit"), "must differ from the entry")
    cuts = [i for i in uses if spec.steps[i].check.kind == "thread_cut"]
    if cuts and "scissors" not in spec.instruments:
        raise where.error(("steps", cuts[0], "check", "kind"), "a thread_cut step needs scissors in the instruments")
    for i in cuts:
        tail = spec.steps[i].check.tail
        if tail is not None and not 0.0 < tail[0] <= tail[1]:
            raise where.error(("steps", i, "check", "tail"), "must be [shortest, longest] with 0 < shortest <= longest")
    for i in uses:
        target = spec.steps[i].check.target
        if target is not None and target not in ids:
            near = suggest(target, ids) if ids else " (no [[suture.targets]] are given)"
            raise where.error(("steps", i, "check", "target"), f"no stitch target {target!r}{near}")


class ScenarioSpec(_Table):
    schema_: StrictInt = Field(alias="schema")
    title: StrictStr
    description: StrictStr = ""
    instruments: Annotated[list[Literal["grasper", "scissors", "cautery_hook", "needle_driver"]], Field(min_length=1)]
    anatomy: AnatomySpec
    materials: Annotated[list[MaterialSpec], Field(min_length=1)]
    environment: EnvironmentSpec = EnvironmentSpec()
    physics: PhysicsSpec = PhysicsSpec()
    room: RoomSpec = RoomSpec()
    attachments: list[AttachmentSpec] = []
    steps: list[StepSpec] = []
    complications: list[ComplicationSpec] = []
    skill_limits: SkillLimitsSpec = SkillLimitsSpec()
    fixtures: list[FixtureSpec] = []  # virtual fixtures (its own block below)
    suture: SutureSpec | None = None  # suturing (its own block above)


# --- errors: file, line, key ---------------------------------------------------------------------------


Loc = tuple[str | int, ...]


def key_path(loc: Loc) -> str:
    """('materials', 0, 'young') -> 'materials[0].young'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)(?:\.[A-Za-z0-9_\-.]+)?\s*=")


def line_of(text: str, loc: Loc) -> int | None:
    """The 1-based line of the TOML text where the key at ``loc`` is written (or its table's header, or None).

    Tables (``[a]``, ``[[a]]`` counted by occurrence), keys, and keys of inline tables on the key's line."""
    counts: dict[str, int] = {}
    current: Loc = ()
    sections: list[tuple[Loc, int, int]] = []  # (table path, header line, first line)
    start = 1
    for number, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if not m:
            continue
        sections.append((current, start, number - 1))
        name = m.group(2).replace('"', "").replace("'", "")
        if m.group(1) == "[[":
            counts[name] = counts.get(name, -1) + 1
            current = (*name.split("."), counts[name])
        else:
            current = tuple(name.split("."))
        start = number
    sections.append((current, start, len(text.splitlines())))
    lines = text.splitlines()
    best: int | None = None
    for path, first, last in sections:
        if tuple(loc[: len(path)]) != path:
            continue
        rest = loc[len(path) :]
        if not rest:
            best = best or (first if path else None)
            continue
        for number in range(first, last + 1):
            m = _KEY.match(lines[number - 1])
            if m and m.group(1) == rest[0]:
                inner = [p for p in rest[1:] if isinstance(p, str)]
                if all(re.search(rf"\b{re.escape(k)}\s*=", lines[number - 1]) for k in inner):
                    return number
                best = number
        if best is None and path:
            best = first
    if best is None:  # a list of tables as a whole ([[materials]]): its first header
        best = next((first for path, first, _ in sections if loc and tuple(path[: len(loc)]) == tuple(loc)), None)
    return best


def _unwrap(tp: Any) -> Any:
    """The model or container type under Annotated and Optional."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp


def _field_at(loc: Loc) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model that holds the last key of ``loc`` and that key's field (None where loc leaves the models)."""
    tp: Any = ScenarioSpec
    holder, info = None, None
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, int) or typing.get_origin(tp) is dict:
            args = typing.get_args(tp)
            tp = args[-1] if args else None
            continue
        if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
            return None, None
        holder = tp
        info = next((f for n, f in tp.model_fields.items() if (f.alias or n) == part), None)
        if info is None:
            return holder, None
        tp = info.annotation
    return holder, info


def _bounds(info: FieldInfo | None) -> tuple[Any, Any]:
    """(ge, le) of a field, looked for through Optional, Annotated and a list's element type."""
    low = high = None

    def scan(item: Any) -> None:
        nonlocal low, high
        for meta in getattr(item, "metadata", None) or ():
            low = getattr(meta, "ge", low) if getattr(meta, "ge", None) is not None else low
            high = getattr(meta, "le", high) if getattr(meta, "le", None) is not None else high
            scan(meta)
        for arg in typing.get_args(item):
            scan(arg)

    if info is not None:
        scan(info)
        scan(info.annotation)
    return low, high


def _valid_keys(holder: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in holder.model_fields.items()]


def suggest(word: str, options: list[str]) -> str:
    """' (did you mean 'young'?)' for the nearest option, else the list of valid names."""
    near = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(options)})"


_KINDS = {int: "int", float: "float", str: "string", bool: "boolean", list: "list", dict: "table"}


def _problem(error: dict[str, Any]) -> str:
    kind, value, loc, ctx = error["type"], error.get("input"), error["loc"], error.get("ctx") or {}
    got = _KINDS.get(type(value), type(value).__name__)
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        holder, _ = _field_at((*loc[:-1], ""))
        return f"unknown key {loc[-1]!r}" + (suggest(str(loc[-1]), _valid_keys(holder)) if holder else "")
    if kind == "literal_error":
        return f"unknown {value!r} (known: {ctx.get('expected', '')})"
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = _bounds(_field_at(loc)[1])
        if low is None or high is None:  # a list element: its range is on the element type
            low, high = ctx.get("ge", low), ctx.get("le", high)
        return f"{value!r} is not in [{low}, {high}]"
    if kind == "finite_number":
        return "numbers must be finite"
    if kind in ("too_short", "too_long"):
        want = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        if kind == "too_short" and want not in (1, 3):  # e.g. a fixture's path: at least 2 points
            return f"expected a list of at least {want} items, got {ctx.get('actual_length')}"
        return (
            f"expected a list of at least {want} item(s)"
            if kind == "too_short" and want == 1
            else (f"expected a list of 3 items, got {ctx.get('actual_length')}")
        )
    expected = {
        "int_type": "int",
        "float_type": "float",
        "string_type": "string",
        "bool_type": "boolean",
        "list_type": "list",
        "model_type": "table",
        "dict_type": "table",
    }.get(kind)
    if expected is not None:
        return (
            f"expected {expected}, got {got} {value!r}"
            if not isinstance(value, dict | list)
            else (f"expected {expected}, got {got}")
        )
    return error["msg"]


class Located:
    """Raises ScenarioError as 'file.toml:LINE: key.path: problem' for one scenario text."""

    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text

    def error(self, loc: Loc, problem: str) -> ScenarioError:
        line = line_of(self.text, loc)
        where = f"{self.name}:{line}" if line else self.name
        return ScenarioError(f"{where}: {key_path(loc)}: {problem}" if loc else f"{where}: {problem}")


def validate(text: str, data: dict[str, Any], name: str) -> ScenarioSpec:
    """The validated scenario (raises ScenarioError with file, line and key on the first problem)."""
    where = Located(name, text)
    try:
        spec = ScenarioSpec.model_validate(data)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: line_of(text, e["loc"]) or 0)
        first = errors[0]
        raise where.error(tuple(first["loc"]), _problem(first)) from None
    _cross_checks(spec, where)
    return spec


def _cross_checks(spec: ScenarioSpec, where: Located) -> None:
    """The rules that span keys: the version, each kind's own keys, boxes, regions and ids."""
    if spec.schema_ != SCHEMA_VERSION:
        raise where.error(("schema",), f"version {spec.schema_} is not supported (this server reads {SCHEMA_VERSION})")
    _kind_keys(spec.anatomy, ANATOMY_KEYS[spec.anatomy.kind], ("anatomy",), f"a {spec.anatomy.kind} anatomy", where)
    for i, c in enumerate(spec.complications):
        _kind_keys(c, COMPLICATION_KEYS[c.kind], ("complications", i), f"a {c.kind} complication", where)
        if c.box is not None:
            _box(c.box, ("complications", i, "box"), where)
    for i, s in enumerate(spec.steps):
        loc = ("steps", i, "check")
        _kind_keys(s.check, CHECK_KEYS[s.check.kind], loc, f"a {s.check.kind} check", where)
        if s.check.box is not None:
            _box(s.check.box, (*loc, "box"), where)
    for i, a in enumerate(spec.attachments):
        _box(a.box, ("attachments", i, "box"), where)
    regions = sorted(m.region for m in spec.materials)
    if regions != list(range(len(regions))):
        raise where.error(("materials",), "need one [[materials]] entry per region 0, 1, 2, ... (each region once)")
    for i, m in enumerate(spec.materials):
        if m.preset is None:
            for key in MATERIAL_FIELDS:
                if getattr(m, key) is None:
                    raise where.error(("materials", i, key), "missing (give it, or a preset to start from)")
    for what, items in (("steps", spec.steps), ("complications", spec.complications)):
        ids = [item.id for item in items]
        if len(set(ids)) != len(ids):
            raise where.error((what,), "ids must be unique")
    _fixture_checks(spec, where)
    _suture_checks(spec, where)
    if spec.anatomy.incision is not None:
        z = spec.anatomy.incision.z
        if z[1] <= z[0]:
            raise where.error(("anatomy", "incision", "z"), "[from, to] with to > from")


def _kind_keys(
    table: BaseModel, rule: tuple[tuple[str, ...], tuple[str, ...]], loc: Loc, what: str, where: Located
) -> None:
    required, optional = rule
    for key in required:
        if getattr(table, key) is None:
            raise where.error((*loc, key), f"missing (needed by {what})")
    for key in table.model_fields_set - {"kind", "id", "title"} - set(required) - set(optional):
        raise where.error((*loc, key), f"not a key of {what} (its keys: {', '.join(required + optional) or 'none'})")


def _box(box: BoxSpec, loc: Loc, where: Located) -> None:
    if any(h < low for low, h in zip(box.lo, box.hi, strict=True)):
        raise where.error(loc, "hi must be >= lo on every axis")
