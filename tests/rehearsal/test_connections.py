"""Connections: what any transport's Link gets on open, receive and closed (the contract WebSocket links rely on)."""

import pytest
from twisted.internet.task import Clock

from netcode.messaging.channels import Channel
from netcode.messaging.connection import Delivery
from netcode.messaging.messages import Message
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.sessions import KICK_DELAY
from rehearsal.settings import load_settings
from tests.rehearsal.link_helpers import RecordingLink


@pytest.fixture
def server(tmp_path):
    clock = Clock()
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), clock, clock=clock.seconds)
    try:
        yield server
    finally:
        server.stop()


def _room(server) -> str:
    session = server.create_session("basic_skills")
    server.rooms[session].ticker.stop()
    return session


def test_open_joins_the_room_and_welcomes_the_client(server):
    session = _room(server)
    lead = RecordingLink()
    server.connections.open(lead, Identity(session, 7, Role.LEAD_SURGEON, "Dr. Lead"))
    kinds = [m.type for _, m in lead.decoded()]
    assert kinds[:2] == ["snap_config", "snap_topology"] and "welcome" in kinds
    welcome = lead.messages("welcome")[0]
    assert welcome["participant"] == 7 and welcome["role"] == "lead_surgeon" and set(welcome["hands"]) == {"right"}
    assert lead.events("joined")[0]["detail"]["participant"] == 7 and lead.events("started")
    assert all(channel is Channel.RELIABLE for channel, _ in lead.sent)
    live = server.rooms[session]
    assert live.clients[lead.key].link is lead and lead.key in live.sync.clients

    observer = RecordingLink()
    server.connections.open(observer, Identity(session, 8, Role.OBSERVER, "Student"))
    assert [e["detail"]["participant"] for e in lead.events("joined")] == [7, 8]  # the room hears of newcomers
    assert observer.messages("welcome")[0]["hands"] == {}


@pytest.mark.parametrize(
    ("case", "reason"),
    [("unknown", "unknown or ended session"), ("removed", "the mentor removed this participant from the session")],
)
def test_a_refused_open_gets_a_refusal_then_its_link_is_closed(server, case, reason):
    session = _room(server)
    if case == "removed":
        server.rooms[session].room.join(Identity(session, 9, Role.OBSERVER, "Gone"))
        server.rooms[session].room.remove(9)
    link = RecordingLink()
    server.connections.open(link, Identity(session if case == "removed" else "s-nope", 9, Role.OBSERVER, "x"))
    assert [(c, m.type, m.fields["request"]) for c, m in link.decoded()] == [(Channel.RELIABLE, "refused", "connect")]
    assert link.messages("refused")[0]["reason"] == reason
    assert link.closed is None and link.key not in server.connections.clients
    server.reactor.advance(KICK_DELAY)
    assert link.closed == reason and server.counters["connects_refused"] == 1


def test_receive_dispatches_messages_and_refuses_what_a_client_does_not_send(server):
    session = _room(server)
    link = RecordingLink()
    server.connections.open(link, Identity(session, 3, Role.MENTOR, "Prof"))
    link.sent.clear()
    server.connections.receive(link.key, Message("ping", {"time": 4.5}))
    assert link.sent == [(Channel.UNRELIABLE, Message("pong", {"time": 4.5}))]
    server.connections.receive(link.key, Delivery(Channel.RELIABLE, b"", Message("command", {"action": "pause"})))
    assert link.events("pause") and server.rooms[session].room.state.value == "paused"
    server.connections.receive(link.key, Message("welcome", {}))
    assert link.messages("refused")[-1]["request"] == "message:welcome"
    server.connections.receive(12345, Message("ping", {"time": 1.0}))  # an unknown key: ignored
    server.connections.receive(link.key, None)  # a delivery that did not decode: ignored


def test_closed_leaves_the_room_and_tells_the_others(server):
    session = _room(server)
    lead, mentor = RecordingLink(), RecordingLink()
    server.connections.open(lead, Identity(session, 7, Role.LEAD_SURGEON, "Dr. Lead"))
    server.connections.open(mentor, Identity(session, 3, Role.MENTOR, "Prof"))
    live = server.rooms[session]
    server.connections.closed(lead.key, "timeout")
    assert mentor.events("left")[0]["detail"] == {"participant": 7, "reason": "timeout"}
    assert lead.key not in live.clients and lead.key not in live.sync.clients
    assert not live.room.participants[7].connected and live.empty_since is None
    server.connections.closed(lead.key, "timeout")  # twice: nothing more
    assert len(mentor.events("left")) == 1
    server.connections.closed(mentor.key, "closed")
    assert live.empty_since is not None


