"""Virtual fixtures in a room: declared in the scenario, enforced on every tip before physics, switched by mentors."""

import numpy as np
import pytest

from netcode.protocol.fixture_shapes import Capsule, Sphere, inside
from netcode.protocol.fixtures import fixture_set_from_fields
from physics.instruments import Kind, look_rotation, quat_to_matrix
from rehearsal.fixtures import fixtures_message, keep_out, tip_point
from rehearsal.scenario import ScenarioError, load_scenario
from tests.rehearsal.room_helpers import running
from tests.rehearsal.test_fixture_scenarios import write_scenario

DOWN = look_rotation((0.0, -1.0, 0.0))  # the tool's axis points down: the tip is 18 mm below a grasper's hinge
TICK = 1 / 60


@pytest.fixture(scope="module")
def vessel():
    return load_scenario("vessel_in_parenchyma")


def test_the_packaged_vessel_scenario_declares_its_fixtures(vessel):
    assert [(f.id, f.role, f.shape) for f in vessel.fixtures] == [
        ("vessel_keepout", "forbidden", "capsule"),
        ("vessel_no_energy", "no_energy", "mesh"),
        ("division_plane", "guide", "plane"),
    ]
    assert vessel.fixtures[0].stiffness == 2000.0 and vessel.fixtures[2].active is False


@pytest.mark.parametrize(
    "region",
    [Capsule((-0.1, 0.0, 0.0), (0.1, 0.0, 0.0), 0.001), Sphere((0.0, 0.0, 0.0), 0.0015)],
    ids=["thin_capsule", "small_sphere"],
)
def test_a_tip_driven_through_a_thin_fixture_at_3_m_s_never_ends_up_inside_or_beyond(region):
    """3 m/s at 60 Hz is 50 mm a tick against a 2-3 mm region: every tick's result is outside and on the near side."""
    tip = np.array([0.0, 0.05, 0.0])
    velocity = np.array([0.0, -3.0, 0.0])
    stopped = 0
    for _ in range(6):
        held, hits = keep_out([region], tip, tip + velocity * TICK)
        assert not inside(region, held) and held[1] > 0, held
        stopped += bool(hits)
        tip = held
    assert stopped >= 5 and region.distance(tip)[0] < 1e-4  # resting on the boundary, above it
    slid, _ = keep_out([region], tip, tip + np.array([0.0, -0.02, 0.0]) + np.array([0.0, 0.0, 0.03]))
    assert not inside(region, slid) and slid[2] > 0.02  # the motion along the boundary goes on


def _tip(room, pid, hand="right"):
    command = next(c for c in room.control().instruments if c.id == pid * 2 + ("left", "right").index(hand))
    return command.position + quat_to_matrix(command.orientation) @ tip_point(command.spec), command


def test_the_room_stops_a_tip_at_a_forbidden_capsule_counts_it_and_announces_it(vessel):
    room, ids = running(vessel)
    lead = ids[next(r for r in ids if r.value == "lead_surgeon")]
    capsule = room.fixtures.fixtures[0].shape
    assert room.instrument_input(lead, "right", [0.03, 0.045, 0.02], DOWN, sample_time=0.0) is None
    room.advance(TICK)
    room.take_events()
    # 30 mm in one tick (1.8 m/s, the fastest the room accepts): through the 9 mm capsule to below it
    assert room.instrument_input(lead, "right", [0.03, 0.015, 0.02], DOWN, sample_time=TICK) is None
    control = room.control()
    tip, command = _tip(room, lead)
    assert not inside(capsule, tip) and tip[1] > 0.0144 and abs(capsule.distance(tip)[0]) < 1e-4
    room.advance(TICK, control=control)
    assert np.allclose(room.physics.instruments[command.id].position, command.position)  # physics got the held pose
    events = [e for e in room.take_events() if e.kind == "fixture_violation"]
    assert [(e.detail, e.by, e.instrument) for e in events] == [
        ({"fixture": "vessel_keepout", "hand": "right"}, lead, command.id)
    ]
    assert room.counters["fixture_violations"] == 1
    room.instrument_input(lead, "right", [0.03, 0.014, 0.02], DOWN, sample_time=2 * TICK)  # pressing on: no new entry
    room.advance(TICK)
    assert room.counters["fixture_violations"] == 1
    metrics = room.skills.metrics(lead, "right")
    assert metrics.fixture_violations == 1 and metrics.forbidden_contact_s > 0
    assert room.skills.report()["participants"][str(lead)]["hands"]["right"]["checks"]["fixture_violations"] is False


