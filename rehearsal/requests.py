"""What a room's requests are made of, shared by the room (``rehearsal.room``) and its command handlers
(``rehearsal.mentor_commands``): who asks (``Participant``; ``DRIVING_ROLES``, the roles that drive
instruments), the answer to a request that changed nothing (``Refusal``), and the check of a request's
vectors (``finite_vector``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from physics.instruments import Kind
from rehearsal.identity import Identity
from rehearsal.roles import Role

DRIVING_ROLES = (Role.LEAD_SURGEON, Role.ASSISTANT_SURGEON)


@dataclass
class Participant:
    identity: Identity
    connected: bool = True
    # hand -> instrument kind for the hands this participant drives (surgeons; a mentor who took over)
    hands: dict[str, Kind] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """Why a request changed nothing (sent back to the participant, and counted)."""

    reason: str


def finite_vector(value: object, n: int) -> np.ndarray | None:
    """``value`` as a float64 vector of ``n`` finite numbers, or None."""
    if type(value) is np.ndarray and value.dtype == np.float64:
        arr = value  # the input path hands in arrays already: no conversion
    else:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return None
    if arr.shape != (n,) or not all(map(math.isfinite, arr.tolist())):
        return None
    return arr
