"""Server-clock estimate for the thin client: NTP-style offset samples, min-RTT filter, slewed output.

Why: the client renders remote objects at ``server_now - delay`` and needs ``server_now`` without a
round trip. Each exchange gives four times (NTP naming)::

    t0 = client send (local clock)      t1 = server receive (server clock)
    t2 = server send (server clock)     t3 = client receive (local clock)

    rtt    = (t3 - t0) - (t2 - t1)                 # time on the wire, server hold time removed
    offset = ((t1 - t0) + (t2 - t3)) / 2           # server clock - local clock, if the path is symmetric

Queueing delay only ever *adds* to a sample's RTT and skews its offset, so the samples with the lowest
RTT are the most trustworthy: the *target* offset is the mean offset of the ``best`` lowest-RTT
samples among the last ``window``. The *applied* offset never jumps backwards: it moves towards the
target at a rate ``clamp((target - applied) / slew_time, -max_slew, +max_slew)`` (seconds of offset per
second of local time, ``max_slew < 1``), so ``server_now`` always advances at a rate of at least
``1 - max_slew``. Only the very first sample, or a *forward* error larger than ``step_threshold``
(e.g. after the server clock was reset forwards), steps the offset at once; a backward error of any
size is slewed.

Pure functions (``ntp_sample``, ``target_offset``, ``slew``) do the arithmetic; ``ClockSync`` is the thin
stateful shell. Every call takes the local time explicitly (an injectable clock), so it is deterministic.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple


class ClockSample(NamedTuple):
    """One exchange reduced to its round-trip time and offset estimate (seconds)."""

    rtt: float
    offset: float


def ntp_sample(t0: float, t1: float, t2: float, t3: float) -> ClockSample:
    """RTT and offset of one exchange (see the module doc); a negative RTT (clock noise) is clamped to 0."""
    rtt = max(0.0, (t3 - t0) - (t2 - t1))
    offset = ((t1 - t0) + (t2 - t3)) / 2.0
    return ClockSample(rtt, offset)


def target_offset(samples: list[ClockSample], best: int) -> float:
    """Mean offset of the ``best`` samples with the lowest RTT (ties broken by order, deterministic)."""
    if not samples:
        raise ValueError("target_offset of no samples")
    chosen = sorted(samples, key=lambda s: s.rtt)[: max(1, best)]
    return sum(s.offset for s in chosen) / len(chosen)


def slew(applied: float, target: float, dt: float, slew_time: float, max_slew: float) -> float:
    """Move ``applied`` towards ``target`` over ``dt`` seconds: proportional, rate-limited, no overshoot."""
    if dt <= 0.0:
        return applied
    error = target - applied
    rate = max(-max_slew, min(max_slew, error / slew_time))
    step = rate * dt
    return target if abs(step) >= abs(error) else applied + step


@dataclass(frozen=True, slots=True)
class ClockSyncConfig:
    """Filter and slew parameters (seconds, and seconds per second for ``max_slew``)."""

    window: int = 32  # samples kept
    best: int = 4  # lowest-RTT samples averaged for the target
    slew_time: float = 0.5  # time constant of the proportional slew
    max_slew: float = 0.05  # |d offset / d local time| <= this: server_now advances at >= 95% speed
    step_threshold: float = 0.25  # a forward error larger than this steps at once

    def __post_init__(self) -> None:
        if not (self.window >= 1 and 1 <= self.best <= self.window):
            raise ValueError("need window >= 1 and 1 <= best <= window")
        if not (0.0 < self.max_slew < 1.0 and self.slew_time > 0.0 and self.step_threshold > 0.0):
            raise ValueError("need 0 < max_slew < 1, slew_time > 0, step_threshold > 0")


class ClockSync:
    """Keeps the sample window and the applied (slewed) offset; answers ``server_now(local_now)``."""

    def __init__(self, config: ClockSyncConfig | None = None) -> None:
        self.config = config or ClockSyncConfig()
        self._samples: deque[ClockSample] = deque(maxlen=self.config.window)
        self._applied: float | None = None
        self._target = 0.0
        self._last_local: float | None = None
        self.steps = 0  # how many times the offset was stepped (first sample included)

    @property
    def synchronised(self) -> bool:
        return self._applied is not None

    @property
    def target(self) -> float:
        """The current filtered offset estimate (server - local)."""
        return self._target

    @property
    def rtt(self) -> float | None:
        """The lowest RTT in the window (the path's base round trip), or None before any sample."""
        return min(s.rtt for s in self._samples) if self._samples else None

    def _advance(self, local_now: float) -> None:
        if self._applied is None:
            return
        if self._last_local is not None:
            cfg = self.config
            self._applied = slew(self._applied, self._target, local_now - self._last_local, cfg.slew_time, cfg.max_slew)
        if self._last_local is None or local_now > self._last_local:
            self._last_local = local_now

    def add_exchange(self, t0: float, t1: float, t2: float, t3: float) -> ClockSample | None:
        """Record one exchange (``t3`` is the local time now); returns the sample, or None if rejected."""
        if not all(math.isfinite(t) for t in (t0, t1, t2, t3)) or t3 < t0 or t2 < t1:
            return None
        sample = ntp_sample(t0, t1, t2, t3)
        self._advance(t3)
        self._samples.append(sample)
        self._target = target_offset(list(self._samples), self.config.best)
        if self._applied is None or self._target - self._applied > self.config.step_threshold:
            self._applied = self._target
            self._last_local = t3
            self.steps += 1
        return sample

    def offset(self, local_now: float) -> float:
        """The applied offset at ``local_now`` (0 before any sample)."""
        self._advance(local_now)
        return 0.0 if self._applied is None else self._applied

    def server_now(self, local_now: float) -> float:
        """Estimated server clock at ``local_now``; non-decreasing for non-decreasing ``local_now``."""
        return local_now + self.offset(local_now)
