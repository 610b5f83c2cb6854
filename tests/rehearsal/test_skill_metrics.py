"""Skill metrics on small synthetic trajectories whose answers are known in closed form."""

import json
import math
from collections import deque

import msgpack
import numpy as np
import pytest

from rehearsal.skill_metrics import (
    ELLIPSOID_K,
    MAX_STITCH_RECORDS,
    HandMetrics,
    InstrumentSample,
    SkillTracker,
    SutureLimits,
    Thresholds,
    TrackerConfig,
    evaluate,
    jerk_from_window,
    quaternion_angle,
)

DT = 1.0 / 60.0
IDENTITY = (1.0, 0.0, 0.0, 0.0)


def sample(position, orientation=IDENTITY, participant=1, hand="right", force=0.0, energy=False, kind="grasper"):
    return InstrumentSample(participant, hand, kind, position, orientation, 0.0, energy, force)


def about_z(angle):
    return (math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2))


def run(positions, **kwargs):
    """One hand's samples at 60 Hz from a list of positions; returns the tracker."""
    tracker = SkillTracker()
    for i, p in enumerate(positions):
        tracker.observe(i * DT, [sample(p, **kwargs)])
    return tracker


def test_straight_line_path_length_and_time():
    positions = [(0.1 * i / 60, 0.2, 0.3) for i in range(61)]  # 0.1 m in 1 s
    m = run(positions).metrics(1, "right")
    assert m.path_length_m == pytest.approx(0.1, abs=1e-12)
    assert m.active_time_s == pytest.approx(1.0, abs=1e-12)
    assert m.idle_time_s == 0.0
    assert m.angular_path_rad == 0.0
    assert m.mean_squared_jerk < 1e-6  # constant velocity: no jerk beyond round-off
    assert m.samples == 61


def test_rotation_angular_path_and_quaternion_sign():
    tracker = SkillTracker()
    angles = [math.pi / 2 * i / 30 for i in range(31)] + [math.pi / 2 * (30 - i) / 30 for i in range(1, 31)]
    for i, a in enumerate(angles):
        q = about_z(a)
        q = tuple(-x for x in q) if i % 2 else q  # q and -q are the same rotation: must add nothing
        tracker.observe(i * DT, [sample((0.0, 0.0, 0.0), q)])
    m = tracker.metrics(1, "right")
    assert m.angular_path_rad == pytest.approx(math.pi, abs=1e-9)  # 90 degrees there and back
    assert m.path_length_m == 0.0
    assert quaternion_angle(IDENTITY, about_z(1e-7)) == pytest.approx(1e-7, rel=1e-6)  # precise for tiny steps


def test_still_instrument_is_idle_the_whole_time():
    m = run([(0.01, 0.02, 0.03)] * 121).metrics(1, "right")
    assert m.active_time_s == pytest.approx(2.0, abs=1e-12)
    assert m.idle_time_s == pytest.approx(2.0, abs=1e-12)
    assert m.path_length_m == 0.0


def test_idle_only_while_slow():
    still = [(0.0, 0.0, 0.0)] * 61  # 1 s still, then 1 s at 5 cm/s
    moving = [(0.05 * i / 60, 0.0, 0.0) for i in range(1, 61)]
    m = run(still + moving).metrics(1, "right")
    assert m.active_time_s == pytest.approx(2.0, abs=1e-12)
    assert m.idle_time_s == pytest.approx(1.0, abs=1e-12)


def test_jerk_of_a_cubic_is_exact():
    c = 2.0  # x = c t^3: jerk 6c everywhere
    m = run([(c * (i * DT) ** 3, 0.0, 0.0) for i in range(61)]).metrics(1, "right")
    assert m.mean_squared_jerk == pytest.approx(36 * c * c, rel=1e-6)
    times = (0.0, 0.1, 0.3, 0.35)  # non-uniform steps too
    j = jerk_from_window(times, tuple((c * t**3, 0.0, 0.0) for t in times))
    assert j[0] == pytest.approx(6 * c, rel=1e-9)