# --- budgets and bounds (issue 19): work is paid for before it is done -----------------------------------

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402

from netcode.protocol.inputs import InputSample, encode_packet  # noqa: E402
from netcode.protocol.poses import RigidPose  # noqa: E402
from rehearsal.budget import COMMANDS_PER_SECOND, GAZE_UPDATES_PER_SECOND, INPUT_SAMPLES_PER_SECOND  # noqa: E402
from rehearsal.live_room import MAX_EVENT_BYTES  # noqa: E402
from rehearsal.wire import REHEARSAL_REGISTRY  # noqa: E402


def _packet(first: int, count: int, devices=(0, 1, 2), at=(0.0, 0.1, 0.0)) -> bytes:
    pose = RigidPose(np.array(at), np.array([0.0, 0.0, 0.0, 1.0]))
    samples = [InputSample(first + i, (first + i) / 90.0, tuple(pose for _ in devices)) for i in range(count)]
    return encode_packet(devices, samples)


def _input(server, link, packet: bytes) -> None:
    server.connections.receive(link.key, Message("input", {"p": packet}))


def test_an_observer_flooding_inputs_gets_no_pose_processed_and_a_bounded_gaze(server, monkeypatch):
    session = _room(server)
    room = server.rooms[session].room
    calls = []
    monkeypatch.setattr(room, "instrument_input", lambda *a, **k: calls.append(a))
    observer = RecordingLink()
    server.connections.open(observer, Identity(session, 8, Role.OBSERVER, "Student"))
    for k in range(200):  # 200 packets of 14 samples with both hands tracked, in no time
        _input(server, observer, _packet(14 * k, 14))
    assert calls == [] and server.counters["input_poses"] == 0
    refused = server.counters["budget_refused_gaze_rate"] + server.counters["budget_refused_input_bytes"]
    assert refused == 200 - GAZE_UPDATES_PER_SECOND  # 10 head poses decoded; the rest not even parsed
    assert server.counters["budget_refused_input_bytes"] > 0  # 200 x 1.1 kB in no time is over the bytes budget
    assert server.connections.clients[observer.key].gaze is not None  # its head still ranks what it sees
    refused = observer.messages("refused")
    assert len(refused) == 1 and "observer role may not drive" in refused[0]["reason"]  # once per REFUSAL_INTERVAL
    assert server.counters["budget_refused_role"] == 200 - server.counters["budget_refused_input_bytes"]


def test_a_surgeon_gets_at_most_its_sample_budget_processed(server):
    session = _room(server)
    lead = RecordingLink()
    server.connections.open(lead, Identity(session, 7, Role.LEAD_SURGEON, "Dr. Lead"))
    for k in range(100):  # 100 packets of 14 new samples at once: 1,400 samples
        _input(server, lead, _packet(14 * k, 14, devices=(2,)))
    assert server.counters["input_poses"] <= INPUT_SAMPLES_PER_SECOND
    assert server.counters["budget_refused_input_samples"] >= 100 - INPUT_SAMPLES_PER_SECOND // 14 - 1
    server.reactor.advance(1.0)  # the budget refills with time
    before = server.counters["input_poses"]
    _input(server, lead, _packet(14 * 100, 14, devices=(2,)))
    assert server.counters["input_poses"] == before + 14


def test_redundant_samples_are_not_charged_again(server):
    session = _room(server)
    lead = RecordingLink()
    server.connections.open(lead, Identity(session, 7, Role.LEAD_SURGEON, "Dr. Lead"))
    for k in range(300):  # a real client: one new sample per packet, repeating up to 9 it sent before
        _input(server, lead, _packet(max(0, k - 9), min(k, 9) + 1, devices=(2,)))
        if k % 90 == 89:
            server.reactor.advance(1.0)
    assert server.counters["budget_refused_input_samples"] == 0


def test_commands_over_the_budget_are_refused_before_they_run(server):
    session = _room(server)
    mentor = RecordingLink()
    server.connections.open(mentor, Identity(session, 3, Role.MENTOR, "Prof"))
    for k in range(30):
        action = "pause" if k % 2 == 0 else "resume"
        server.connections.receive(mentor.key, Message("command", {"action": action, "id": k}))
    assert len(mentor.events("pause")) + len(mentor.events("resume")) == COMMANDS_PER_SECOND
    assert server.counters["budget_refused_commands"] == 30 - COMMANDS_PER_SECOND


