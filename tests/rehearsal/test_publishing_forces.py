"""Publishing forces: every tick each participant gets its instruments' forces, mentors everyone's."""

import numpy as np
from twisted.internet.task import Clock

from netcode.messaging.channels import Channel
from netcode.protocol.forces import FORCE_QUANTUM, force_report_from_fields
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings
from tests.rehearsal.link_helpers import RecordingLink

DT = 1 / 60


def test_forces_on_the_wire_match_the_physics_report_within_quantization(tmp_path):
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    try:
        session = server.create_session("basic_skills")
        live = server.rooms[session]
        live.ticker.stop()
        room = live.room
        people = [(3, Role.LEAD_SURGEON), (4, Role.MENTOR), (5, Role.OBSERVER), (6, Role.ASSISTANT_SURGEON)]
        links = {key: RecordingLink(key) for key, _ in people}
        for key, role in people:
            server.connections.open(links[key], Identity(session, key, role, role.value))
        room.start()
        top, centre = room.physics.x.max(0), room.physics.x.mean(0)
        reports = []
        t = 0.0
        # open the jaw in the tissue, close it (a grasp), then pull up: contact and grasp forces grow
        for i in range(36):
            t += DT
            lift = max(0, i - 20) * 0.0005
            jaw = 0.6 if i < 10 else 0.0
            position = [centre[0], top[1] - 0.002 + lift, centre[2]]
            assert room.instrument_input(3, "right", position, [0, 0, 0, 1], jaw, False, t) is None
            report = room.advance(DT)
            for link in links.values():
                link.sent.clear()
            server.publisher.publish(live, report)
            held = room.physics.instruments[3 * 2 + 1].position.copy()
            reports.append((report, held, live.sync.sequence, [link.messages("forces") for link in links.values()]))
        instrument = 3 * 2 + 1  # the lead surgeon's right hand (rehearsal.hands)
        object_id = live.object_id(3, "right")
        pulled = 0
        for report, held, tick, (surgeon, mentor, observer, assistant) in reports:
            assert len(surgeon) == 1 and len(mentor) == 1  # one message each per tick
            assert observer == [] and assistant == []  # no instrument, not a mentor: nothing
            assert surgeon[0] == mentor[0]
            wire = force_report_from_fields(surgeon[0])
            force, pull, position = wire.of(object_id)
            assert np.abs(force - report.instrument_forces[instrument]).max() <= FORCE_QUANTUM / 2 + 1e-9
            expected_pull = report.grasp_forces.get(instrument, np.zeros(3))
            assert np.abs(pull - expected_pull).max() <= FORCE_QUANTUM / 2 + 1e-9
            assert np.allclose(position, held, atol=1e-6)
            assert wire.tick == tick
            pulled += np.linalg.norm(expected_pull) > 0.5
        assert pulled >= 5  # the grasp really pulled (forces well above the quantum)
        assert all(c is Channel.UNRELIABLE for c, m in links[3].sent if getattr(m, "type", "") == "forces")
    finally:
        server.stop()


def _rows(n: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    return [
        (32768 + i, rng.normal(0, 40, 3), rng.normal(0, 5, 3) if i % 2 else np.zeros(3), rng.uniform(-0.2, 0.2, 3))
        for i in range(n)
    ]


def test_a_participants_own_forces_cut_from_the_rooms_are_the_messages_of_its_rows_alone():
    """Quantized once for the room, each participant's message is byte for byte the one of its rows alone."""
    from rehearsal.publishing import OwnForces, force_messages
    from rehearsal.wire import REHEARSAL_REGISTRY

    rows = _rows(7)
    rows[2][1][0] = np.nan  # saturation and NaN handling are per value too
    rows[3][1][1] = 1e9
    by_participant = {5: rows[:2], 1: rows[2:3], 9: rows[3:7]}
    own = OwnForces(12, 3.25, by_participant)
    for participant, group in by_participant.items():
        got = [REHEARSAL_REGISTRY.encode(m) for m in own.messages(participant)]
        assert got == [REHEARSAL_REGISTRY.encode(m) for m in force_messages(12, 3.25, group)]


def test_a_room_with_more_instruments_than_a_message_holds_goes_participant_by_participant():
    from rehearsal.publishing import MAX_FORCE_INSTRUMENTS, OwnForces, force_messages
    from rehearsal.wire import REHEARSAL_REGISTRY

    rows = _rows(MAX_FORCE_INSTRUMENTS + 3)
    by_participant = {1: rows[:2], 2: rows[2:]}
    own = OwnForces(4, 1.0, by_participant)
    for participant, group in by_participant.items():
        got = [REHEARSAL_REGISTRY.encode(m) for m in own.messages(participant)]
        assert got == [REHEARSAL_REGISTRY.encode(m) for m in force_messages(4, 1.0, group)]
        assert len(got) == (2 if participant == 2 else 1)