def test_smooth_motion_ranks_above_jittery_motion():
    t = np.arange(121) * DT
    smooth = [(0.05 * math.sin(2 * math.pi * 0.5 * ti), 0.0, 0.0) for ti in t]
    jitter = [(x + (0.0005 if i % 2 else -0.0005), y, z) for i, (x, y, z) in enumerate(smooth)]
    smooth_m = run(smooth).metrics(1, "right")
    jitter_m = run(jitter).metrics(1, "right")
    assert 0 < smooth_m.mean_squared_jerk * 100 < jitter_m.mean_squared_jerk
    assert evaluate(smooth_m).checks["mean_squared_jerk"]
    assert not evaluate(jitter_m).checks["mean_squared_jerk"]


def test_force_threshold_timing_and_peak():
    tracker = SkillTracker(TrackerConfig(excessive_force_n=2.5))
    for i in range(61):
        force = 3.0 if 11 <= i <= 40 else 1.0  # 30 samples above: 0.5 s
        force = 4.0 if i == 20 else force
        tracker.observe(i * DT, [sample((0.0, 0.0, 0.0), force=force)])
    m = tracker.metrics(1, "right")
    assert m.excessive_force_s == pytest.approx(0.5, abs=1e-12)
    assert m.peak_force_n == 4.0


def test_collision_counted_once_per_contact_episode():
    tracker = SkillTracker()  # contact below 5 mm, released beyond 7.5 mm
    gaps_mm = [20, 10, 4.9, 5.1, 4.0, 6.0, 4.9, 7.0, 4.5, 20, 30, 3.0, 3.0, 20]  # two episodes; jitter inside one
    for i, gap in enumerate(gaps_mm):
        tracker.observe(
            i * DT,
            [sample((0.0, 0.0, 0.0), participant=1), sample((gap / 1000, 0.0, 0.0), participant=2, hand="left")],
        )
    assert tracker.metrics(1, "right").collisions == 2
    assert tracker.metrics(2, "left").collisions == 2


def test_noted_collision_adds_unless_already_in_tip_contact():
    tracker = SkillTracker()
    tracker.observe(0.0, [sample((0.0, 0.0, 0.0)), sample((0.001, 0.0, 0.0), participant=2)])
    tracker.note_collision(2, "right", 1, "right")  # the same contact the tracker already counted
    tracker.observe(DT, [sample((0.0, 0.0, 0.0)), sample((0.05, 0.0, 0.0), participant=2)])
    tracker.note_collision(1, "right", 2, "right")  # shafts: invisible to the tracker
    assert tracker.metrics(1, "right").collisions == 2
    assert tracker.metrics(2, "right").collisions == 2


def test_misapplied_energy_episodes_and_seconds():
    tracker = SkillTracker()
    for i in range(91):
        tracker.observe(i * DT, [sample((0.0, 0.0, 0.0), energy=True)])
        if 10 <= i < 40 or 60 <= i < 66:  # 30 ticks, then 6 ticks
            tracker.note_misapplied_energy(1, "right")
    m = tracker.metrics(1, "right")
    assert m.misapplied_energy_events == 2
    assert m.misapplied_energy_s == pytest.approx(36 * DT, abs=1e-12)
    assert m.energy_time_s == pytest.approx(1.5, abs=1e-12)


def test_tissue_damage_attributed_and_bad_counts_rejected():
    tracker = SkillTracker()
    tracker.note_damage(3, "left", 4)
    tracker.note_damage(3, "left", 2)
    tracker.note_damage(3, "left", -1)
    tracker.note_damage(3, "left", float("nan"))
    assert tracker.metrics(3, "left").tissue_damage == 6
    assert tracker.rejected_notes == 2


