"""End to end: bad invites, expired connect tokens and malformed traffic are refused with clear errors.

* HTTP: unknown and used-up invite codes, rejoin codes that are not personal, empty names and bodies that
  are not JSON get 4xx answers with an ``error`` a person can read; so do the invites and rejoin codes of
  a session the mentor ended (its headsets are told and disconnected).
* netcode: a used connect token is ignored (also after its headset left); a connect token minted with
  the server's own key (from its data directory) but expired is dropped by the server (counted in
  /metrics) and the client ends in ``CONNECT_TOKEN_EXPIRED``; the same token made with a long expiry
  connects (so it was the expiry that was refused).
* messages: garbage datagrams (from strangers and from a connected client's address), well-encrypted
  payloads that are not messages, unknown message types, server-only messages, unknown commands, bad
  command arguments and malformed input packets are dropped with counters or answered with ``refused``;
  the client that sent them stays connected and the rest of the room is served throughout.
"""

from __future__ import annotations

import base64
import os
import socket
import time
import urllib.error
import urllib.request

import msgpack

from netcode.messaging.channels import Channel
from netcode.messaging.messages import Message
from netcode.transport.address import Address
from netcode.transport.client import ClientState
from netcode.transport.connect_token import generate_connect_token
from rehearsal.bots import Headset, post
from rehearsal.identity import Identity
from rehearsal.invites import REFUSED
from rehearsal.roles import Role
from rehearsal.settings import PROTOCOL_ID
from tests.rehearsal.e2e_helpers import metric, metrics, new_session, pump, saw_event, team_of

INVALID_INVITE = "invite code not valid (unknown, used up or expired)"
DROPS = "rehearsal_dropped_packets_total"


def _join(server, invite: object, name: object = "Someone") -> tuple[int, dict]:
    return post(server.http_port, "/api/join", {"invite": invite, "name": name})


