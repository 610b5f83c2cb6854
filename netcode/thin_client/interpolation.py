"""Interpolation buffers for remote objects, and the adaptive delay that feeds them.

Why: snapshots arrive with jitter, out of order, sometimes not at all. Rendering remote objects a
little in the past lets the client *interpolate* between two authoritative samples instead of showing
them as they trickle in::

    render_time = server_now - (latency + delay)
    latency     = max(0, transit_mean)                                   # the network's one-way delay
    delay       = clamp(k * jitter + interval, min_delay, max_delay)     # the buffering we add

over the last ``window`` snapshot arrivals: ``transit = server_now(at arrival) - snapshot server_time``,
``transit_mean`` its mean, ``jitter`` its mean absolute deviation, ``interval`` the median spacing of
snapshot server times. ``delay`` is the adaptive interpolation delay, at most ``max_delay`` = 50 ms
(the target); ``latency`` is not a choice (a sample cannot be shown before it arrives). Note that the
clock offset cancels in ``server_now - transit_mean``, so clock-sync errors do not disturb
interpolation. The applied lag ``latency + delay`` slews towards its target at most ``delay_slew``
seconds per second (it starts at the first target), so the render time always advances at
>= 1 - delay_slew speed.

``InterpolationBuffer`` holds one object's samples keyed by server time:

- inserts in time order (reordered packets are fine); an equal time is a duplicate (dropped);
- a sample at or before the last rendered time is *late* (dropped: that moment was already shown);
- ``sample(t)`` interpolates between the bracketing samples; past the newest sample it extrapolates
  from the last two for at most ``max_extrapolation`` seconds and then holds; before the oldest it
  holds the oldest;
- memory is bounded: samples older than the one bracketing the render time are pruned and at most
  ``capacity`` are kept (oldest dropped).

The state type is generic (a ``RigidPose``, or an (N, 3) vertex array) through the ``interpolate``
function passed in. All times are arguments: no clock is read here.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

import numpy as np

S = TypeVar("S")


class Insert(Enum):
    """What ``InterpolationBuffer.insert`` did with a sample."""

    INSERTED = "inserted"
    DUPLICATE = "duplicate"
    LATE = "late"


class Mode(Enum):
    """How ``InterpolationBuffer.sample`` produced its state."""

    INTERPOLATED = "interpolated"
    EXTRAPOLATED = "extrapolated"
    HELD = "held"  # past the extrapolation cap, or a single sample
    EARLY = "early"  # render time before the oldest sample: the oldest is shown


@dataclass(frozen=True, slots=True)
class BufferConfig:
    capacity: int = 32
    max_extrapolation: float = 0.05  # seconds past the newest sample

    def __post_init__(self) -> None:
        if self.capacity < 2 or self.max_extrapolation < 0.0:
            raise ValueError("need capacity >= 2 and max_extrapolation >= 0")


class InterpolationBuffer(Generic[S]):
    """One remote object's samples by server time (see the module doc)."""

    def __init__(self, interpolate: Callable[[S, S, float], S], config: BufferConfig | None = None) -> None:
        self.interpolate = interpolate
        self.config = config or BufferConfig()
        self._times: list[float] = []
        self._states: list[S] = []
        self.last_render_time = -np.inf
        self.counts = {"inserted": 0, "duplicate": 0, "late": 0, "evicted": 0}

    def __len__(self) -> int:
        return len(self._times)

    @property
    def newest_time(self) -> float | None:
        return self._times[-1] if self._times else None

    def newest(self) -> tuple[float, S] | None:
        """The newest sample (time, state), or None when empty."""
        return (self._times[-1], self._states[-1]) if self._times else None

    def insert(self, time: float, state: S) -> Insert:
        """Add a sample; keeps time order, drops duplicates and late samples, bounds memory."""
        if time <= self.last_render_time:
            self.counts["late"] += 1
            return Insert.LATE
        i = bisect.bisect_left(self._times, time)
        if i < len(self._times) and self._times[i] == time:
            self.counts["duplicate"] += 1
            return Insert.DUPLICATE
        self._times.insert(i, time)
        self._states.insert(i, state)
        self.counts["inserted"] += 1
        while len(self._times) > self.config.capacity:
            del self._times[0], self._states[0]
            self.counts["evicted"] += 1
        return Insert.INSERTED

    def sample(self, render_time: float) -> tuple[S, Mode] | None:
        """State at ``render_time`` (clamped to be non-decreasing across calls); None when empty."""
        if not self._times:
            return None
        t = max(render_time, self.last_render_time)
        self.last_render_time = t
        times, states = self._times, self._states
        i = bisect.bisect_right(times, t)  # times[:i] <= t < times[i:]
        if i == 0:
            return states[0], Mode.EARLY
        if i < len(times):
            # prune everything before the bracket's left sample: it can never be needed again
            if i > 1:
                del times[: i - 1], states[: i - 1]
                i = 1
            t0, t1 = times[i - 1], times[i]
            return self.interpolate(states[i - 1], states[i], (t - t0) / (t1 - t0)), Mode.INTERPOLATED
        # past the newest sample: keep the last two for extrapolation
        if len(times) > 2:
            del times[:-2], states[:-2]
        if t == times[-1]:
            return states[-1], Mode.INTERPOLATED  # exactly the newest sample
        if len(times) == 1:
            return states[-1], Mode.HELD
        t0, t1 = times[-2], times[-1]
        ahead = min(t - t1, self.config.max_extrapolation)
        mode = Mode.EXTRAPOLATED if t - t1 <= self.config.max_extrapolation else Mode.HELD
        return self.interpolate(states[-2], states[-1], 1.0 + ahead / (t1 - t0)), mode

    def clear(self) -> None:
        self._times.clear()
        self._states.clear()


