"""Objective skill metrics per participant and hand (instrument), and pass/fail as validated simulators judge.

Feed a `SkillTracker` once per simulation tick with `observe(time, samples)`; the procedure checker and the
physics report errors with the `note_*` methods. Memory is bounded: every (participant, hand) keeps running
sums and a window of its last 4 samples, never a trajectory, so a session may last hours at 60 Hz.

Conventions (what each number means):

* Each accepted sample accounts for the interval that ended at it (from that hand's previous accepted
  sample). The first sample of a hand, and a sample more than `TrackerConfig.max_gap_s` after the previous
  one (the hand was absent, the room paused, tracking dropped), start a new segment: the gap adds no time,
  no path and no jerk.
* active time: the sum of those intervals (s): how long the hand was present and tracked.
* path length: sum of |p_i - p_(i-1)| (m) of the tracked point (`InstrumentSample.position`).
* angular path length: sum of the shortest rotation angle between consecutive orientations (rad).
* motion smoothness: **mean squared jerk** (m^2/s^6), the time integral of |jerk|^2 divided by the time it
  covers. Jerk is that of the cubic through the last 4 positions (6 x their third divided difference, which
  is (p3-3p2+3p1-p0)/h^3 for a uniform step h), attributed to the newest interval. Lower is smoother. It is
  sensitive to tracking noise at 60 Hz: filter noisy poses upstream or calibrate the limit to the hardware.
* idle time: active time whose speed is below `TrackerConfig.idle_speed_m_s`; the speed is the displacement
  over the last up to 3 intervals (about 50 ms at 60 Hz) divided by their duration, which damps jitter.
* economy of volume: the 95 % covariance ellipsoid of the tracked positions, (4/3) pi k^3 sqrt(det C) with
  C the population covariance (every accepted sample weighs the same; at a fixed tick that is time
  weighting) and k = sqrt(chi2_3(0.95)) = 2.7955. Robust to a single outlier, unlike the axis-aligned
  bounding box volume, which is reported beside it.
* collisions: contact episodes between two instruments' tracked points: entering closer than
  `collision_distance_m` (5 mm) counts once for each of the two hands; the episode ends only beyond
  `collision_release_m` (7.5 mm; the hysteresis keeps jitter at the boundary from counting twice) or when
  either instrument leaves. `note_collision` adds contacts the tracker cannot see (e.g. shaft on shaft).
* excessive force: seconds with the tissue force on the instrument above `excessive_force_n`, and the
  peak force (N).
* tissue damage: tets removed or burned that the caller attributes to the hand as damage (collateral
  damage; do not note the intended cut).
* misapplied energy: episodes (entering events) and seconds of energy in a forbidden zone.
  `note_misapplied_energy` is level-triggered: call it on every tick while it lasts.
* virtual fixtures (rehearsal/fixtures.py): fixture violations, each time a tip was stopped entering a
  forbidden region (`note_fixture_violation`, edge-triggered by the room); forbidden contact time, the active
  time whose sample rests on a forbidden region's boundary (`InstrumentSample.fixture_contact`); guidance
  deviation, the RMS over time of the tip's distance from the nearest active guide
  (`InstrumentSample.guide_deviation`; 0 when no guide was on).

* suturing (a scenario with a ``[suture]`` section; per participant, whichever hand held the needle): per stitch
  the entry and exit error (mm from its marked target, in rest coordinates), the time from its puncture to its
  placing and whether it passed (both errors within the target's tolerance, time within the limit); tissue
  trauma: the peak force on the needle (N) and the tears (the needle ripping tissue, a suture pulled through);
  judged by `SutureLimits`.

Samples with a non-finite or malformed field, a zero quaternion, a negative force or a hand already seen in
the same tick are ignored and counted (`invalid_samples`); an `observe` whose time does not increase is
ignored and counted (`rejected_observations`); a `note_damage` count that is not a positive integer is
ignored and counted (`rejected_notes`). Nothing non-finite reaches a sum.

Wiring: one tracker per session (a new one after a scenario reset); call `observe` once per simulated tick
with the samples the physics used (not while the room is paused), the `note_*` methods as events happen,
and `report()` at the end for the results store and the debrief.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields

import numpy as np

ELLIPSOID_K = 2.7955  # sqrt of the 95th percentile of chi-square with 3 degrees of freedom (7.8147)
MAX_KINDS_PER_HAND = 16  # instrument kinds remembered per hand (bounded even against odd input)

ERROR_METRICS = (
    "collisions",
    "peak_force_n",
    "excessive_force_s",
    "tissue_damage",
    "misapplied_energy_events",
    "misapplied_energy_s",
    "fixture_violations",
    "forbidden_contact_s",
)
EFFICIENCY_METRICS = (
    "active_time_s",
    "path_length_m",
    "angular_path_rad",
    "mean_squared_jerk",
    "idle_time_s",
    "volume_m3",
    "guidance_deviation_m",
)


@dataclass(frozen=True, eq=False)
class InstrumentSample:
    """One hand's instrument at one tick: the pose the physics used, the jaw, energy and tissue force.

    position: (3,) m, the tracked point (the physics pose is the jaw hinge); orientation: (4,) quaternion
    (w, x, y, z), normalised here; jaw: opening (rad), checked but not scored yet; energy: on/off;
    force: magnitude (N) the tissue exerts on it; sample_time: when the pose was tracked (s, any clock that
    is steady for this hand, e.g. the headset's), so that jerk is differentiated at the times the poses were
    taken, not at the ticks that happened to apply them (90 Hz tracking held at 60 Hz ticks would otherwise
    show as jerk); None: the tick time."""

    participant: int
    hand: str
    kind: str
    position: tuple[float, float, float] | np.ndarray
    orientation: tuple[float, float, float, float] | np.ndarray
    jaw: float = 0.0
    energy: bool = False
    force: float = 0.0
    sample_time: float | None = None
    fixture_contact: bool = False  # the tip rests on an active forbidden region's boundary
    guide_deviation: float | None = None  # m from the nearest active guidance fixture (None: none is on)


@dataclass(frozen=True)
class TrackerConfig:
    """Levels the tracker needs while accumulating (the pass/fail limits are in `Thresholds`)."""

    idle_speed_m_s: float = 0.005  # slower than 5 mm/s counts as idle
    collision_distance_m: float = 0.005  # tracked points closer than 5 mm: a collision episode begins
    collision_release_m: float = 0.0075  # ... and ends beyond 7.5 mm
    excessive_force_n: float = 2.5  # time above this force is excessive-force time
    max_gap_s: float = 0.25  # a longer gap between a hand's samples starts a new segment


@dataclass(frozen=True)
class HandMetrics:
    """The skill metrics of one participant's hand (see the module docstring for each definition)."""

    active_time_s: float = 0.0
    path_length_m: float = 0.0
    angular_path_rad: float = 0.0
    mean_squared_jerk: float = 0.0
    idle_time_s: float = 0.0
    volume_m3: float = 0.0
    bbox_volume_m3: float = 0.0
    collisions: int = 0
    peak_force_n: float = 0.0
    excessive_force_s: float = 0.0
    tissue_damage: int = 0
    misapplied_energy_events: int = 0
    misapplied_energy_s: float = 0.0
    energy_time_s: float = 0.0
    fixture_violations: int = 0
    forbidden_contact_s: float = 0.0
    guidance_deviation_m: float = 0.0
    guided_time_s: float = 0.0
    samples: int = 0
    invalid_samples: int = 0

    def as_dict(self) -> dict[str, float | int]:
        """Plain numbers by metric name, for a report."""
        return asdict(self)


@dataclass(frozen=True)
class Thresholds:
    """Proficiency limits per hand: a metric passes when it is <= its limit; None leaves it unjudged.

    These are the server's defaults, for a scenario without ``[skill_limits]``: generous efficiency limits in
    the style of proficiency-based training. A scenario sets its own (``Scenario.skill_limits``); the packaged
    scenarios' efficiency limits are calibrated from measured bot runs (``rehearsal.skill_calibration``,
    rehearsal/scenarios/SCENARIOS.md says how). Error limits: no misapplied energy, <= 3 collisions, peak force <= 5 N,
    <= 1 s above `TrackerConfig.excessive_force_n` (2.5 N), <= 5 collateral tets."""

    active_time_s: float | None = 600.0
    path_length_m: float | None = 5.0
    angular_path_rad: float | None = 60.0
    mean_squared_jerk: float | None = 1.0e4
    idle_time_s: float | None = 120.0
    volume_m3: float | None = 1.0e-3
    collisions: int | None = 3
    peak_force_n: float | None = 5.0
    excessive_force_s: float | None = 1.0
    tissue_damage: int | None = 5
    misapplied_energy_events: int | None = 0
    misapplied_energy_s: float | None = 0.0
    fixture_violations: int | None = 0  # a tip stopped at a forbidden region is an error
    forbidden_contact_s: float | None = 1.0  # s resting on a forbidden region's boundary
    guidance_deviation_m: float | None = 0.005  # RMS m from an active guide


DEFAULT_THRESHOLDS = Thresholds()
MAX_STITCH_RECORDS = 64  # stitches kept per participant (physics.suturing holds 32 stitches' points)


@dataclass(frozen=True)
class SutureLimits:
    """Suturing pass limits (``[suture]`` in a scenario): each stitch within its target's tolerance (the
    largest target tolerance when it matched none) and placed within ``stitch_time_s`` of its puncture; the
    peak needle force and the tears are tissue trauma (error metrics)."""

    stitch_error_m: float = 0.003
    needle_force_n: float = 3.0
    tears: int = 0
    stitch_time_s: float = 120.0


DEFAULT_SUTURE_LIMITS = SutureLimits()


@dataclass(frozen=True)
class Verdict:
    """Pass/fail per judged metric; passed only when every check passes, so speed never buys back errors."""

    checks: dict[str, bool]
    passed: bool
    errors_passed: bool  # every error metric (collisions, force, damage, misapplied energy) passed


def evaluate(metrics: HandMetrics, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Verdict:
    """Judge each metric against its limit; every metric is a gate (no weighted score to trade errors for speed)."""
    checks: dict[str, bool] = {}
    for f in fields(thresholds):
        limit = getattr(thresholds, f.name)
        if limit is not None:
            checks[f.name] = bool(getattr(metrics, f.name) <= limit)
    errors_passed = all(ok for name, ok in checks.items() if name in ERROR_METRICS)
    return Verdict(checks, all(checks.values()), errors_passed)


# --- pure helpers ----------------------------------------------------------------------------------------------


def quaternion_angle(q0: tuple[float, ...], q1: tuple[float, ...]) -> float:
    """Shortest rotation angle (rad) between two unit quaternions (w, x, y, z); q and -q are the same rotation."""
    a0, a1, a2, a3 = q0
    b0, b1, b2, b3 = q1
    s = 1.0 if a0 * b0 + a1 * b1 + a2 * b2 + a3 * b3 >= 0.0 else -1.0
    b0, b1, b2, b3 = s * b0, s * b1, s * b2, s * b3
    diff = math.sqrt((a0 - b0) ** 2 + (a1 - b1) ** 2 + (a2 - b2) ** 2 + (a3 - b3) ** 2)
    total = math.sqrt((a0 + b0) ** 2 + (a1 + b1) ** 2 + (a2 + b2) ** 2 + (a3 + b3) ** 2)
    return 4.0 * math.atan2(diff, total)  # |q0 - q1| = 2 sin(theta/4), |q0 + q1| = 2 cos(theta/4)


def jerk_from_window(times: tuple[float, ...], points: tuple[tuple[float, float, float], ...]) -> tuple[float, ...]:
    """Jerk (m/s^3) of the cubic through 4 samples: 6 x their third divided difference, exact for any spacing.

    Plain floats, not numpy: it runs per instrument per tick, where numpy's call overhead dominates."""
    t0, t1, t2, t3 = times
    jerk = []
    for p0, p1, p2, p3 in zip(*points, strict=True):  # per axis
        d10, d11, d12 = (p1 - p0) / (t1 - t0), (p2 - p1) / (t2 - t1), (p3 - p2) / (t3 - t2)
        d20, d21 = (d11 - d10) / (t2 - t0), (d12 - d11) / (t3 - t1)
        jerk.append(6.0 * (d21 - d20) / (t3 - t0))  # (p3 - 3p2 + 3p1 - p0) / h^3 for a uniform step h
    return tuple(jerk)


def ellipsoid_volume(covariance: np.ndarray, k: float = ELLIPSOID_K) -> float:
    """Volume (m^3) of the k-sigma ellipsoid of a 3x3 covariance: (4/3) pi k^3 sqrt(det C); 0 when degenerate."""
    det = float(np.linalg.det(covariance))
    return 4.0 / 3.0 * math.pi * k**3 * math.sqrt(det) if det > 0.0 and math.isfinite(det) else 0.0


def _vector(value: object, n: int) -> tuple[float, ...] | None:
    """A finite n-vector as floats, or None when it is malformed or not finite."""
    try:
        values = tuple(map(float, value.tolist() if isinstance(value, np.ndarray) else value))  # type: ignore
    except (TypeError, ValueError):
        return None
    if len(values) != n or not all(math.isfinite(x) for x in values):
        return None
    return values


def _key(sample: object) -> tuple[int, str] | None:
    """The (participant, hand) of a sample, or None when the sample is not shaped like one."""
    participant, hand = getattr(sample, "participant", None), getattr(sample, "hand", None)
    if isinstance(participant, bool) or not isinstance(participant, int | np.integer) or not isinstance(hand, str):
        return None
    return int(participant), str(hand)


def _number(value: object) -> float | None:
    """A finite float, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


# --- running accumulators --------------------------------------------------------------------------------------


@dataclass
class _Hand:
    """Running sums of one (participant, hand): fixed size whatever the session length."""

    kinds: list[str] = field(default_factory=list)
    window: deque = field(default_factory=lambda: deque(maxlen=4))  # (time, (x, y, z)) of the segment
    jerk_window: deque = field(default_factory=lambda: deque(maxlen=4))  # (sample time, (x, y, z)), distinct times
    last_orientation: tuple[float, ...] | None = None
    last_time: float | None = None
    active_time: float = 0.0
    path_length: float = 0.0
    angular_path: float = 0.0
    jerk_sq_integral: float = 0.0
    jerk_time: float = 0.0
    idle_time: float = 0.0
    n: int = 0
    mean: list[float] = field(default_factory=lambda: [0.0] * 3)
    m2: list[float] = field(default_factory=lambda: [0.0] * 9)  # 3x3 row-major sum of outer products
    low: list[float] = field(default_factory=lambda: [math.inf] * 3)
    high: list[float] = field(default_factory=lambda: [-math.inf] * 3)
    collisions: int = 0
    peak_force: float = 0.0
    excessive_force_time: float = 0.0
    damage: int = 0
    energy_events: int = 0
    energy_time: float = 0.0
    energy_marked: bool = False  # noted since the last observe
    energy_in_episode: bool = False  # the previous tick was marked
    energy_on_time: float = 0.0
    fixture_violations: int = 0
    contact_time: float = 0.0
    guide_sq_integral: float = 0.0
    guide_time: float = 0.0
    invalid: int = 0

    def add(
        self,
        time: float,
        kind: str,
        p: tuple[float, float, float],
        q: tuple[float, ...],
        energy: bool,
        force: float,
        config: TrackerConfig,
        sample_time: float | None = None,
        contact: bool = False,
        deviation: float | None = None,
    ) -> None:
        """Fold one valid sample into the sums; the interval since the previous sample is attributed to it."""
        if kind not in self.kinds and len(self.kinds) < MAX_KINDS_PER_HAND:
            self.kinds.append(kind)
        if self.last_time is None or time - self.last_time > config.max_gap_s:
            self.window.clear()  # a new segment: the gap adds no time, path or jerk
            self.jerk_window.clear()
            self.last_orientation = None
        dt = time - self.last_time if self.window else 0.0
        if self.window:
            prev = self.window[-1][1]
            self.active_time += dt
            self.path_length += math.dist(prev, p)
            self.angular_path += quaternion_angle(self.last_orientation, q)
            t_old, p_old = self.window[0]
            if math.dist(p_old, p) / (time - t_old) < config.idle_speed_m_s:
                self.idle_time += dt
            if force > config.excessive_force_n:
                self.excessive_force_time += dt
            if energy:
                self.energy_on_time += dt
            if contact:
                self.contact_time += dt
            if deviation is not None:
                self.guide_sq_integral += deviation * deviation * dt
                self.guide_time += dt
        self.window.append((time, p))
        self._add_jerk(time if sample_time is None else sample_time, p)
        self.last_orientation = q
        self.last_time = time
        if force > self.peak_force:  # max() without its call
            self.peak_force = force
        self.n += 1
        mean, m2, low, high = self.mean, self.m2, self.low, self.high
        x, y, z = p
        dx, dy, dz = x - mean[0], y - mean[1], z - mean[2]
        mean[0] += dx / self.n
        mean[1] += dy / self.n
        mean[2] += dz / self.n
        ax, ay, az = x - mean[0], y - mean[1], z - mean[2]
        # Welford: stable over millions of samples far from the origin (unrolled: this runs per hand per tick)
        m2[0] += dx * ax
        m2[1] += dx * ay
        m2[2] += dx * az
        m2[3] += dy * ax
        m2[4] += dy * ay
        m2[5] += dy * az
        m2[6] += dz * ax
        m2[7] += dz * ay
        m2[8] += dz * az
        # min() and max() as comparisons (the same values: the samples are finite), without their call overhead
        if x < low[0]:
            low[0] = x
        if y < low[1]:
            low[1] = y
        if z < low[2]:
            low[2] = z
        if x > high[0]:
            high[0] = x
        if y > high[1]:
            high[1] = y
        if z > high[2]:
            high[2] = z

    def _add_jerk(self, t: float, p: tuple[float, float, float]) -> None:
        """Jerk over the last four distinct poses at their sample times (a pose applied again adds nothing;
        a sample clock that goes back starts a new window)."""
        jw = self.jerk_window
        if jw and t <= jw[-1][0]:
            if t < jw[-1][0]:
                jw.clear()
                jw.append((t, p))
            return
        dt = t - jw[-1][0] if jw else 0.0
        jw.append((t, p))
        if len(jw) == 4:
            (t0, p0), (t1, p1), (t2, p2), (t3, p3) = jw
            j = jerk_from_window((t0, t1, t2, t3), (p0, p1, p2, p3))
            self.jerk_sq_integral += (j[0] * j[0] + j[1] * j[1] + j[2] * j[2]) * dt
            self.jerk_time += dt

    def metrics(self) -> HandMetrics:
        """The current metrics as plain finite numbers."""
        volume = ellipsoid_volume(np.reshape(self.m2, (3, 3)) / self.n) if self.n >= 4 else 0.0
        bbox = math.prod(h - lo for h, lo in zip(self.high, self.low, strict=True)) if self.n else 0.0
        return HandMetrics(
            active_time_s=self.active_time,
            path_length_m=self.path_length,
            angular_path_rad=self.angular_path,
            mean_squared_jerk=self.jerk_sq_integral / self.jerk_time if self.jerk_time > 0.0 else 0.0,
            idle_time_s=self.idle_time,
            volume_m3=volume,
            bbox_volume_m3=bbox,
            collisions=self.collisions,
            peak_force_n=self.peak_force,
            excessive_force_s=self.excessive_force_time,
            tissue_damage=self.damage,
            misapplied_energy_events=self.energy_events,
            misapplied_energy_s=self.energy_time,
            energy_time_s=self.energy_on_time,
            fixture_violations=self.fixture_violations,
            forbidden_contact_s=self.contact_time,
            guidance_deviation_m=math.sqrt(self.guide_sq_integral / self.guide_time) if self.guide_time > 0 else 0.0,
            guided_time_s=self.guide_time,
            samples=self.n,
            invalid_samples=self.invalid,
        )


Key = tuple[int, str]


@dataclass
class _Suturing:
    """One participant's suturing: their stitches (bounded), punctures, peak needle force and tears."""

    stitches: deque = field(default_factory=lambda: deque(maxlen=MAX_STITCH_RECORDS))
    placed: int = 0
    punctures: int = 0
    pass_started: float | None = None  # time of the puncture of the pass in progress
    peak_force: float = 0.0
    tears: int = 0

    def report(self, limits: SutureLimits) -> dict:
        checks = {
            "stitches": all(s["passed"] for s in self.stitches),
            "needle_force_n": self.peak_force <= limits.needle_force_n,
            "tears": self.tears <= limits.tears,
        }
        return {
            "stitches": [dict(s) for s in self.stitches],
            "stitches_placed": self.placed,
            "punctures": self.punctures,
            "peak_needle_force_n": self.peak_force,
            "tears": self.tears,
            "checks": checks,
            "passed": all(checks.values()),
            "errors_passed": checks["needle_force_n"] and checks["tears"],
        }


class SkillTracker:
    """Accumulates skill metrics for every (participant, hand) of one session; feed it once per tick."""

    def __init__(
        self,
        config: TrackerConfig | None = None,
        thresholds: Thresholds | None = None,
        suture_limits: SutureLimits | None = None,
    ) -> None:
        self.config = config if config is not None else TrackerConfig()
        # the pass limits ``report()`` judges by: the scenario's ``[skill_limits]`` (Scenario.skill_limits)
        self.thresholds = thresholds if thresholds is not None else DEFAULT_THRESHOLDS
        self.suture_limits = suture_limits if suture_limits is not None else DEFAULT_SUTURE_LIMITS
        self._hands: dict[Key, _Hand] = {}
        self._suturing: dict[int, _Suturing] = {}
        self._contacts: set[tuple[Key, Key]] = set()  # pairs inside a tip-contact episode (present ones only)
        self._last_time: float | None = None
        self.invalid_samples = 0
        self.rejected_observations = 0
        self.rejected_notes = 0

    def _hand(self, participant: int, hand: str) -> _Hand:
        key = (int(participant), str(hand))
        acc = self._hands.get(key)
        if acc is None:
            acc = self._hands[key] = _Hand()
        return acc

    def observe(self, time: float, instruments: Iterable[InstrumentSample]) -> None:
        """Fold one tick's instrument samples (session time in s, strictly increasing) into the running sums."""
        t = _number(time)
        if t is None or (self._last_time is not None and t <= self._last_time):
            self.rejected_observations += 1
            return
        tick_dt = t - self._last_time if self._last_time is not None else 0.0
        tick_dt = tick_dt if tick_dt <= self.config.max_gap_s else 0.0
        self._last_time = t
        for acc in self._hands.values():  # misapplied energy noted since the last tick
            if acc.energy_marked:
                acc.energy_time += tick_dt
            acc.energy_in_episode, acc.energy_marked = acc.energy_marked, False
        present: dict[Key, tuple[float, float, float]] = {}
        for sample in instruments:
            key = _key(sample)
            p = _vector(getattr(sample, "position", None), 3)
            q = _vector(getattr(sample, "orientation", None), 4)
            jaw, force = _number(getattr(sample, "jaw", None)), _number(getattr(sample, "force", None))
            norm = math.hypot(*q) if q is not None else 0.0
            if key is None or p is None or norm < 1e-9 or jaw is None or force is None or force < 0.0 or key in present:
                self.invalid_samples += 1
                if key is not None:
                    self._hand(*key).invalid += 1
                continue
            q = tuple(x / norm for x in q)
            kind = str(getattr(sample, "kind", ""))
            at = _number(getattr(sample, "sample_time", None))
            energy = bool(getattr(sample, "energy", False))
            contact = bool(getattr(sample, "fixture_contact", False))
            deviation = _number(getattr(sample, "guide_deviation", None))
            deviation = deviation if deviation is not None and deviation >= 0.0 else None
            self._hand(*key).add(t, kind, p, q, energy, force, self.config, at, contact, deviation)
            present[key] = p
        self._detect_collisions(present)

    def _detect_collisions(self, present: dict[Key, tuple[float, float, float]]) -> None:
        """Count each pair's entering into tip contact once; forget pairs that separated or left."""
        keys = sorted(present)
        still: set[tuple[Key, Key]] = set()
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                d = math.dist(present[a], present[b])
                pair = (a, b)
                if pair in self._contacts:
                    if d <= self.config.collision_release_m:
                        still.add(pair)
                elif d < self.config.collision_distance_m:
                    still.add(pair)
                    self._hands[a].collisions += 1
                    self._hands[b].collisions += 1
        self._contacts = still

    def note_damage(self, participant: int, hand: str, tets_removed_or_burned: int) -> None:
        """Attribute collateral tissue damage (tets removed or burned) to a hand; non-positive counts are ignored."""
        count = _number(tets_removed_or_burned)
        if count is None or count <= 0 or count != int(count):
            self.rejected_notes += 1
            return
        self._hand(participant, hand).damage += int(count)

    def note_misapplied_energy(self, participant: int, hand: str) -> None:
        """Energy in a forbidden zone at this tick (call every tick while it lasts): one event per episode."""
        acc = self._hand(participant, hand)
        if not acc.energy_marked and not acc.energy_in_episode:
            acc.energy_events += 1
        acc.energy_marked = True

    def note_fixture_violation(self, participant: int, hand: str) -> None:
        """A tip stopped entering a forbidden region (once per entry: the room edge-triggers it)."""
        self._hand(participant, hand).fixture_violations += 1

    def note_collision(self, participant_a: int, hand_a: str, participant_b: int, hand_b: str) -> None:
        """A collision the tracker cannot see (e.g. shafts): one for each hand, unless a tip contact already counts."""
        a, b = (int(participant_a), str(hand_a)), (int(participant_b), str(hand_b))
        if a == b or (min(a, b), max(a, b)) in self._contacts:
            return
        self._hand(*a).collisions += 1
        self._hand(*b).collisions += 1

    # --- suturing --------------------------------------------------------------------------------------------

    def _suture(self, participant: int, hand: str) -> _Suturing | None:
        """The participant's suturing sums (their hand is marked as seen), or None for a malformed key."""
        if isinstance(participant, bool) or not isinstance(participant, int | np.integer) or not isinstance(hand, str):
            self.rejected_notes += 1
            return None
        self._hand(participant, hand)
        return self._suturing.setdefault(int(participant), _Suturing())

    def note_puncture(self, participant: int, hand: str, time: float) -> None:
        """The needle in this hand went into the tissue (a pass begins) at session time ``time``."""
        acc, t = self._suture(participant, hand), _number(time)
        if acc is None or t is None:
            return
        acc.punctures += 1
        if acc.pass_started is None:  # a stitch's time runs from its first puncture (a second bite, a retry)
            acc.pass_started = t

    def note_needle_force(self, participant: int, hand: str, force: float) -> None:
        """The force (N) the tissue exerts on the needle this hand holds, this tick (its peak is trauma)."""
        f = _number(force)
        if f is None or f < 0.0:
            self.rejected_notes += 1
            return
        acc = self._suture(participant, hand)
        if acc is not None:
            acc.peak_force = max(acc.peak_force, f)

    def note_suture_tear(self, participant: int, hand: str) -> None:
        """The needle this hand drives tore the tissue, or a suture it placed pulled through."""
        acc = self._suture(participant, hand)
        if acc is not None:
            acc.tears += 1

    def note_stitch(
        self,
        participant: int,
        hand: str,
        time: float,
        target: str | None,
        entry_error_m: float | None,
        exit_error_m: float | None,
        tolerance: float | None = None,
    ) -> dict | None:
        """A stitch placed by this hand at session time ``time``: its errors (m) from its marked ``target``
        (None: no target to judge by) within ``tolerance`` (m; default the limits'). Returns its record."""
        acc, t = self._suture(participant, hand), _number(time)
        if acc is None or t is None:
            return None
        errors = [_number(e) for e in (entry_error_m, exit_error_m)]
        tol = _number(tolerance) if tolerance is not None else self.suture_limits.stitch_error_m
        tol = tol if tol is not None else self.suture_limits.stitch_error_m
        started = acc.pass_started if acc.pass_started is not None and acc.pass_started <= t else t
        duration = t - started
        accurate = all(e is not None and e <= tol for e in errors) if target is not None else True
        record = {
            "index": acc.placed,
            "target": target,
            "entry_error_mm": None if errors[0] is None else errors[0] * 1000.0,
            "exit_error_mm": None if errors[1] is None else errors[1] * 1000.0,
            "time_s": duration,
            "placed_at_s": t,
            "passed": bool(accurate and duration <= self.suture_limits.stitch_time_s),
        }
        acc.stitches.append(record)
        acc.placed += 1
        acc.pass_started = None
        return record

    def suturing(self, participant: int) -> dict | None:
        """The participant's suturing report (None when they never held the needle in a pass)."""
        acc = self._suturing.get(int(participant))
        return acc.report(self.suture_limits) if acc is not None else None

    def hands(self) -> list[tuple[int, str]]:
        """Every (participant, hand) seen or noted so far, sorted."""
        return sorted(self._hands)

    def metrics(self, participant: int, hand: str) -> HandMetrics:
        """The current metrics of one hand (all zero if it was never seen)."""
        acc = self._hands.get((int(participant), str(hand)))
        return acc.metrics() if acc is not None else HandMetrics()

    def report(self, thresholds: Thresholds | None = None) -> dict:
        """Per participant (str id): per-hand metrics and pass/fail, as plain JSON/msgpack-able values.
        ``thresholds``: the limits to judge by (default: this tracker's, i.e. the scenario's)."""
        thresholds = thresholds if thresholds is not None else self.thresholds
        participants: dict[str, dict] = {}
        for (pid, hand), acc in sorted(self._hands.items()):
            metrics = acc.metrics()
            verdict = evaluate(metrics, thresholds)
            entry = participants.setdefault(str(pid), {"passed": True, "errors_passed": True, "hands": {}})
            entry["hands"][hand] = {
                "kinds": list(acc.kinds),
                "metrics": metrics.as_dict(),
                "checks": dict(verdict.checks),
                "passed": verdict.passed,
                "errors_passed": verdict.errors_passed,
            }
            entry["passed"] = entry["passed"] and verdict.passed
            entry["errors_passed"] = entry["errors_passed"] and verdict.errors_passed
        for pid, acc in sorted(self._suturing.items()):
            entry = participants.setdefault(str(pid), {"passed": True, "errors_passed": True, "hands": {}})
            suture = entry["suturing"] = acc.report(self.suture_limits)
            entry["passed"] = entry["passed"] and suture["passed"]
            entry["errors_passed"] = entry["errors_passed"] and suture["errors_passed"]
        return {
            "participants": participants,
            "invalid_samples": self.invalid_samples,
            "rejected_observations": self.rejected_observations,
            "rejected_notes": self.rejected_notes,
            "config": asdict(self.config),
            "thresholds": {k: v for k, v in asdict(thresholds).items() if v is not None},  # unjudged left out
        }
