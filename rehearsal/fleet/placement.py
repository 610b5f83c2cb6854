"""Which process takes a new room: pure functions over what the directory knows of each process.

A process can take a room when it is alive (its heartbeat has not expired), not draining, offers the room's
scenario and has a free room slot (its rooms plus the placements reserved on it but not yet confirmed stay
under its capacity). Among those the least loaded wins: the lowest share of its capacity in use, then the
fewest rooms, then the process id (so the choice is deterministic and testable).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """One process as the directory sees it at placement time."""

    process: str
    capacity: int  # rooms it may run
    rooms: int  # rooms it runs
    pending: int  # placements reserved on it, not yet confirmed (they count as rooms)
    alive: bool
    draining: bool
    scenarios: frozenset[str]  # what it offers; empty: it has not said (it takes none)

    @property
    def used(self) -> int:
        return self.rooms + self.pending

    @property
    def load(self) -> float:
        """The share of its capacity in use (1.0 or more: full)."""
        return self.used / self.capacity if self.capacity > 0 else float("inf")


def can_take(candidate: Candidate, scenario: str) -> bool:
    """Whether this process may take a new room of ``scenario`` now."""
    return (
        candidate.alive
        and not candidate.draining
        and scenario in candidate.scenarios
        and candidate.used < candidate.capacity
    )


def choose(candidates: Iterable[Candidate], scenario: str, exclude: Iterable[str] = ()) -> Candidate | None:
    """The least-loaded process that can take a room of ``scenario`` (never one in ``exclude``), or None."""
    skip = set(exclude)
    able = [c for c in candidates if c.process not in skip and can_take(c, scenario)]
    if not able:
        return None
    return min(able, key=lambda c: (c.load, c.used, c.process))


def free_slots(candidates: Iterable[Candidate], scenario: str) -> int:
    """How many more rooms of ``scenario`` the fleet can take now (for status and the join service's refusals)."""
    return sum(c.capacity - c.used for c in candidates if can_take(c, scenario))