# ---------------------------------------------------------------------------------------- delay


def target_delay(
    transit_mean: float, jitter: float, interval: float, k: float, min_delay: float, max_delay: float
) -> float:
    """``clamp(max(0, transit_mean) + k * jitter + interval, min_delay, max_delay)``."""
    return min(max_delay, max(min_delay, max(0.0, transit_mean) + k * jitter + interval))


def transit_stats(transits: list[float]) -> tuple[float, float]:
    """(mean, mean absolute deviation) of transit samples; (0, 0) for none."""
    if not transits:
        return 0.0, 0.0
    a = np.asarray(transits)
    mean = float(a.mean())
    return mean, float(np.abs(a - mean).mean())


def median_interval(server_times: list[float], default: float) -> float:
    """Median spacing of the distinct snapshot times (arrival order does not matter)."""
    distinct = np.unique(np.asarray(server_times, dtype=np.float64))
    if distinct.size < 2:
        return default
    return float(np.median(np.diff(distinct)))


@dataclass(frozen=True, slots=True)
class DelayConfig:
    window: int = 64  # snapshot arrivals remembered
    k: float = 2.0  # jitter multiplier
    min_delay: float = 0.01
    max_delay: float = 0.05  # the 50 ms target
    default_interval: float = 1.0 / 60.0  # before two snapshots were seen
    delay_slew: float = 0.1  # |d delay / d local time| <= this

    def __post_init__(self) -> None:
        if not (0.0 <= self.min_delay <= self.max_delay and 0.0 < self.delay_slew < 1.0 and self.window >= 2):
            raise ValueError("need 0 <= min_delay <= max_delay, 0 < delay_slew < 1, window >= 2")


class AdaptiveDelay:
    """Measures snapshot transit, jitter and interval; gives the slewed lag ``latency + delay``."""

    def __init__(self, config: DelayConfig | None = None) -> None:
        self.config = config or DelayConfig()
        self._transits: deque[float] = deque(maxlen=self.config.window)
        self._times: deque[float] = deque(maxlen=self.config.window)
        self._target = self.config.max_delay
        self._latency = 0.0
        self._lag: float | None = None  # applied latency + delay
        self._last_local: float | None = None

    def on_snapshot(self, snapshot_time: float, server_now_at_arrival: float) -> None:
        """Record one snapshot (packet) arrival: its server time and the estimated server clock now."""
        self._transits.append(server_now_at_arrival - snapshot_time)
        self._times.append(snapshot_time)
        cfg = self.config
        mean, jitter = transit_stats(list(self._transits))
        interval = median_interval(list(self._times), cfg.default_interval)
        self._latency = max(0.0, mean)
        self._target = target_delay(0.0, jitter, interval, cfg.k, cfg.min_delay, cfg.max_delay)
        if self._lag is None:
            self._lag = self._latency + self._target

    @property
    def target(self) -> float:
        """The adaptive interpolation delay wanted now (<= max_delay)."""
        return self._target

    @property
    def latency(self) -> float:
        """Mean transit (one-way delay through the synchronised clock), >= 0."""
        return self._latency

    @property
    def jitter(self) -> float:
        return transit_stats(list(self._transits))[1]

    def lag(self, local_now: float) -> float:
        """Applied ``latency + delay`` at ``local_now``, slewed at most ``delay_slew`` s/s towards its target."""
        if self._lag is None:
            return self.config.max_delay
        if self._last_local is not None and local_now > self._last_local:
            step = self.config.delay_slew * (local_now - self._last_local)
            self._lag += max(-step, min(step, self._latency + self._target - self._lag))
        if self._last_local is None or local_now > self._last_local:
            self._last_local = local_now
        return self._lag

    def delay(self, local_now: float) -> float:
        """The applied interpolation delay (the lag minus the measured latency)."""
        return self.lag(local_now) - self._latency
