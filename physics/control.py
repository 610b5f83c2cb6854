"""What drives the world each frame: instrument poses, jaw openings and energy switches."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from physics.instruments import InstrumentSpec


@dataclass
class InstrumentInput:
    """One instrument's command for the coming frame. id is stable while the instrument is in use.

    position: hinge position (m); orientation: quaternion (w, x, y, z); jaw: opening (rad);
    energy: cautery pedal pressed.
    """

    id: int
    spec: InstrumentSpec
    position: np.ndarray
    orientation: np.ndarray
    jaw: float = 0.0
    energy: bool = False


@dataclass
class Control:
    """All instruments present this frame; an instrument missing from the list is withdrawn."""

    instruments: list[InstrumentInput] = field(default_factory=list)
