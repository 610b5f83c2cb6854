"""Replay: a re-simulated session scores exactly as the live room did (the stored result), because the
recording carries each pose's headset sample time; version-1 files still replay."""

import msgpack
import numpy as np
import pytest

from physics.instruments import look_rotation
from rehearsal.identity import Identity
from rehearsal.recording import Recorder, read_recording
from rehearsal.replay import replay
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario

DOWN = look_rotation((0.0, -1.0, 0.0))


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("basic_skills")


def _irregular_session(scenario, path, ticks=90):
    """A lead surgeon tracked at an irregular ~90 Hz, applied at 60 Hz ticks (some ticks get no new pose,
    some get two), so tick times and sample times differ as they do with a real headset."""
    room = Room("s-irr", scenario)
    room.recorder = Recorder(path, room.session, scenario)
    room.join(Identity(room.session, 1, Role.LEAD_SURGEON, "lead"))
    room.join(Identity(room.session, 2, Role.MENTOR, "mentor"))
    room.start()
    rng = np.random.default_rng(7)
    sample_time = 100.0  # the headset's own clock
    for k in range(ticks):
        for _ in range(int(rng.integers(0, 3))):
            sample_time += float(rng.uniform(0.006, 0.016))
            depth = 0.012 * min(k / 60, 0.5) / 0.5
            position = [0.004 * np.sin(sample_time * 9), 0.03 - depth, 0.0]
            assert room.instrument_input(1, "right", position, DOWN, 0.0, sample_time=sample_time) is None
        if k == 30:
            assert room.command(2, "annotate", position=[0.0, 0.02, 0.0], text="here") is None
        room.advance(1 / 60)
    room.end()
    room.recorder.close(room.state.value)
    return room


def test_the_replayed_metrics_equal_the_stored_result_field_for_field(scenario, tmp_path):
    path = tmp_path / "s-irr.rec"
    live = _irregular_session(scenario, path)
    stored = live.result(0.0, 1.0)
    again = replay(path)
    replayed = again.skills.report()["participants"]
    stored_skills = {str(p["participant"]): p["skills"] for p in stored.participants if p["skills"]}
    assert stored_skills, "the surgeon was scored"
    assert replayed == stored_skills  # every metric, every verdict, exactly
    lead = stored_skills["1"]
    assert lead == replayed["1"]
    # the sample times matter: the same poses at tick times give another jerk
    header, records = read_recording(path)
    assert header["version"] == 3
    records = list(records)
    assert records[0] == {"t": "settled", "frames": again.settled.frames} and again.settled.frames > 0
    ticks = [r for r in records if r["t"] in ("tick", "command")]
    assert {r["t"] for r in ticks} == {"tick", "command"}
    untimed = tmp_path / "untimed.rec"  # the same file without the sample times (as version 1 had it)
    with open(untimed, "wb") as f:
        f.write(msgpack.packb(header))
        f.write(msgpack.packb(records[0]))
        for r in ticks:
            if r["t"] == "tick":
                f.write(msgpack.packb({k: v for k, v in r.items() if k != "s"}))
    at_tick_times = replay(untimed).skills.report()["participants"]
    assert at_tick_times["1"] != replayed["1"]
    np.testing.assert_array_equal(replay(untimed).physics.x, again.physics.x)  # same motion, other timing
    # a version-1 file was recorded by a room that opened at the model's rest shape: its replay starts there
    v1 = tmp_path / "v1.rec"
    with open(v1, "wb") as f:
        f.write(msgpack.packb({**header, "version": 1}))
        f.write(msgpack.packb({"t": "end", "state": "ended", "truncated": 0}))
    old = replay(v1)
    assert old.settled.frames == 0
    np.testing.assert_array_equal(old.physics.x, old.model.rest_positions)


def test_accepted_commands_are_recorded_before_the_tick_they_preceded(scenario, tmp_path):
    path = tmp_path / "s-irr.rec"
    _irregular_session(scenario, path, ticks=40)
    _, records = read_recording(path)
    kinds = [r["t"] for r in records]
    at = kinds.index("command")
    assert kinds[:at].count("tick") == 30  # commanded before the 31st tick ran
    command = next(r for r in read_recording(path)[1] if r["t"] == "command")
    assert command == {
        "t": "command",
        "by": 2,
        "action": "annotate",
        "args": {"position": [0.0, 0.02, 0.0], "text": "here"},
    }
