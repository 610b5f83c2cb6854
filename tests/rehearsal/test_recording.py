"""Recordings: a session re-simulates exactly from its recording; broken files get clear errors."""

import stat

import msgpack
import numpy as np
import pytest

from physics.instruments import look_rotation
from rehearsal.identity import Identity
from rehearsal.recording import Recorder, RecordingError, read_recording
from rehearsal.replay import replay
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario

DOWN = look_rotation((0.0, -1.0, 0.0))


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("basic_skills")


def _recorded_session(scenario, path, ticks=40):
    room = Room("s-rec", scenario)
    room.recorder = Recorder(path, room.session, scenario)
    room.join(Identity(room.session, 1, Role.LEAD_SURGEON, "lead"))
    room.join(Identity(room.session, 2, Role.MENTOR, "mentor"))
    room.start()
    for k in range(ticks):
        t = k / 60
        room.instrument_input(1, "right", [0.0, 0.03 - 0.012 * min(t, 0.3) / 0.3, 0.0], DOWN, 0.0, sample_time=t)
        if k == 10:
            room.command(2, "inject_complication", complication="stiff")
        if k == 20:
            room.command(2, "pause")
        if k == 25:
            room.command(2, "resume")
        room.advance(1 / 60, substeps=10 if k % 2 else 12)  # the governor's substeps are recorded too
    room.recorder.close(room.state.value)
    return room


def test_a_replay_reproduces_the_session_bit_for_bit(scenario, tmp_path):
    path = tmp_path / "recordings" / "s-rec.rec"
    live = _recorded_session(scenario, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not np.allclose(live.physics.x, live.model.rest_positions)  # the instrument pressed the tissue
    again = replay(path)
    np.testing.assert_array_equal(again.physics.x, live.physics.x)
    assert again.frame == live.frame == 35  # five ticks were paused
    assert again.complications.active == ["stiff"]
    halfway = replay(path, max_ticks=10)
    assert halfway.frame == 10


def test_a_recording_stops_growing_at_its_limit(scenario, tmp_path):
    path = tmp_path / "small.rec"
    recorder = Recorder(path, "s", scenario, max_bytes=400)
    room = Room("s", scenario)
    for _ in range(50):
        recorder.tick(1 / 60, 20, room.control())
    recorder.close("ended")
    assert path.stat().st_size <= 400 + 32 and recorder.truncated > 0
    header, records = read_recording(path)
    *ticks, end = records
    assert header["scenario"] == "basic_skills" and {r["t"] for r in ticks} == {"tick"}
    assert end == {"t": "end", "state": "ended", "truncated": recorder.truncated}


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a recording"),
        (msgpack.packb({"t": "header", "version": 99}), "a version-99 recording; this reads versions 1, 2 and 3"),
        (msgpack.packb({"t": "header", "version": 1, "session": "s", "scenario": 3, "tick_hz": 60}), "scenario"),
        (b"\xc1\xc1\xc1", "not a recording"),
    ],
)
def test_broken_recordings_are_refused_with_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.rec"
    path.write_bytes(content)
    with pytest.raises(RecordingError, match=message):
        replay(path)


def test_a_malformed_tick_is_refused_mid_replay(scenario, tmp_path):
    path = tmp_path / "tampered.rec"
    recorder = Recorder(path, "s", scenario)
    recorder.close("ended")
    with open(path, "ab") as f:
        f.write(msgpack.packb({"t": "tick", "dt": 1 / 60, "n": 20, "c": [[1, "laser", 0, 0, 0, 1, 0, 0, 0, 0, False]]}))
    header, records = read_recording(path)
    assert [r["t"] for r in records] == ["end", "tick"]
    with open(path, "wb") as f:  # without the end record, replay reaches the bad tick
        f.write(msgpack.packb({**header}))
        f.write(msgpack.packb({"t": "tick", "dt": 1 / 60, "n": 20, "c": [[1, "laser", 0, 0, 0, 1, 0, 0, 0, 0, False]]}))
    with pytest.raises(RecordingError, match="malformed instrument row"):
        replay(path)


def test_the_settled_start_and_a_resets_are_recorded_and_replayed_exactly(scenario, tmp_path):
    """A replay re-simulates from the room's start: the frames the world settled (after the header, and on
    each reset) are in the file, and a replay settles exactly those, whatever its own rest test says."""
    path = tmp_path / "s-reset.rec"
    room = Room("s-reset", scenario)
    room.recorder = Recorder(path, room.session, scenario)
    room.join(Identity(room.session, 2, Role.MENTOR, "mentor"))
    room.start()
    for k in range(6):
        if k == 3:
            room.command(2, "reset")
        room.advance(1 / 60)
    room.recorder.close(room.state.value)
    _, records = read_recording(path)
    records = list(records)
    assert records[0] == {"t": "settled", "frames": room.settled.frames}
    assert {"t": "reset", "settled": room.settled.frames} in records
    np.testing.assert_array_equal(replay(path).physics.x, room.physics.x)
    # a file that says 2 frames replays from 2 frames (e.g. a start a time limit cut short elsewhere)
    edited = tmp_path / "edited.rec"
    header, records = read_recording(path)
    with open(edited, "wb") as f:
        f.write(msgpack.packb(header))
        for r in records:
            f.write(msgpack.packb({"t": "settled", "frames": 2} if r["t"] == "settled" else r))
    assert replay(edited, max_ticks=1).settled.frames == 2
    bad = tmp_path / "bad.rec"
    with open(bad, "wb") as f:
        f.write(msgpack.packb(header))
        f.write(msgpack.packb({"t": "settled", "frames": -5}))
    with pytest.raises(RecordingError, match="settled"):
        replay(bad)
