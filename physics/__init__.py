"""numba soft-tissue engine (see DESIGN.md, "Physics"). Imports nothing else of the project."""

from physics.control import Control, InstrumentInput
from physics.environment import Environment
from physics.mesh import MeshError, TetMesh
from physics.model import Model, build_model, remove_tets
from physics.solver import Event, Solver, StepReport, solver_threads, step
from physics.state import State, new_state

__all__ = [
    "Control",
    "Environment",
    "Event",
    "InstrumentInput",
    "MeshError",
    "Model",
    "Solver",
    "State",
    "StepReport",
    "TetMesh",
    "build_model",
    "new_state",
    "remove_tets",
    "solver_threads",
    "step",
]
