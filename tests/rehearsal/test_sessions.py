"""Session lifecycle seams: scenarios from the scenario folder, the publish metric and the tick observers."""

import pytest
from twisted.internet.task import Clock

from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.scenario import packaged_scenarios
from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings
from tests.rehearsal.link_helpers import RecordingLink


def test_a_scenario_folder_adds_scenarios_but_never_shadows_a_packaged_one(tmp_path):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    shipped = packaged_scenarios()["basic_skills"].read_text(encoding="utf-8")
    (folder / "extra_block.toml").write_text(shipped, encoding="utf-8")
    (folder / "basic_skills.toml").write_text("not a scenario")
    settings = load_settings(None, env={"REHEARSAL_SCENARIO_DIR": str(folder)}, data_dir=tmp_path / "data")
    assert settings.scenario_dir == folder
    server = RehearsalServer(settings, Clock())
    try:
        offered = server.sessions.scenarios()
        assert offered["extra_block"] == folder / "extra_block.toml"
        assert offered["basic_skills"] == packaged_scenarios()["basic_skills"]  # packaged names win
        session = server.create_session("extra_block")
        server.create_session("basic_skills")  # the packaged one: the broken file in the folder is ignored
        assert server.rooms[session].room.scenario.source == folder / "extra_block.toml"
        with pytest.raises(ValueError, match="unknown scenario"):
            server.create_session("nope")
    finally:
        server.stop()
    assert load_settings(None, env={"REHEARSAL_SCENARIO_DIR": ""}).scenario_dir is None


def test_each_published_tick_is_observed_and_timed(tmp_path):
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    seen = []
    server.add_tick_observer(lambda session, handback, publish: seen.append((session, handback, publish)))
    try:
        session = server.create_session("basic_skills")
        live = server.rooms[session]
        live.ticker.stop()
        server.connections.open(RecordingLink(), Identity(session, 1, Role.LEAD_SURGEON, "Lead"))
        server.sessions.on_report(live.room, None)  # a tick without a step: timed, not observed
        assert seen == []
        server.sessions.on_report(live.room, live.room.advance(live.ticker.dt))
        assert len(seen) == 1 and seen[0][0] == session and seen[0][2] > 0
        count = server.metrics.registry.get_sample_value("rehearsal_publish_duration_seconds_count")
        assert count == 2
    finally:
        server.stop()


def test_a_closed_or_discarded_session_takes_its_codes_with_it(tmp_path):
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    try:
        kept, dropped = server.create_session("basic_skills"), server.create_session("basic_skills")
        for session in (kept, dropped):
            server.invites.issue(session, Role.OBSERVER)
        server.sessions.close_room(kept)
        server.sessions.discard_session(dropped)
        assert server.invites.sessions() == [] and server.rooms == {}
        assert server.results.session(kept) is not None  # a closed room keeps its result
        assert server.results.session(dropped) is None  # a discarded one (never offered) leaves nothing
        assert not (server.data_dir / "recordings" / f"{dropped}.rec").exists()
    finally:
        server.stop()
