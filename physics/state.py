"""The State: everything that evolves frame to frame (positions, velocities, damage, held grasps)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numba as nb
import numpy as np

from physics.instruments import InstrumentSpec
from physics.model import BURN_STIFFENING, Model


@dataclass
class Grasp:
    """Tissue points held by closed jaws: each point is a barycentric combination of three vertices,
    pinned to a point fixed in the instrument's frame. tear_force (N) is where it rips free."""

    vertices: np.ndarray  # (g, 3) int32
    weights: np.ndarray  # (g, 3)
    local: np.ndarray  # (g, 3) instrument-frame targets
    tear_force: float
    force: np.ndarray = field(default_factory=lambda: np.zeros(3))  # N on the tissue, last frame


@dataclass
class InstrumentState:
    spec: InstrumentSpec
    position: np.ndarray
    orientation: np.ndarray
    jaw: float
    energy: bool = False
    grasp: Grasp | None = None
    force: np.ndarray = field(default_factory=lambda: np.zeros(3))  # N the tissue exerts on it


@dataclass
class State:
    x: np.ndarray  # (n, 3) positions
    v: np.ndarray  # (n, 3) velocities
    damage: np.ndarray  # (m,) 0 fresh .. 1 burned through
    instruments: dict[int, InstrumentState] = field(default_factory=dict)
    counters: Counter = field(default_factory=Counter)
    time: float = 0.0
    frame: int = 0

    def effective_alpha_dev(self, model: Model) -> np.ndarray:
        """Deviatoric compliance with coagulation stiffening applied."""
        return model.alpha_dev / (1.0 + BURN_STIFFENING * np.clip(self.damage, 0.0, 1.0))


def new_state(model: Model) -> State:
    """The rest state of a model."""
    return State(
        x=model.rest_positions.copy(),
        v=np.zeros_like(model.rest_positions),
        damage=np.zeros(model.n_tets),
    )


def block_alpha_dev(model: Model, state: State) -> np.ndarray:
    """state.effective_alpha_dev(model) in the kernel's blocks (model.block_alpha_dev's layout; read only).

    Without coagulation anywhere (no damage above 0) that is model.block_alpha_dev itself, found with one scan
    of the damage instead of a gather and a division per tet. Same bits as the numpy expression."""
    if not _any_coagulated(state.damage):
        return model.block_alpha_dev
    out = model.block_alpha_dev.copy()  # the padding columns
    _stiffened_in_order(model.alpha_dev, state.damage, model.order, model.block_slot, BURN_STIFFENING, out)
    return out


@nb.njit(nogil=True, cache=True)
def _any_coagulated(damage):
    """Some damage is above 0 (or NaN): then stiffening changes some compliance."""
    for d in damage:  # noqa: SIM110 (a plain loop: numba has no any() over a generator)
        if not d <= 0.0:
            return True
    return False


@nb.njit(nogil=True, cache=True)
def _stiffened_in_order(alpha_dev, damage, order, slot, stiffening, out):
    """out[slot[s]] = alpha_dev[t] / (1 + stiffening * clip(damage[t], 0, 1)) for t = order[s], rounded as numpy
    rounds it."""
    for s in range(order.shape[0]):
        t = order[s]
        d = damage[t]
        if d < 0.0:
            d = 0.0
        elif d > 1.0:
            d = 1.0
        out[slot[s]] = alpha_dev[t] / (1.0 + stiffening * d)