def test_bad_invites_and_requests_get_clear_http_errors(e2e_server):
    server = e2e_server
    session = new_session(server)
    invite = session["invites"]["observer"]

    status, body = _join(server, "no-such-invite-code")
    assert (status, body["error"]) == (403, INVALID_INVITE)
    status, body = _join(server, None)
    assert (status, body["error"]) == (403, INVALID_INVITE)
    status, body = _join(server, invite, "   ")
    assert status == 403 and "display name" in body["error"]

    # a room seats 16 (the scenario's capacity): each join holds a seat until its token has had time to connect,
    # so the 17th join of this room (after a mentor and 15 students, none connected yet) is refused as full
    assert _join(server, session["invites"]["mentor"], "Prof")[0] == 200  # other roles' invites work too
    for i in range(15):
        assert _join(server, invite, f"Student {i}")[0] == 200, i
    status, body = _join(server, invite, "Student 15")
    assert status == 403 and "the room is full" in body["error"]  # before a token is minted: no handshake

    # rejoin: only a participant's personal code mints a token (a team invite tried there keeps its uses)
    session = new_session(server)  # (the first one's seats are all held)
    surgeons = session["invites"]["lead_surgeon"]
    for code in ("no-such-rejoin-code", surgeons, 12345):
        status, body = post(server.http_port, "/api/rejoin", {"rejoin_code": code})
        assert (status, body["error"]) == (403, INVALID_INVITE), code
    for i in range(16):
        assert _join(server, surgeons, f"Surgeon {i}")[0] == 200, i
    assert _join(server, surgeons)[0] == 403

    # a body that is not a JSON object
    for raw in (b"not json", b"[1, 2]"):
        request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/api/join", data=raw, method="POST")
        try:
            urllib.request.urlopen(request, timeout=5)
            raise AssertionError("accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 400 and "JSON" in exc.read().decode()


def test_invites_and_rejoin_codes_of_an_ended_session_are_refused(e2e_server):
    server = e2e_server
    session = new_session(server)
    with team_of(server, session, "mentor", "observer") as team:
        mentor, observer = team
        mentor.command("end_room")
        assert pump(team, lambda: all(saw_event(h, "ended") for h in team), 5.0), server.log()[-4000:]
        assert pump(team, lambda: not any(h.connected for h in team), 5.0)  # then everyone is disconnected
        assert observer.core.state == ClientState.DISCONNECTED
    # The session's code book went with it (revoked when the room closed): its codes are now unknown ones.
    status, body = _join(server, session["invites"]["observer"], "Too Late")
    assert status == 403 and body["error"] in ("this session has ended", REFUSED)
    status, body = post(server.http_port, "/api/rejoin", {"rejoin_code": mentor.ticket["rejoin_code"]})
    assert status == 403 and body["error"] in ("this session has ended", REFUSED)


def _token(server, session: str, participant: int, expire_seconds: int):
    """A connect token minted like the join service does, with the server's key from its data directory."""
    key = bytes.fromhex((server.data_dir / "token_key").read_text().strip())
    return generate_connect_token(
        private_key=key,
        protocol_id=PROTOCOL_ID,
        client_id=participant,
        server_addresses=[Address.from_host_port("127.0.0.1", server.udp_port)],
        expire_seconds=expire_seconds,
        timeout_seconds=10,
        user_data=Identity(session, participant, Role.OBSERVER, f"Observer {participant}").to_user_data(),
    )


def test_an_expired_connect_token_is_refused_and_the_client_fails_clearly(e2e_server):
    server = e2e_server
    session = new_session(server)
    with team_of(server, session, "lead_surgeon") as team:
        (witness,) = team
        # control: the crafted token is good while it has not expired
        fresh = Headset(_token(server, session["session"], 1001, 30).encode())
        team.append(fresh)
        assert pump(team, lambda: fresh.welcome is not None, 5.0), server.log()[-4000:]
        assert fresh.welcome["participant"] == 1001 and fresh.welcome["role"] == "observer"

        token = _token(server, session["session"], 1002, 1)
        before = metrics(server)
        pump(team, lambda: time.time() >= token.expire_timestamp + 0.05, 3.0)
        assert time.time() >= token.expire_timestamp
        late = Headset(token.encode())
        team.append(late)
        assert pump(team, lambda: late.core.state < ClientState.DISCONNECTED, 5.0)
        assert late.core.state == ClientState.CONNECT_TOKEN_EXPIRED
        assert not late.messages  # nothing was ever delivered to it
        after = metrics(server)
        label = 'reason="token_expired"'
        assert metric(after, DROPS, label) > metric(before, DROPS, label)
        accepted = 'outcome="accepted"'
        assert metric(after, "rehearsal_handshakes_total", accepted) == metric(
            before, "rehearsal_handshakes_total", accepted
        )
        assert not saw_event(witness, "joined", lambda e: e["by"] == 1002)
        assert witness.connected and fresh.connected


def test_a_used_connect_token_cannot_connect_again(e2e_server):
    """A token is single-use: once its headset has connected (and even after it left), a copy is ignored."""
    server = e2e_server
    with team_of(server, new_session(server), "lead_surgeon", "observer") as team:
        surgeon, observer = team
        surgeon.close()
        team.remove(surgeon)
        assert pump(team, lambda: saw_event(observer, "left"), 3.0)
        left_at = next(e for e in observer.messages["event"] if e["kind"] == "left")["server_time"]
        before = metrics(server)
        copy = Headset(base64.b64decode(surgeon.ticket["token"]))
        team.append(copy)
        pump(team, lambda: copy.connected, 1.0)
        assert not copy.connected and copy.welcome is None
        label = 'reason="token_already_connected"'
        assert metric(metrics(server), DROPS, label) > metric(before, DROPS, label)
        pid = surgeon.welcome["participant"]
        assert not saw_event(observer, "joined", lambda e: e["by"] == pid and e["server_time"] > left_at)


def _refused(headset: Headset, request: str) -> list[dict]:
    return [r for r in headset.messages["refused"] if r["request"] == request]


def test_malformed_traffic_is_dropped_or_refused_and_the_room_is_served(e2e_server):
    server = e2e_server
    with team_of(server, new_session(server), "lead_surgeon", "mentor", "observer") as team:
        surgeon, mentor, witness = team
        pump(team, lambda: False, 0.2)
        before = metrics(server)
        applied = witness.snapshots_applied
        udp = ("127.0.0.1", server.udp_port)

        # garbage datagrams from a stranger and from the connected surgeon's own address
        garbage = [b"\x00", b"\x00" + os.urandom(1077), b"\x01" + os.urandom(99), os.urandom(300), b"\xff" * 1300]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            for data in garbage:
                stranger.sendto(data, udp)
        for data in garbage:
            surgeon.sock.sendto(data, udp)

        # well-encrypted payloads (through the surgeon's connection) that are not valid messages
        for raw in (b"\xc1", msgpack.packb([1, 2, 3]), msgpack.packb({"v": 1, "t": "teleport", "to": [0, 0, 0]})):
            surgeon.channels.send(Channel.RELIABLE, raw)
        # valid messages that make no sense from a client, or carry bad arguments
        surgeon.channels.send(Channel.RELIABLE, Message("event", {"kind": "cut", "server_time": 0.0}))
        surgeon.channels.send(Channel.UNRELIABLE, Message("input", {"p": b"not an input packet"}))
        mentor.command("explode")
        mentor.command("pause", now=True)

        def all_answered() -> bool:
            return bool(
                _refused(surgeon, "message:event")
                and _refused(surgeon, "input")
                and _refused(mentor, "command:explode")
                and _refused(mentor, "command:pause")
            )

        assert pump(team, all_answered, 5.0), (surgeon.messages["refused"], mentor.messages["refused"])
        assert "not a message a client sends" in _refused(surgeon, "message:event")[0]["reason"]
        assert "malformed input packet" in _refused(surgeon, "input")[0]["reason"]
        assert "unknown command" in _refused(mentor, "command:explode")[0]["reason"]
        assert "unexpected arguments" in _refused(mentor, "command:pause")[0]["reason"]
        pump(team, lambda: False, 0.3)
        after = metrics(server)

        # the packet layer dropped every garbage datagram, with its reasons in /metrics
        assert metric(after, DROPS) - metric(before, DROPS) >= 2 * len(garbage)
        # the messages that decrypted but did not decode are dropped and counted, and visible in /metrics
        assert metric(after, DROPS, 'reason="message_invalid"') - metric(before, DROPS, 'reason="message_invalid"') >= 3
        # a refused command changed nothing: the room is still running
        assert not any(saw_event(h, "pause") for h in team)

        # everybody is still connected and served: the surgeon drives, the witness keeps receiving
        assert all(h.connected for h in team)
        assert pump(team, lambda: witness.snapshots_applied > applied + 40, 3.0), (applied, witness.snapshots_applied)
        right = surgeon.welcome["hands"]["right"]

        def witness_sees_instrument() -> bool:
            obj = witness.decoder.rigid().get(right)
            return obj is not None and abs(obj.positions[1] - 0.06) < 0.001

        assert pump(team, witness_sees_instrument, 5.0, lambda: surgeon.send_pose([0.0, 0.06, 0.0]))
        assert all(h.undecoded == 0 and h.snapshot_errors == 0 for h in team)
        assert len(surgeon.messages["welcome"]) == 1
