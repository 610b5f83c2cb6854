"""Session lifecycle seams: scenarios from the scenario folder, the publish metric and the tick observers."""

import dataclasses

import pytest
from twisted.internet.task import Clock

from netcode.sync.motion_bound import DEFAULT_MOVING_ERROR
from netcode.transport.address import Address
from rehearsal.identity import Identity
from rehearsal.join_service import JoinService, NoFreeSeatError
from rehearsal.roles import Role
from rehearsal.scenario import packaged_scenarios
from rehearsal.secrets_store import TOKEN_KEY, server_secret
from rehearsal.server import RehearsalServer
from rehearsal.settings import PROTOCOL_ID, load_settings
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


def test_a_live_room_sends_moving_tissue_within_the_moving_bound_and_rest_within_the_fine_one(tmp_path):
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    try:
        live = server.rooms[server.create_session("basic_skills")]
        live.ticker.stop()
        motion = live.sync.motion
        assert motion.moving_error == DEFAULT_MOVING_ERROR > motion.max_error == live.sync.config.positions.max_error
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


def test_a_full_room_is_refused_at_the_join_before_a_token_is_minted_and_the_invite_is_not_spent(tmp_path):
    now = [100.0]
    data = tmp_path / "data"
    server = RehearsalServer(load_settings(None, env={}, data_dir=data), Clock(), clock=lambda: now[0])
    try:
        session = server.create_session("basic_skills")
        room = server.rooms[session].room
        room.scenario = dataclasses.replace(room.scenario, max_participants=2)
        service = JoinService(
            server_secret(data, TOKEN_KEY),
            PROTOCOL_ID,
            [Address.parse("127.0.0.1:40000")],
            invites=server.invites,
            session_exists=server.sessions.session_open,
            reserve_seat=server.sessions.reserve_seat,
        )
        invite = service.invite_team(session, roles=[Role.OBSERVER], uses=10)[Role.OBSERVER]
        first, _second = service.join(invite, "one"), service.join(invite, "two")  # two seats held, nobody in yet
        codes = server.invites.session_codes(session)
        with pytest.raises(NoFreeSeatError, match="the room is full"):
            service.join(invite, "three")
        assert server.invites.check(invite).uses_left == 8  # the refused join spent no use
        assert server.invites.session_codes(session) == codes  # and got no rejoin code
        assert server.counters["budget_refused_room_full"] == 1

        server.connections.open(RecordingLink(), first.identity)  # one arrives: still one seat held, one taken
        with pytest.raises(NoFreeSeatError):
            service.join(invite, "three")
        now[0] += 41.0  # the second's token expired unused: its seat is free again
        service.join(invite, "three")
        assert service.rejoin(first.rejoin_code).identity == first.identity  # people in the room always return
        server.sessions.close_room(session)
        assert server.sessions.seat_holds == {}  # the holds go with the room
    finally:
        server.stop()