def test_energy_is_cut_inside_a_no_energy_zone(vessel):
    room, ids = running(vessel)
    lead = ids[next(r for r in ids if r.value == "lead_surgeon")]
    room.participants[lead].hands["right"] = Kind.CAUTERY_HOOK
    room.fixtures.set_active("vessel_keepout", False)  # reach the vessel's margin without the keep-out
    # the hook's energy tip is (4, 0, 8) mm in its frame: (0.026, 0.017, 0.02) is 2 mm above the vessel's top
    room.instrument_input(lead, "right", [0.03, 0.025, 0.02], DOWN, energy=True, sample_time=0.0)
    tip, command = _tip(room, lead)
    assert room.fixtures.fixtures[1].shape.distance(tip)[0] < 0 and command.energy is False
    room.advance(TICK)
    room.instrument_input(lead, "right", [0.03, 0.0251, 0.02], DOWN, energy=True, sample_time=TICK)
    room.advance(TICK)
    assert [e.detail["fixture"] for e in room.take_events() if e.kind == "energy_cut"] == ["vessel_no_energy"]
    assert room.counters["fixture_energy_cuts"] == 1 and room.counters["fixture_energy_cut_ticks"] >= 2
    room.instrument_input(lead, "right", [0.03, 0.06, 0.02], DOWN, energy=True, sample_time=0.5)
    assert _tip(room, lead)[1].energy is True  # away from the vessel the pedal works


def test_a_mentor_switches_fixtures_and_others_are_refused_and_counted(vessel):
    room, ids = running(vessel)
    roles = {r.value: pid for r, pid in ids.items()}
    for who in ("lead_surgeon", "observer", "scrub_nurse"):
        refusal = room.command(roles[who], "toggle_fixture", fixture="vessel_keepout", active=False)
        assert refusal is not None and "may not toggle fixture" in refusal.reason
    assert room.counters["refused_toggle_fixture"] == 3 and room.fixtures.active["vessel_keepout"] is True
    revision = room.fixtures.revision
    assert room.command(roles["mentor"], "toggle_fixture", fixture="vessel_keepout", active=False) is None
    assert room.fixtures.active["vessel_keepout"] is False and room.fixtures.revision == revision + 1
    assert "no fixture 'nope'" in room.command(roles["mentor"], "toggle_fixture", fixture="nope", active=True).reason
    assert room.command(roles["mentor"], "toggle_fixture", fixture="vessel_keepout").reason.startswith("toggle")
    assert room.counters["refused_bad_fixture"] == 2
    lead = roles["lead_surgeon"]  # switched off, the capsule stops nothing
    room.instrument_input(lead, "right", [0.03, 0.045, 0.02], DOWN, sample_time=0.0)
    room.control()
    room.instrument_input(lead, "right", [0.03, 0.015, 0.02], DOWN, sample_time=TICK)
    assert _tip(room, lead)[0][1] == pytest.approx(-0.003)
    sent = fixture_set_from_fields(fixtures_message(room.fixtures).fields)
    assert [(f.id, f.active) for f in sent.fixtures] == [
        ("vessel_keepout", False),
        ("vessel_no_energy", True),
        ("division_plane", False),
    ]