@pytest.mark.parametrize(
    "args",
    [
        {"kind": "marker", "position": [0.0, 0.1, 0.0], "text": "x" * 200_000},
        {"kind": "marker", "position": [0.0, 0.1, 0.0], "text": "ok", "direction": [0.0] * 60_000},
        {"kind": "clear", "position": [0.0] * 60_000},
        {"kind": "marker", "position": [0.0, 0.1]},
        {"kind": "marker", "position": [0.0, 0.1, float("inf")]},
        {"kind": "marker", "position": [0.0, 0.1, 0.0], "colour": "red"},
        {"kind": "k" * 100_000},
    ],
)
def test_annotate_arguments_are_bounded_before_the_command_runs(server, args):
    session = _room(server)
    mentor, other = RecordingLink(), RecordingLink()
    server.connections.open(mentor, Identity(session, 3, Role.MENTOR, "Prof"))
    server.connections.open(other, Identity(session, 8, Role.OBSERVER, "Student"))
    room = server.rooms[session].room
    server.connections.receive(mentor.key, Message("command", {"action": "annotate", "args": args, "id": 5}))
    assert not other.events("annotate") and not room.annotations
    refused = mentor.messages("refused")[-1]
    assert refused["request"] == "command:annotate" and refused["id"] == 5
    assert server.counters["commands_bad_arguments"] == 1 == server.counters["budget_refused_command_arguments"]


def test_an_accepted_annotation_is_broadcast_bounded(server):
    session = _room(server)
    mentor, other = RecordingLink(), RecordingLink()
    server.connections.open(mentor, Identity(session, 3, Role.MENTOR, "Prof"))
    server.connections.open(other, Identity(session, 8, Role.OBSERVER, "Student"))
    args = {"kind": "marker", "position": [0, 0.1, 0], "text": "é" * 200}
    server.connections.receive(mentor.key, Message("command", {"action": "annotate", "args": args}))
    event = other.events("annotate")[0]
    assert event["detail"]["position"] == [0.0, 0.1, 0.0] and len(event["detail"]["text"]) == 200
    assert all(len(REHEARSAL_REGISTRY.encode(m)) < 4096 for _, m in other.sent if isinstance(m, Message))


def test_an_event_that_cannot_be_encoded_is_counted_never_raised(server):
    session = _room(server)
    live = server.rooms[session]
    link = RecordingLink()
    server.connections.open(link, Identity(session, 8, Role.OBSERVER, "Student"))
    sent = len(link.sent)
    live.broadcast_event("annotate", detail={"text": "x" * (MAX_EVENT_BYTES + 10)})
    live.broadcast_event("annotate", detail={f"k{i}": i for i in range(100)})  # over the detail map's bound
    assert len(link.sent) == sent
    assert live.counters["events_refused_too_large"] + live.counters["events_refused_invalid"] == 2


def test_a_full_room_refuses_newcomers_but_not_returning_people_nor_another_room(server):
    session, other_session = _room(server), _room(server)
    live = server.rooms[session]
    live.room.scenario = dataclasses.replace(live.room.scenario, max_participants=2)
    a, b, c = RecordingLink(), RecordingLink(), RecordingLink()
    server.connections.open(a, Identity(session, 1, Role.LEAD_SURGEON, "A"))
    server.connections.open(b, Identity(session, 2, Role.OBSERVER, "B"))
    server.connections.open(c, Identity(session, 3, Role.OBSERVER, "C"))
    assert c.messages("refused")[0]["reason"] == "the room is full (2 people)"
    assert live.room.counters["refused_room_full"] == 1 and server.counters["budget_refused_room_full"] == 1
    server.connections.closed(b.key, "timeout")
    b2 = RecordingLink()
    server.connections.open(b2, Identity(session, 2, Role.OBSERVER, "B"))  # back in: a seat was kept
    assert b2.messages("welcome")
    elsewhere = RecordingLink()
    server.connections.open(elsewhere, Identity(other_session, 1, Role.OBSERVER, "D"))
    assert elsewhere.messages("welcome")


