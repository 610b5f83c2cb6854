"""Burn levels per surface vertex: the pure function of the cautery field, the diffing of what a room's clients
were told (only changes, everything to a newcomer, bounded messages), and the hooks in publishing and joining."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from twisted.internet.task import Clock

from netcode.messaging.channels import Channel
from physics.instruments import Kind, look_rotation
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings
from rehearsal.surface_damage import MAX_DAMAGE_VERTICES, MAX_LEVEL, SurfaceDamage, vertex_levels
from rehearsal.wire import REHEARSAL_REGISTRY
from tests.rehearsal.link_helpers import RecordingLink

TETS = np.array([[0, 1, 2, 3], [1, 2, 3, 4], [4, 5, 6, 7]], np.int64)


def decode(fields: dict) -> dict[int, int]:
    ids = np.frombuffer(fields["vertices"], "<u4")
    levels = np.frombuffer(fields["levels"], np.uint8)
    assert ids.size == levels.size and np.all(np.diff(ids.astype(np.int64)) > 0)
    return dict(zip(ids.tolist(), levels.tolist(), strict=True))


def test_a_vertex_level_is_the_highest_damage_of_its_live_tets_quantized():
    alive = np.array([True, True, False])
    damage = np.array([0.5, 0.2, 1.0])
    levels = vertex_levels(TETS, alive, damage, 9)
    assert levels.dtype == np.uint8
    assert levels.tolist() == [128, 128, 128, 128, 51, 0, 0, 0, 0]  # tet 2 is gone; vertex 8 is in none
    assert vertex_levels(TETS, np.ones(3, bool), np.array([np.nan, -1.0, 7.0]), 8).tolist() == [0] * 4 + [255] * 4
    with pytest.raises(ValueError):
        vertex_levels(TETS, alive, damage[:2], 9)


def world(n_vertices: int = 9, surface=((0, 1, 2), (1, 2, 4), (4, 5, 6))):
    model = SimpleNamespace(
        tets=TETS, alive=np.ones(3, bool), n_vertices=n_vertices, surface=np.array(surface, np.int64)
    )
    state = SimpleNamespace(damage=np.zeros(3), counters=Counter())
    return model, state


def heat(state, tet: int, damage: float) -> None:
    state.damage[tet] = damage
    state.counters["energy_frames"] += 1


def test_only_levels_that_changed_on_the_surface_are_sent_and_only_after_heating():
    model, state = world()
    tracker = SurfaceDamage()
    assert tracker.update(model, state) == []  # nothing burned: nothing to say
    state.damage[0] = 0.5
    assert tracker.update(model, state) == []  # no heated frame since: the damage is not even read
    state.counters["energy_frames"] += 1
    state.counters["energy_frames_without_tissue"] += 1
    assert tracker.update(model, state) == []  # energy on, but into air
    heat(state, 0, 0.5)
    (message,) = tracker.update(model, state)
    assert message.type == "surface_damage" and message.fields["reset"] is False
    assert decode(message.fields) == {0: 128, 1: 128, 2: 128}  # vertex 3 is inside: not sent
    REHEARSAL_REGISTRY.encode(message)  # fits the registry's bounds
    heat(state, 0, 0.501)
    assert tracker.update(model, state) == []  # the same level: nothing sent
    heat(state, 1, 0.8)
    (message,) = tracker.update(model, state)
    assert decode(message.fields) == {1: 204, 2: 204, 4: 204}  # only what changed
    model.alive[1] = False  # tet 1 burned through and removed
    (message,) = tracker.update(model, state, topology_changed=True)
    assert decode(message.fields) == {1: 128, 2: 128, 4: 0}
    assert tracker.sent.tolist() == [128, 128, 128, 0, 0, 0, 0, 0, 0]


def test_a_vertex_that_surfaces_later_gets_its_level_and_a_newcomer_gets_everything():
    model, state = world()
    tracker = SurfaceDamage()
    heat(state, 0, 1.0)
    (message,) = tracker.update(model, state)
    assert 3 not in decode(message.fields)
    model.surface = np.array([(0, 1, 3), (1, 2, 3)], np.int64)  # a cut opened the inside
    (message,) = tracker.update(model, state, topology_changed=True)
    assert decode(message.fields) == {3: MAX_LEVEL}
    (full,) = tracker.full_messages()
    assert full.fields["reset"] is True
    assert decode(full.fields) == {0: 255, 1: 255, 2: 255, 3: 255}
    assert SurfaceDamage().full_messages() == []


def test_a_new_world_takes_the_levels_back_to_fresh():
    model, state = world()
    tracker = SurfaceDamage()
    heat(state, 2, 0.4)
    tracker.update(model, state)
    _, fresh = world()  # a reset: a new state, no heated frames yet
    (message,) = tracker.update(model, fresh)
    assert decode(message.fields) == {4: 0, 5: 0, 6: 0}
    assert tracker.full_messages() == []
    bigger, state = world(n_vertices=12)
    (message,) = tracker.update(bigger, state)  # another mesh: clients forget what they hold
    assert message.fields["reset"] is True and decode(message.fields) == {}


def test_many_changes_are_split_into_bounded_messages():
    n = 2 * MAX_DAMAGE_VERTICES + 100
    tets = np.arange(4 * n, dtype=np.int64).reshape(n, 4)
    model = SimpleNamespace(tets=tets, alive=np.ones(n, bool), n_vertices=4 * n, surface=tets[:, :3])
    state = SimpleNamespace(damage=np.full(n, 0.9), counters=Counter(energy_frames=1))
    messages = SurfaceDamage().update(model, state)
    assert [len(m.fields["levels"]) for m in messages] == [MAX_DAMAGE_VERTICES] * 6 + [300]
    for m in messages:
        assert len(REHEARSAL_REGISTRY.encode(m)) < 5 * MAX_DAMAGE_VERTICES + 64
    ids = np.concatenate([np.frombuffer(m.fields["vertices"], "<u4") for m in messages])
    assert np.array_equal(ids, np.unique(tets[:, :3]))


# --- in the server: the publishing and joining hooks ----------------------------------------------------------


@pytest.fixture
def server(tmp_path):
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    yield server
    server.stop()


def test_a_room_burning_tissue_tells_everyone_and_a_newcomer_joins_with_the_burns(server):
    session = server.create_session("basic_skills")
    live = server.rooms[session]
    live.ticker.stop()
    surgeon, watcher = RecordingLink(3), RecordingLink(4)
    server.connections.open(surgeon, Identity(session, 3, Role.LEAD_SURGEON, "Lea"))
    server.connections.open(watcher, Identity(session, 4, Role.OBSERVER, "Olive"))
    room = live.room
    room.participants[3].hands["right"] = Kind.CAUTERY_HOOK
    top = room.physics.x[:, 1].max()  # where the top lies (the room opens settled, a little below its rest shape)
    down = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))
    dt = 1.0 / room.scenario.tick_hz

    def tick(t: float, energy: bool) -> None:
        room.instrument_input(3, "right", np.array([0.0, top + 0.006, 0.0]), down, 0.0, energy, t)
        server.publisher.publish(live, room.advance(dt))

    for i in range(5):
        tick(i * dt, False)  # the hook rests on the tissue, no energy: no burns
    assert surgeon.messages("surface_damage") == [] == watcher.messages("surface_damage")
    for i in range(5, 75):
        tick(i * dt, True)
    told = surgeon.messages("surface_damage")
    assert told and told == watcher.messages("surface_damage")  # the same, to everyone
    assert all(c is Channel.RELIABLE for c, m in surgeon.sent if getattr(m, "type", "") == "surface_damage")
    held: dict[int, int] = {}
    for fields in told:
        held.update(decode(fields))
    assert max(held.values()) >= 200  # burned through around the tip
    assert any(e["kind"] == "burn" for e in surgeon.messages("event"))
    assert held == {int(v): int(live.burns.sent[v]) for v in held}  # what the room remembers it told
    count = len(told)
    for i in range(75, 85):
        tick(i * dt, False)  # energy off: the levels stay, nothing more is sent
    assert len(surgeon.messages("surface_damage")) == count

    late = RecordingLink(5)
    server.connections.open(late, Identity(session, 5, Role.OBSERVER, "Otto"))
    types = [m.type for _, m in late.decoded()]
    assert types.index("surface_damage") > types.index("snap_topology")  # after the state-sync join messages
    assert types.index("surface_damage") < types.index("welcome")
    full = late.messages("surface_damage")
    assert full[0]["reset"] is True
    newcomer: dict[int, int] = {}
    for fields in full:
        newcomer.update(decode(fields))
    assert newcomer == {v: level for v, level in held.items() if level}


def test_a_split_cut_that_appends_vertices_keeps_what_clients_hold():
    model, state = world()
    tracker = SurfaceDamage()
    heat(state, 0, 1.0)
    tracker.update(model, state)
    # a split cut: vertex 9 is a copy of vertex 0 (tet 0 now uses it) and joins the surface
    model.tets = np.array([[9, 1, 2, 3], [1, 2, 4, 5], [4, 5, 6, 7]], np.int32)
    model.n_vertices, model.surface = 10, np.array([(0, 1, 2), (9, 1, 2), (1, 2, 4), (4, 5, 6)], np.int64)
    (message,) = tracker.update(model, state, topology_changed=True)
    assert message.fields["reset"] is False  # the same world grew: no start over
    assert decode(message.fields) == {0: 0, 9: MAX_LEVEL}
    assert tracker.sent.shape == (10,)
