"""Surgical instruments as kinematic shapes: a shaft and jaws/blades/hook made of capsules.

Local frame: origin at the jaw hinge (the shaft's distal end), +z points forward out of the shaft, jaws
open in the x-z plane (a jaw of sign s is rotated by s * opening / 2 about local +y). A pose maps this
frame to the world: position of the hinge and a unit quaternion (w, x, y, z).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from functools import cached_property

import numpy as np


class Kind(StrEnum):
    GRASPER = "grasper"
    SCISSORS = "scissors"
    CAUTERY_HOOK = "cautery_hook"
    NEEDLE_DRIVER = "needle_driver"
    SUTURE_HOLD = "suture_hold"  # not held by anyone: where a suture thread holds the tissue (physics.suturing)


@dataclass(frozen=True)
class InstrumentSpec:
    """Geometry and behaviour of one instrument type.

    capsules: rows (ax, ay, az, bx, by, bz, radius, jaw_sign) in the local frame with jaws closed;
    jaw_sign is 0 for rigid parts, +1/-1 for the two jaws. grasp_length/grasp_radius: the region between
    the jaws that closing grasps. jaw_area: contact area (m^2) that sets the tear force with the tissue
    strength. energy_tip/energy_radius: where an energized tip heats tissue (cautery).
    """

    kind: Kind
    capsules: np.ndarray
    max_jaw: float = 1.0
    grasp_length: float = 0.0
    grasp_radius: float = 0.0
    jaw_area: float = 0.0
    friction: float = 0.4
    energy_tip: tuple[float, float, float] | None = None
    energy_radius: float = 0.0
    heat_rate: float = 0.0
    jaws_collide: bool = True
    metadata: dict = field(default_factory=dict, compare=False)

    def same_as(self, other: InstrumentSpec) -> bool:
        """Same instrument type and geometry (the dataclass == cannot compare the capsule array)."""
        if self is other:
            return True
        return all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name))
            if f.name == "capsules"
            else getattr(self, f.name) == getattr(other, f.name)
            for f in fields(self)
            if f.compare
        )

    @property
    def grasps(self) -> bool:
        return self.grasp_length > 0.0

    @property
    def cuts(self) -> bool:
        return self.kind is Kind.SCISSORS

    @cached_property
    def has_jaw(self) -> bool:
        """Some part moves with the jaw (jaw_sign != 0); asked every tick, so computed once."""
        return bool(np.any(self.capsules[:, 7] != 0))


SHAFT_LENGTH = 0.30
SHAFT_RADIUS = 0.0025  # 5 mm laparoscopic instruments


def _shaft() -> list[list[float]]:
    """The shaft's rounded end stops at the hinge plane z = 0, where the jaws' grasp region begins."""
    return [[0.0, 0.0, -SHAFT_LENGTH, 0.0, 0.0, -SHAFT_RADIUS, SHAFT_RADIUS, 0.0]]


def grasper(jaw_length: float = 0.018) -> InstrumentSpec:
    """Atraumatic grasper: two 18 mm jaws; closing grasps the tissue between them."""
    caps = [
        *_shaft(),
        [0.0, 0.0, 0.0, 0.0, 0.0, jaw_length, 0.0015, 1.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, jaw_length, 0.0015, -1.0],
    ]
    return InstrumentSpec(
        Kind.GRASPER,
        np.array(caps, dtype=np.float64),
        max_jaw=1.0,
        grasp_length=jaw_length,
        grasp_radius=0.004,
        jaw_area=jaw_length * 0.004,
        friction=0.6,
        jaws_collide=False,
    )


def scissors(blade_length: float = 0.016) -> InstrumentSpec:
    """Curved-blade scissors modelled as straight blades: closing blades split the tissue they sweep
    (physics.cutting); open, still, opening or closed blades push tissue like any instrument part (the solver
    turns their collision off only on the frames they close)."""
    caps = [
        *_shaft(),
        [0.0, 0.0, 0.0, 0.0, 0.0, blade_length, 0.0008, 1.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, blade_length, 0.0008, -1.0],
    ]
    return InstrumentSpec(Kind.SCISSORS, np.array(caps, dtype=np.float64), max_jaw=1.0, jaws_collide=True)


def cautery_hook(hook_length: float = 0.008, hook_reach: float = 0.004) -> InstrumentSpec:
    """L-shaped monopolar hook: the bend's tip heats tissue while energy is on."""
    caps = [
        *_shaft(),
        [0.0, 0.0, -0.002, 0.0, 0.0, hook_length, 0.001, 0.0],
        [0.0, 0.0, hook_length, hook_reach, 0.0, hook_length, 0.001, 0.0],
    ]
    return InstrumentSpec(
        Kind.CAUTERY_HOOK,
        np.array(caps, dtype=np.float64),
        max_jaw=0.0,
        friction=0.2,
        energy_tip=(hook_reach, 0.0, hook_length),
        energy_radius=0.003,
        heat_rate=2.0,
    )


def needle_driver(jaw_length: float = 0.010) -> InstrumentSpec:
    """Needle holder: short, strong jaws that hold a curved needle (physics.needle), not tissue (no grasp region)."""
    caps = [
        *_shaft(),
        [0.0, 0.0, 0.0, 0.0, 0.0, jaw_length, 0.0012, 1.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, jaw_length, 0.0012, -1.0],
    ]
    return InstrumentSpec(Kind.NEEDLE_DRIVER, np.array(caps, dtype=np.float64), max_jaw=0.8, friction=0.4)


def suture_hold() -> InstrumentSpec:
    """The tissue points a suture passes through, held through the solver's grasp constraints (no shape)."""
    return InstrumentSpec(Kind.SUTURE_HOLD, np.zeros((0, 8)), max_jaw=0.0, friction=0.0, jaws_collide=False)


SPECS = {
    Kind.GRASPER: grasper,
    Kind.SCISSORS: scissors,
    Kind.CAUTERY_HOOK: cautery_hook,
    Kind.NEEDLE_DRIVER: needle_driver,
}


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def look_rotation(forward: np.ndarray, up: tuple[float, float, float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """Quaternion (w, x, y, z) that turns local +z to `forward` (helper for scripts and tests)."""
    f = np.asarray(forward, dtype=np.float64)
    f = f / np.linalg.norm(f)
    u = np.asarray(up, dtype=np.float64)
    if abs(float(np.dot(f, u / np.linalg.norm(u)))) > 0.999:
        u = np.array([1.0, 0.0, 0.0])
    x_axis = np.cross(u, f)
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(f, x_axis)
    m = np.stack([x_axis, y_axis, f], axis=1)
    return matrix_to_quat(m)


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix."""
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    return q / np.linalg.norm(q)