def test_a_reconnect_storm_is_coalesced_and_the_room_learns_the_latest_state(server, caplog):
    import logging

    from rehearsal.connections import OPENS_PER_WINDOW, PRESENCE_EVENTS_PER_WINDOW, PRESENCE_WINDOW

    session = _room(server)
    watcher = RecordingLink()
    server.connections.open(watcher, Identity(session, 1, Role.MENTOR, "Prof"))
    caplog.set_level(logging.INFO, logger="rehearsal.connections")
    for _ in range(50):  # one participant connects and drops 50 times in no time
        link = RecordingLink()
        server.connections.open(link, Identity(session, 9, Role.OBSERVER, "Dr. Secret Name"))
        server.connections.closed(link.key, "timeout")
    told = [e for e in watcher.messages("event") if e["kind"] in ("joined", "left") and e["by"] == 9]
    assert len(told) == PRESENCE_EVENTS_PER_WINDOW
    # 10 connections per window get in (each sends the whole topology); the other 40 are refused before that
    assert server.counters["budget_refused_reconnect_rate"] == 50 - OPENS_PER_WINDOW
    assert server.counters["budget_refused_presence_events"] == 2 * OPENS_PER_WINDOW - PRESENCE_EVENTS_PER_WINDOW
    server.reactor.advance(PRESENCE_WINDOW)
    told = [e for e in watcher.messages("event") if e["kind"] in ("joined", "left") and e["by"] == 9]
    assert len(told) == PRESENCE_EVENTS_PER_WINDOW  # the last one told ("left") is still true: nothing more
    link = RecordingLink()
    server.connections.open(link, Identity(session, 9, Role.OBSERVER, "Dr. Secret Name"))  # a fresh window
    assert watcher.events("joined")[-1]["by"] == 9
    assert "Dr. Secret Name" not in caplog.text and "participant 9 joined" in caplog.text


def test_a_coalesced_change_is_told_when_the_window_passes(server):
    from rehearsal.connections import PRESENCE_EVENTS_PER_WINDOW, PRESENCE_WINDOW

    session = _room(server)
    watcher = RecordingLink()
    server.connections.open(watcher, Identity(session, 1, Role.MENTOR, "Prof"))
    for _ in range(PRESENCE_EVENTS_PER_WINDOW // 2 + 1):
        link = RecordingLink()
        server.connections.open(link, Identity(session, 9, Role.OBSERVER, "B"))
        server.connections.closed(link.key, "timeout")
    server.connections.open(RecordingLink(), Identity(session, 9, Role.OBSERVER, "B"))  # ends connected
    assert [e["kind"] for e in watcher.messages("event") if e.get("by") == 9][-1] == "left"
    server.reactor.advance(PRESENCE_WINDOW)
    assert [e["kind"] for e in watcher.messages("event") if e.get("by") == 9][-1] == "joined"


def test_a_connection_that_stays_over_its_budget_is_disconnected_but_a_burst_is_not(server):
    from rehearsal.budget import OVERSPEND_SECONDS

    session = _room(server)
    burst, flood = RecordingLink(), RecordingLink()
    server.connections.open(burst, Identity(session, 7, Role.LEAD_SURGEON, "Lead"))
    server.connections.open(flood, Identity(session, 8, Role.ASSISTANT_SURGEON, "Assistant"))
    seq = {burst.key: 0, flood.key: 0}

    def send(link, packets):
        for _ in range(packets):
            _input(server, link, _packet(seq[link.key], 14))
            seq[link.key] += 14

    send(burst, 300)  # one burst far over the budget, then a headset's normal rate again
    for _ in range(int(10 * OVERSPEND_SECONDS) + 10):
        server.reactor.advance(0.1)
        send(flood, 30)  # 330 kB/s for good
        send(burst, 1)
    assert flood.closed == "over its work budget" and burst.closed is None
    assert server.counters["budget_refused_disconnected"] == 1


def test_a_rooms_budget_bounds_all_its_connections_and_never_disconnects_for_the_others(server):
    from rehearsal.budget import OVERSPEND_SECONDS, ROOM_INPUT_SAMPLES_PER_SECOND

    session = _room(server)
    links = [RecordingLink() for _ in range(15)]
    for k, link in enumerate(links):
        server.connections.open(link, Identity(session, 10 + k, Role.ASSISTANT_SURGEON, f"A{k}"))
    seq = 0
    for _ in range(int(10 * OVERSPEND_SECONDS) + 5):
        server.reactor.advance(0.1)
        for link in links:  # each within its own budget (20 samples per 0.1 s), together over the room's
            _input(server, link, _packet(seq, 20, devices=(2,)))
        seq += 20
    assert server.counters["budget_refused_room_input_samples"] > 0
    assert server.counters["input_poses"] <= ROOM_INPUT_SAMPLES_PER_SECOND * (OVERSPEND_SECONDS + 2)
    assert all(link.closed is None for link in links) and server.counters["budget_refused_disconnected"] == 0
