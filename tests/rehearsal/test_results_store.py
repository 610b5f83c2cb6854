"""The results store keeps what a session leaves behind, privately, and answers debrief queries."""

import stat

import pytest

from physics.instruments import look_rotation
from rehearsal.identity import Identity
from rehearsal.results_store import ResultsStore
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario

DOWN = look_rotation((0.0, -1.0, 0.0))


@pytest.fixture
def store(tmp_path):
    store = ResultsStore(tmp_path / "data" / "results.sqlite3")
    yield store
    store.close()


def _finished_room(session="s-1"):
    room = Room(session, load_scenario("basic_skills"))
    room.join(Identity(session, 3, Role.LEAD_SURGEON, "Ada"))
    room.join(Identity(session, 4, Role.OBSERVER, "Bo"))
    room.start()
    for k in range(20):
        room.instrument_input(3, "right", [0.001 * k, 0.05, 0.0], DOWN, 0.3, sample_time=k / 60)
        room.advance(1 / 60)
    room.end()
    return room


def test_a_finished_session_round_trips_with_people_steps_and_skills(store):
    room = _finished_room()
    store.save(room.result(created_at=100.0, ended_at=160.0))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    kept = store.session("s-1")
    assert kept["scenario"] == "basic_skills" and kept["end_state"] == "ended" and kept["frames"] == 20
    assert kept["simulated_seconds"] == pytest.approx(20 / 60)
    assert [s["id"] for s in kept["steps"]] == ["retract", "divide", "no_energy_at_edge"]
    assert [s["status"] for s in kept["steps"]] == ["pending", "pending", "ok"]
    lead, observer = kept["participants"]
    assert (lead["name"], lead["role"], observer["role"]) == ("Ada", "lead_surgeon", "observer")
    right = lead["skills"]["hands"]["right"]["metrics"]
    assert right["path_length_m"] == pytest.approx(0.019, rel=1e-6)  # 19 steps of 1 mm
    assert observer["skills"] == {}
    assert store.session("s-unknown") is None


def test_sessions_are_listed_newest_first_and_a_second_save_replaces_the_first(store):
    first, second = _finished_room("s-a"), _finished_room("s-b")
    store.save(first.result(0.0, 10.0))
    store.save(second.result(0.0, 20.0))
    result = first.result(0.0, 30.0)
    result.steps[0]["status"] = "done"
    store.save(result)
    listed = store.sessions()
    assert [s["session"] for s in listed] == ["s-a", "s-b"]
    assert listed[0]["steps_done"] == 1 and listed[0]["violations"] == 0
    assert len(store.session("s-a")["steps"]) == 3