def test_guides_measure_deviation_without_moving_the_tip(tmp_path):
    scenario = load_scenario(
        write_scenario(
            tmp_path,
            '[[fixtures]]\nid = "line"\nrole = "guide"\nshape = "path"\n'
            "points = [[0.0, 0.03, 0.0], [0.1, 0.03, 0.0]]\n",
        )
    )
    room, ids = running(scenario)
    lead = ids[next(r for r in ids if r.value == "lead_surgeon")]
    for i in range(5):
        room.instrument_input(lead, "right", [0.01 * i, 0.05, 0.0], DOWN, sample_time=i * TICK)
        room.advance(TICK)
    assert _tip(room, lead)[0][1] == pytest.approx(0.032)  # 2 mm above the path, not pulled onto it
    metrics = room.skills.metrics(lead, "right")
    assert metrics.guidance_deviation_m == pytest.approx(0.002, abs=1e-6) and metrics.guided_time_s > 0


def test_a_fixture_that_cannot_be_built_is_a_scenario_error(tmp_path):
    path = write_scenario(tmp_path, '[[fixtures]]\nid = "x"\nrole = "forbidden"\nshape = "mesh"\nregion = 3\n')
    with pytest.raises(ScenarioError, match=r"fixtures\[0\]\.region: no material region 3"):
        load_scenario(path)


# --- through the server: what clients learn ----------------------------------------------------------------


@pytest.fixture
def server(tmp_path):
    from twisted.internet.task import Clock

    from rehearsal.server import RehearsalServer
    from rehearsal.settings import load_settings

    clock = Clock()
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), clock, clock=clock.seconds)
    try:
        yield server
    finally:
        server.stop()


def test_clients_learn_the_fixtures_their_toggles_and_violations(server):
    from netcode.messaging.messages import Message
    from rehearsal.identity import Identity
    from rehearsal.roles import Role
    from tests.rehearsal.link_helpers import RecordingLink

    session = server.create_session("vessel_in_parenchyma")
    live = server.rooms[session]
    live.ticker.stop()
    mentor, lead, observer = RecordingLink(), RecordingLink(), RecordingLink()
    server.connections.open(lead, Identity(session, 1, Role.LEAD_SURGEON, "Lead"))
    server.connections.open(mentor, Identity(session, 2, Role.MENTOR, "Prof"))
    server.connections.open(observer, Identity(session, 3, Role.OBSERVER, "Student"))
    for link in (mentor, lead, observer):
        kinds = [m.type for _, m in link.decoded()]
        assert kinds.index("fixtures") == kinds.index("welcome") + 2  # after welcome and the roster
        first = fixture_set_from_fields(link.messages("fixtures")[0])
        assert [f.id for f in first.fixtures] == ["vessel_keepout", "vessel_no_energy", "division_plane"]
        assert first.fixtures[1].shape.triangles.shape[1] == 3  # the vessel's mesh travels with it

    args = {"fixture": "division_plane", "active": True}
    for link, request_id in ((lead, 1), (observer, 2)):
        server.connections.receive(
            link.key, Message("command", {"action": "toggle_fixture", "args": args, "id": request_id})
        )
        refused = link.messages("refused")[-1]
        assert refused["request"] == "command:toggle_fixture" and refused["id"] == request_id
    assert live.room.counters["refused_toggle_fixture"] == 2 and len(mentor.messages("fixtures")) == 1
    server.connections.receive(mentor.key, Message("command", {"action": "toggle_fixture", "args": args}))
    for link in (mentor, lead, observer):
        latest = fixture_set_from_fields(link.messages("fixtures")[-1])
        assert latest.revision == first.revision + 1 and latest.fixtures[2].active is True
        assert link.events("toggle_fixture")[0]["detail"]["fixture"] == "division_plane"

    room = live.room
    room.instrument_input(1, "right", [0.03, 0.045, 0.02], DOWN, sample_time=0.0)
    server.sessions.on_report(room, room.advance(TICK))
    room.instrument_input(1, "right", [0.03, 0.015, 0.02], DOWN, sample_time=TICK)
    server.sessions.on_report(room, room.advance(TICK))
    for link in (mentor, lead, observer):
        (event,) = link.events("fixture_violation")
        assert event["detail"] == {"fixture": "vessel_keepout", "hand": "right"} and event["by"] == 1
        assert event["instrument"] == live.object_id(1, "right")
