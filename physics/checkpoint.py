"""World checkpoints: a Model and State copied at a frame boundary, turned to bytes and back, bit for bit.

``capture`` copies every array of the Model (topology, sweep order, blocks, compliances, anchors) and of the
State (positions, velocities, damage, instruments and their grasps): the copy costs memory bandwidth only,
so it can run between two steps on the world's own thread. ``to_bytes`` / ``from_bytes`` serialize a
checkpoint (msgpack; arrays as raw little-endian bytes with dtype and shape) on any thread, and ``restore``
builds a fresh Model and State that step exactly as the originals would have: nothing is recomputed, so no
rounding can differ. A restored Model gets a new physics.solver.Solver (which derives its arrays from the model's).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import MISSING, dataclass, fields
from typing import Any

import msgpack
import numpy as np

from physics.environment import Environment
from physics.instruments import InstrumentSpec, Kind
from physics.materials import Material
from physics.model import Model
from physics.state import Grasp, InstrumentState, State

VERSION = 1
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_DTYPES = {"<f8", "<f4", "<i4", "<i8", "<i2", "|i1", "|b1", "<u4", "<u8", "|u1"}
_MODEL_SKIP = {"materials", "environment"}
_SPEC_SCALARS = ("max_jaw", "grasp_length", "grasp_radius", "jaw_area", "friction", "energy_radius", "heat_rate")


class CheckpointError(ValueError):
    """Bytes that are not a checkpoint this version can restore (truncated, wrong version, malformed)."""


@dataclass(frozen=True)
class WorldCheckpoint:
    """A world at one frame: arrays by name ("model.tets", "state.x", "inst.3.grasp.local") and plain values."""

    arrays: dict[str, np.ndarray]
    values: dict[str, Any]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def capture(model: Model, state: State) -> WorldCheckpoint:
    """Copies of everything that makes ``model`` and ``state`` step the way they do (run between steps)."""
    arrays: dict[str, np.ndarray] = {}
    values: dict[str, Any] = {"version": VERSION}
    for f in fields(model):
        if f.name in _MODEL_SKIP:
            continue
        value = getattr(model, f.name)
        if isinstance(value, np.ndarray):
            arrays[f"model.{f.name}"] = value.copy()
        else:
            values[f"model.{f.name}"] = value.item() if isinstance(value, np.generic) else value
    values["materials"] = [{f.name: getattr(m, f.name) for f in fields(Material)} for m in model.materials]
    env = model.environment
    for name in ("planes", "spheres", "boxes"):
        arrays[f"env.{name}"] = getattr(env, name).copy()
    values["env.friction"] = env.friction
    for name in ("x", "v", "damage"):
        arrays[f"state.{name}"] = getattr(state, name).copy()
    values["state.time"] = state.time
    values["state.frame"] = state.frame
    values["state.counters"] = dict(state.counters)
    instruments = []
    for iid, inst in state.instruments.items():
        spec = inst.spec
        prefix = f"inst.{iid}"
        arrays[f"{prefix}.capsules"] = spec.capsules.copy()
        arrays[f"{prefix}.position"] = np.array(inst.position, dtype=np.float64)
        arrays[f"{prefix}.orientation"] = np.array(inst.orientation, dtype=np.float64)
        arrays[f"{prefix}.force"] = np.array(inst.force, dtype=np.float64)
        row = {
            "id": int(iid),
            "kind": spec.kind.value,
            **{k: float(getattr(spec, k)) for k in _SPEC_SCALARS},
            "energy_tip": None if spec.energy_tip is None else [float(v) for v in spec.energy_tip],
            "jaws_collide": bool(spec.jaws_collide),
            "jaw": float(inst.jaw),
            "energy": bool(inst.energy),
            "grasp": inst.grasp is not None,
        }
        if inst.grasp is not None:
            g = inst.grasp
            for name in ("vertices", "weights", "local", "force"):
                arrays[f"{prefix}.grasp.{name}"] = np.array(getattr(g, name), copy=True)
            row["tear_force"] = float(g.tear_force)
        instruments.append(row)
    values["instruments"] = instruments
    return WorldCheckpoint(arrays, values)


def restore(checkpoint: WorldCheckpoint) -> tuple[Model, State]:
    """A fresh Model and State equal to the captured ones (arrays copied: the checkpoint stays reusable)."""
    a, v = checkpoint.arrays, checkpoint.values
    if v.get("version") != VERSION:
        raise CheckpointError(f"checkpoint version {v.get('version')!r}, expected {VERSION}")
    try:
        kwargs: dict[str, Any] = {}
        for f in fields(Model):
            if f.name in _MODEL_SKIP:
                continue
            key = f"model.{f.name}"
            if key in a:
                kwargs[f.name] = a[key].copy()
            elif key in v or (f.default is MISSING and f.default_factory is MISSING):
                kwargs[f.name] = v[key]
            # else: a field newer than the checkpoint (vertex_cap, wound_pairs) takes its default
        kwargs["materials"] = [Material(**m) for m in v["materials"]]
        env = object.__new__(Environment)  # not __init__: it would normalise the planes again (new rounding)
        env.planes, env.spheres, env.boxes = (a[f"env.{n}"].copy() for n in ("planes", "spheres", "boxes"))
        env.friction = float(v["env.friction"])
        kwargs["environment"] = env
        model = Model(**kwargs)
        state = State(
            x=a["state.x"].copy(),
            v=a["state.v"].copy(),
            damage=a["state.damage"].copy(),
            counters=Counter(v["state.counters"]),
            time=float(v["state.time"]),
            frame=int(v["state.frame"]),
        )
        for row in v["instruments"]:
            prefix = f"inst.{row['id']}"
            tip = row["energy_tip"]
            spec = InstrumentSpec(
                Kind(row["kind"]),
                a[f"{prefix}.capsules"].copy(),
                **{k: row[k] for k in _SPEC_SCALARS},
                energy_tip=None if tip is None else tuple(tip),
                jaws_collide=row["jaws_collide"],
            )
            grasp = None
            if row["grasp"]:
                g = {n: a[f"{prefix}.grasp.{n}"].copy() for n in ("vertices", "weights", "local", "force")}
                grasp = Grasp(g["vertices"], g["weights"], g["local"], float(row["tear_force"]), g["force"])
            state.instruments[int(row["id"])] = InstrumentState(
                spec,
                a[f"{prefix}.position"].copy(),
                a[f"{prefix}.orientation"].copy(),
                float(row["jaw"]),
                bool(row["energy"]),
                grasp,
                a[f"{prefix}.force"].copy(),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint is incomplete or malformed: {type(exc).__name__}: {exc}") from None
    return model, state


def to_bytes(checkpoint: WorldCheckpoint) -> bytes:
    """The checkpoint as one msgpack map (arrays little-endian, with dtype and shape)."""
    arrays = {}
    for name, arr in checkpoint.arrays.items():
        little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        arrays[name] = [little.dtype.str, list(arr.shape), np.ascontiguousarray(little).tobytes()]
    return msgpack.packb({"arrays": arrays, "values": checkpoint.values}, use_bin_type=True)


def from_bytes(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> WorldCheckpoint:
    """Inverse of to_bytes; CheckpointError for anything too big, truncated or malformed."""
    if len(data) > max_bytes:
        raise CheckpointError(f"checkpoint of {len(data)} bytes is over the {max_bytes}-byte limit")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False, max_bin_len=max_bytes)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CheckpointError(f"not a checkpoint: {type(exc).__name__}") from None
    if not (isinstance(raw, dict) and isinstance(raw.get("arrays"), dict) and isinstance(raw.get("values"), dict)):
        raise CheckpointError("not a checkpoint: expected a map of arrays and values")
    arrays = {}
    for name, item in raw["arrays"].items():
        if not (isinstance(item, list) and len(item) == 3 and item[0] in _DTYPES and isinstance(item[2], bytes)):
            raise CheckpointError(f"checkpoint array {name!r:.60} is malformed")
        dtype, shape, payload = np.dtype(item[0]), item[1], item[2]
        if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise CheckpointError(f"checkpoint array {name!r:.60} has a bad shape")
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(payload):
            raise CheckpointError(f"checkpoint array {name!r:.60} does not match its shape")
        arrays[name] = np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return WorldCheckpoint(arrays, raw["values"])
