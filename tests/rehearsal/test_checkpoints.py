"""Room checkpoints: a room taken at a tick boundary, written, read back and resumed carries on exactly."""

import pickle
import stat

import msgpack
import numpy as np
import pytest

from physics.instruments import look_rotation
from rehearsal.checkpoints import (
    MAGIC,
    CheckpointFileError,
    CheckpointPolicy,
    CheckpointWriter,
    apply,
    checkpoint_path,
    decode,
    encode,
    fingerprint,
    reactor_part,
    read_checkpoint,
    room_part,
)
from rehearsal.hands import instrument_id
from rehearsal.identity import Identity
from rehearsal.recording import Recorder
from rehearsal.replay import replay
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario

DOWN = look_rotation((0.0, -1.0, 0.0))
KEY = bytes(range(32))
LEAD, MENTOR = 1, 2
GRASPER = instrument_id(LEAD, "right")


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("basic_skills")


def _drive(room: Room, k: int) -> None:
    """Tick k of a script: the lead grasps the top surface and lifts it 12 mm, then holds it."""
    t = k / 60
    lift = 0.012 * min(max(t - 0.1, 0.0), 0.3) / 0.3
    jaw = 0.8 if k < 4 else 0.0
    room.instrument_input(LEAD, "right", [0.0, 0.0215 + lift, 0.0], DOWN, jaw, sample_time=t)
    room.advance(1 / 60, substeps=10)


def _room(scenario, tmp_path, session="s-ck"):
    room = Room(session, scenario)
    room.recorder = Recorder(tmp_path / "recordings" / f"{session}.rec", session, scenario)
    room.join(Identity(session, LEAD, Role.LEAD_SURGEON, "lead"))
    room.join(Identity(session, MENTOR, Role.MENTOR, "mentor"))
    room.start()
    return room


def _checkpoint(room: Room) -> bytes:
    return encode(room_part(room, reactor_part(room, "basic_skills", 1234.5)), KEY)


def test_a_resumed_room_carries_on_exactly_and_its_recording_replays_to_it(scenario, tmp_path):
    room = _room(scenario, tmp_path)
    for k in range(100):
        if k == 30:
            assert room.command(MENTOR, "annotate", position=[0.0, 0.03, 0.0], text="here") is None
            assert room.command(MENTOR, "inject_complication", complication="stiff") is None
        _drive(room, k)
    held = room.physics.instruments[GRASPER].grasp
    assert held is not None, "the grasp is held at the checkpoint"
    assert room.progress()["steps"][0]["status"] == "done", "a step was completed before the checkpoint"
    saved = decode(_checkpoint(room), KEY)
    for k in range(100, 120):  # ticks after the checkpoint that a crash loses
        _drive(room, k)
    room.recorder.flush()

    again = Room(room.session, scenario)
    apply(saved, again)
    again.recorder = Recorder(room.recorder.path, room.session, scenario, resume_at=saved.recording)
    assert again.frame == 100 and again.physics.instruments[GRASPER].grasp is not None
    assert list(again.annotations) == [{"by": MENTOR, "position": [0.0, 0.03, 0.0], "text": "here"}]
    assert again.complications.active == ["stiff"] and not again.participants[LEAD].connected
    again.join(Identity(room.session, LEAD, Role.LEAD_SURGEON, "lead"))  # the lead comes back
    assert again.participants[LEAD].hands == room.participants[LEAD].hands

    reference = Room(room.session, scenario)  # the room as it would have gone on without the crash
    apply(saved, reference)
    reference.join(Identity(room.session, LEAD, Role.LEAD_SURGEON, "lead"))
    for k in range(100, 140):
        _drive(again, k)
        _drive(reference, k)
    assert again.physics.x.tobytes() == reference.physics.x.tobytes()
    assert again.physics.instruments[GRASPER].grasp is not None  # the grasp carried on under the lead's hand
    assert again.progress() == reference.progress() and again.skills.report() == reference.skills.report()
    again.recorder.close(again.state.value)
    replayed = replay(again.recorder.path)
    assert replayed.frame == again.frame == 140
    np.testing.assert_array_equal(replayed.physics.x, again.physics.x)


def test_a_damaged_or_foreign_checkpoint_is_refused(scenario, tmp_path):
    data = _checkpoint(_room(scenario, tmp_path))
    assert decode(data, KEY).session == "s-ck"
    flipped = bytearray(data)
    flipped[-10] ^= 1
    for bad, message in [
        (bytes(flipped), "signature"),
        (data[: len(data) // 2], "signature"),
        (b"junk", "not a room checkpoint"),
    ]:
        with pytest.raises(CheckpointFileError, match=message):
            decode(bad, KEY)
    with pytest.raises(CheckpointFileError, match="signature"):
        decode(data, bytes(32))  # another server's key


def test_a_signed_checkpoint_still_cannot_name_arbitrary_code(scenario, tmp_path):
    import hashlib
    import hmac

    good = msgpack.unpackb(_checkpoint(_room(scenario, tmp_path))[len(MAGIC) + 32 :], raw=False)
    good["reactor"] = pickle.dumps({"x": print})  # builtins.print: not on the list
    body = msgpack.packb(good, use_bin_type=True)
    data = MAGIC + hmac.new(KEY, body, hashlib.sha256).digest() + body
    with pytest.raises(CheckpointFileError, match="may not appear"):
        decode(data, KEY)


def test_the_writer_replaces_files_atomically_and_forgets_ended_rooms(scenario, tmp_path):
    room = _room(scenario, tmp_path)
    written = []
    writer = CheckpointWriter(tmp_path, KEY, on_written=lambda capture_, n, seconds: written.append(n))
    try:
        for _ in range(3):
            writer.submit(room_part(room, reactor_part(room, "basic_skills", 0.0)))
        assert writer.wait_idle()
        path = checkpoint_path(tmp_path, room.session)
        assert read_checkpoint(path, KEY).session == room.session
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not list(path.parent.glob("*.tmp"))
        assert 1 <= len(written) <= 3 and writer.stats.failed == 0
        writer.delete(room.session)
        assert writer.wait_idle() and not path.exists()
    finally:
        writer.close()


def test_the_policy_checkpoints_every_interval_and_soon_after_a_change(scenario, tmp_path):
    room = _room(scenario, tmp_path)
    policy = CheckpointPolicy(interval=5.0, min_gap=0.2, last_at=0.0, last_print=fingerprint(room))
    assert not policy.due(1.0, fingerprint(room))
    room.command(MENTOR, "annotate", position=[0.0, 0.03, 0.0], text="x")
    changed = fingerprint(room)
    assert policy.due(1.0, changed)
    policy.taken(1.0, changed)
    assert not policy.due(9.0, changed)  # one in flight at a time
    policy.in_flight = False
    assert not policy.due(5.9, changed) and policy.due(6.0, changed)
    cut = (changed[0] + 1, *changed[1:])
    assert not policy.due(1.1, cut) and policy.due(1.25, cut)  # topology changes are spaced out
    policy.in_flight = False
    room.command(MENTOR, "annotate", position=[0.0, 0.03, 0.0], text="y")
    assert policy.due(1.01, fingerprint(room))  # what a person did is checkpointed at the next tick


def test_a_new_room_is_checkpointed_at_its_first_tick():
    """A session created and then lost before anyone joined still comes back (its invites are out there)."""
    assert CheckpointPolicy().due(0.0, ())