def test_economy_of_volume_on_cube_corners():
    a = 0.02
    corners = [(sx * a, sy * a, sz * a) for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    m = run(corners * 5).metrics(1, "right")  # population covariance a^2 I
    assert m.volume_m3 == pytest.approx(4 / 3 * math.pi * ELLIPSOID_K**3 * a**3, rel=1e-9)
    assert m.bbox_volume_m3 == pytest.approx(8 * a**3, rel=1e-12)
    flat = run([(0.01 * i, 0.0, 0.0) for i in range(10)]).metrics(1, "right")
    assert flat.volume_m3 == 0.0  # a line spans no volume


def test_gap_adds_no_time_or_path():
    tracker = SkillTracker()
    tracker.observe(0.0, [sample((0.0, 0.0, 0.0))])
    tracker.observe(DT, [sample((0.001, 0.0, 0.0))])
    tracker.observe(5.0, [sample((0.5, 0.0, 0.0))])  # back after 5 s somewhere else
    tracker.observe(5.0 + DT, [sample((0.501, 0.0, 0.0))])
    m = tracker.metrics(1, "right")
    assert m.active_time_s == pytest.approx(2 * DT, abs=1e-12)
    assert m.path_length_m == pytest.approx(0.002, abs=1e-12)


def test_fast_run_with_collisions_fails_and_clean_slow_run_passes_errors():
    fast = HandMetrics(active_time_s=10.0, path_length_m=0.3, collisions=4)
    verdict = evaluate(fast)
    assert verdict.checks["active_time_s"] and verdict.checks["path_length_m"]
    assert not verdict.checks["collisions"]
    assert not verdict.passed and not verdict.errors_passed

    slow = HandMetrics(active_time_s=900.0)
    verdict = evaluate(slow)
    assert verdict.errors_passed and not verdict.passed

    for error in (
        {"peak_force_n": 5.1},
        {"excessive_force_s": 1.5},
        {"tissue_damage": 6},
        {"misapplied_energy_events": 1},
        {"misapplied_energy_s": DT},
    ):
        assert not evaluate(HandMetrics(**error)).passed, error

    assert evaluate(HandMetrics()).passed
    lenient = Thresholds(collisions=None)  # unjudged metrics are left out
    assert "collisions" not in evaluate(fast, lenient).checks and evaluate(fast, lenient).passed


def test_fast_run_with_a_collision_fails_in_the_report():
    tracker = SkillTracker()
    strict = Thresholds(collisions=0)
    for i in range(30):  # half a second, two instruments touching once
        gap = 0.003 if i == 15 else 0.05
        tracker.observe(i * DT, [sample((0.0, 0.0, 0.0)), sample((gap, 0.0, 0.0), hand="left")])
    report = tracker.report(strict)
    hands = report["participants"]["1"]["hands"]
    assert hands["right"]["checks"]["active_time_s"]
    assert not hands["right"]["passed"] and not hands["left"]["passed"]
    assert report["participants"]["1"]["passed"] is False
    assert report["participants"]["1"]["errors_passed"] is False


def test_report_is_plain_data():
    tracker = SkillTracker()
    for i in range(10):
        tracker.observe(i * DT, [sample((0.001 * i, 0.0, 0.0), force=1.0), sample((0.1, 0.0, 0.0), participant=2)])
    tracker.note_misapplied_energy(2, "right")
    report = tracker.report()
    json.dumps(report, allow_nan=False)
    assert msgpack.unpackb(msgpack.packb(report), strict_map_key=True) == json.loads(json.dumps(report))
    assert set(report["participants"]) == {"1", "2"}
    hand = report["participants"]["1"]["hands"]["right"]
    assert hand["kinds"] == ["grasper"]
    assert hand["metrics"]["path_length_m"] == pytest.approx(0.009)
    assert set(hand["checks"]) <= set(hand["metrics"])
    lenient = tracker.report(Thresholds(idle_time_s=None))
    assert "idle_time_s" not in lenient["thresholds"]
    assert "idle_time_s" not in lenient["participants"]["1"]["hands"]["right"]["checks"]
    json.dumps(lenient, allow_nan=False)


def _container_sizes(obj, seen=None):
    """Total length of every list/dict/set/deque/array reachable from an object's attributes."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.size
    if isinstance(obj, dict):
        return len(obj) + sum(_container_sizes(k, seen) + _container_sizes(v, seen) for k, v in obj.items())
    if isinstance(obj, list | tuple | set | deque):
        return len(obj) + sum(_container_sizes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return _container_sizes(vars(obj), seen)
    return 0


def test_memory_is_bounded_whatever_the_session_length():
    tracker = SkillTracker()
    rng = np.random.default_rng(0)

    def tick(i):
        p = rng.normal(0.0, 0.01, size=(2, 3))
        tracker.observe(i * DT, [sample(p[0], force=1.0), sample(p[1], participant=2, hand="left")])

    for i in range(100):
        tick(i)
    size = _container_sizes(tracker)
    for i in range(100, 10_000):
        tick(i)
    assert _container_sizes(tracker) == size
    assert tracker.metrics(1, "right").samples == 10_000


def test_non_finite_samples_are_ignored_counted_and_never_poison_the_sums():
    clean, dirty = SkillTracker(), SkillTracker()
    bad = [
        sample((math.nan, 0.0, 0.0)),
        sample((0.0, 0.0, 0.0), force=math.inf),
        sample((0.0, 0.0, 0.0), force=-1.0),
        sample((0.0, 0.0, 0.0), orientation=(0.0, 0.0, 0.0, 0.0)),
        sample((0.0, 0.0, 0.0), orientation=(1.0, math.nan, 0.0, 0.0)),
        sample((0.0, 0.0)),
        sample("abc"),
        InstrumentSample(1, "right", "grasper", (0.0, 0.0, 0.0), IDENTITY, math.nan, False, 0.0),
    ]
    for i in range(60):
        good = sample((0.001 * i, 0.0, 0.0), about_z(0.01 * i), force=1.0 + 0.01 * i)
        clean.observe(i * DT, [good])
        dirty.observe(i * DT, [bad[i % len(bad)], good] if i % 3 == 0 else [good, good])  # a duplicate too
    dirty.observe(math.nan, [sample((0.0, 0.0, 0.0))])
    dirty.observe(0.5, [sample((0.0, 0.0, 0.0))])  # time went backwards
    assert dirty.metrics(1, "right").as_dict() | {"invalid_samples": 0} == clean.metrics(1, "right").as_dict()
    assert dirty.invalid_samples == 60 and dirty.metrics(1, "right").invalid_samples == 60
    assert dirty.rejected_observations == 2
    assert all(math.isfinite(v) for v in dirty.metrics(1, "right").as_dict().values())
    json.dumps(dirty.report(), allow_nan=False)


def test_jerk_uses_the_sample_times_of_poses_held_between_ticks():
    """90 Hz tracking applied at 60 Hz ticks (each tick holds the newest pose): with the poses' own times the
    jerk of a smooth sine is the analytic one; at the tick times the uneven holding alone looks like jerk."""
    amplitude, omega = 0.05, math.pi
    samples = np.arange(0, 2.0, 1 / 90)
    with_times, at_ticks = SkillTracker(), SkillTracker()
    for k in range(1, 120):
        t = k * DT
        s = samples[samples <= t + 1e-12][-1]  # the newest tracked pose at this tick
        p = (amplitude * math.sin(omega * s), 0.0, 0.0)
        with_times.observe(t, [InstrumentSample(1, "right", "grasper", p, IDENTITY, sample_time=s)])
        at_ticks.observe(t, [sample(p)])
    expected = amplitude**2 * omega**6 / 2  # mean of (A w^3 cos wt)^2
    assert with_times.metrics(1, "right").mean_squared_jerk == pytest.approx(expected, rel=0.1)
    assert at_ticks.metrics(1, "right").mean_squared_jerk > 100 * expected
    assert evaluate(with_times.metrics(1, "right")).checks["mean_squared_jerk"]


def test_a_tracker_judges_by_its_scenarios_limits():
    """``SkillTracker(thresholds=scenario.skill_limits)``: report() judges by them unless told otherwise."""
    from rehearsal.scenario import load_scenario

    limits = load_scenario("basic_skills").skill_limits
    assert limits.path_length_m < Thresholds().path_length_m  # calibrated, tighter than the default
    tracker = SkillTracker(thresholds=limits)
    for i in range(60):  # one second moving 1 cm per tick: 0.59 m of path
        tracker.observe(i * DT, [sample((0.01 * i, 0.0, 0.0))])
    assert not tracker.report()["participants"]["1"]["hands"]["right"]["checks"]["path_length_m"]
    assert tracker.report()["thresholds"]["path_length_m"] == limits.path_length_m
    assert tracker.report(Thresholds())["participants"]["1"]["hands"]["right"]["checks"]["path_length_m"]


# --- suturing ------------------------------------------------------------------------------------------------


def test_suturing_scores_each_stitch_its_accuracy_time_and_the_tissue_trauma():
    tracker = SkillTracker(suture_limits=SutureLimits(stitch_error_m=0.003, needle_force_n=2.0, tears=0,
                                                      stitch_time_s=30.0))  # fmt: skip
    assert tracker.suturing(1) is None and "suturing" not in tracker.report()["participants"].get("1", {})
    tracker.note_puncture(1, "right", 10.0)
    tracker.note_needle_force(1, "right", 0.8)
    tracker.note_puncture(1, "right", 14.0)  # the second bite of the same stitch: its time runs from 10 s
    record = tracker.note_stitch(1, "right", 22.5, "first", 0.0012, 0.0025, tolerance=0.0025)
    assert record == {
        "index": 0,
        "target": "first",
        "entry_error_mm": pytest.approx(1.2),
        "exit_error_mm": pytest.approx(2.5),
        "time_s": 12.5,
        "placed_at_s": 22.5,
        "passed": True,
    }
    tracker.note_puncture(1, "right", 30.0)
    late = tracker.note_stitch(1, "right", 70.0, "second", 0.001, 0.001)  # 40 s: over the 30 s limit
    off = tracker.note_stitch(1, "right", 71.0, "first", 0.0031, 0.0)  # 3.1 mm off the default 3 mm tolerance
    free = tracker.note_stitch(1, "right", 72.0, None, None, None)  # no target to judge by: only its time
    assert (late["passed"], off["passed"], free["passed"]) == (False, False, True)
    assert off["time_s"] == 0.0 and free["entry_error_mm"] is None
    report = tracker.report()["participants"]["1"]
    suturing = report["suturing"]
    assert suturing["stitches_placed"] == 4 and suturing["punctures"] == 3
    assert suturing["peak_needle_force_n"] == 0.8 and suturing["tears"] == 0
    assert suturing["checks"] == {"stitches": False, "needle_force_n": True, "tears": True}
    assert suturing["passed"] is False and suturing["errors_passed"] is True
    assert report["passed"] is False and report["errors_passed"] is True
    json.dumps(report), msgpack.packb(report)  # plain values for the results store and the wire


def test_needle_force_and_tears_are_errors_and_bad_notes_are_refused():
    tracker = SkillTracker()
    tracker.note_needle_force(2, "left", 3.5)  # above the default 3 N
    tracker.note_suture_tear(2, "left")
    for bad in (float("nan"), -1.0, "3"):
        tracker.note_needle_force(2, "left", bad)
    tracker.note_puncture(True, "left", 1.0)
    assert tracker.rejected_notes == 4
    suturing = tracker.report()["participants"]["2"]["suturing"]
    assert suturing["peak_needle_force_n"] == 3.5 and suturing["tears"] == 1
    assert suturing["checks"]["stitches"] is True  # no stitch yet is not a failed stitch
    assert suturing["errors_passed"] is False and tracker.report()["participants"]["2"]["errors_passed"] is False


def test_stitch_records_are_bounded():
    tracker = SkillTracker()
    for k in range(MAX_STITCH_RECORDS + 5):
        tracker.note_stitch(1, "right", float(k), None, None, None)
    suturing = tracker.suturing(1)
    assert len(suturing["stitches"]) == MAX_STITCH_RECORDS and suturing["stitches_placed"] == MAX_STITCH_RECORDS + 5
