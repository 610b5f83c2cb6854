"""Small scenes shared by the surgery tests: a tissue block on a table or pinned at its bottom, and a
one-instrument driver. Everything is tiny so a test runs in a fraction of a second once numba is cached."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from physics import Control, Environment, InstrumentInput, build_model, new_state, step
from physics.instruments import InstrumentSpec, look_rotation
from physics.materials import LIVER, Material
from physics.model import Model
from physics.procedural import tissue_block
from physics.solver import StepReport
from physics.state import State

DOWN = look_rotation(forward=(0.0, -1.0, 0.0))  # local +z (forward) points down, jaws open along world z


def block(
    size=(0.04, 0.012, 0.02),
    cells=(8, 3, 4),
    material: Material = LIVER,
    on_table: bool = True,
    pinned_bottom: bool = False,
) -> tuple[Model, State]:
    """A block with its bottom face at y = 0, resting on a table and/or pinned at its bottom vertices."""
    mesh = tissue_block(size=size, cells=cells)
    fixed = np.flatnonzero(mesh.vertices[:, 1] < 1e-9) if pinned_bottom else None
    env = Environment.table(0.0) if on_table else None
    model = build_model(mesh, [material], fixed=fixed, environment=env)
    return model, new_state(model)


@dataclass
class Driver:
    """Drives one instrument (id 1 by default) through step(); keeps the spec object stable."""

    model: Model
    state: State
    spec: InstrumentSpec
    position: np.ndarray
    orientation: np.ndarray = field(default_factory=lambda: DOWN.copy())
    jaw: float = 0.0
    energy: bool = False
    id: int = 1
    reports: list[StepReport] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.position = np.asarray(self.position, dtype=np.float64)

    def control(self) -> Control:
        return Control(
            [InstrumentInput(self.id, self.spec, self.position.copy(), self.orientation, self.jaw, self.energy)]
        )

    def step(self, frames: int = 1, **kw) -> StepReport:
        for _ in range(frames):
            self.reports.append(step(self.model, self.state, self.control(), **kw))
        return self.reports[-1]

    def events(self, kind: str) -> list:
        return [e for r in self.reports for e in r.events if e.kind == kind]

    @property
    def inst(self):
        return self.state.instruments.get(self.id)
