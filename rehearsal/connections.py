"""Connections: clients join and leave rooms through their ``Link``s, and what they send is handled here.

Any transport calls three entry points (``rehearsal.links``):

* ``open(link, identity)``: join the identity's room (checks: a known session that has not ended, not
  draining unless already in the room, ``Room.join``'s own refusals). A refusal is a reliable ``refused``
  (request ``connect``) on the link, which is closed ``KICK_DELAY`` later. On success: the state-sync join
  messages (``snap_config``, full ``snap_topology``), ``welcome``, a ``joined`` event to the room, and the
  room starts (lobby -> running) when its first surgeon or mentor joins. ``joined`` / ``left`` events are
  coalesced per participant in a reconnect storm (``rehearsal.presence``); logs name participants by id only.
* ``receive(key, message)``: ``input`` (thin-client input packets: each new pose of a hand device goes to
  ``Room.instrument_input``; the head's sets the gaze), ``command`` (``Room.command``; accepted ones are
  broadcast as an ``event``), ``snap_ack`` / ``snap_resync`` (snapshot baselines over UDP; over a WebSocket a snapshot
  is a baseline once written and the ack only dates the page's view for the room's health; a browser
  observer's resync leaves the room's shared observer stream, ``rehearsal.observer_stream``), ``ping`` (``pong``).
  Refusals are counted and answered with ``refused`` at most once per ``REFUSAL_INTERVAL`` per request kind.
  Every input and command is paid for from the connection's work budget (``rehearsal.budget``) before any
  of it is decoded or done; command arguments are bounded by ``rehearsal.wire.COMMAND_ARGS`` first.
* ``closed(key, reason)``: the client went away: it leaves its room (a ``left`` event).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from netcode.messaging.channels import Channel
from netcode.messaging.connection import Delivery
from netcode.messaging.messages import Message, MessageError
from netcode.protocol.inputs import ENERGY, TRACKED, InputPacketError, SampleBatch
from netcode.protocol.poses import RigidPose
from netcode.sync.snapshot_codec import budget_for_rate
from rehearsal.budget import OVERSPEND_SECONDS, ConnectionBudget, TokenBucket, room_budget
from rehearsal.fixtures import fixtures_message
from rehearsal.identity import Identity
from rehearsal.lifecycle import RoomState
from rehearsal.links import IN_ORDER, UDP, Link
from rehearsal.live_room import Client, LiveRoom, gaze_point
from rehearsal.presence import Presence
from rehearsal.roles import Action, Role, decide
from rehearsal.room import Refusal, RoomFullError
from rehearsal.sessions import KICK_DELAY, Sessions
from rehearsal.wire import COMMAND_ARGS, DEVICE_HEAD, HAND_OF_DEVICE, plain

log = logging.getLogger("rehearsal.connections")

SNAPSHOT_BITS_PER_SECOND = 1_500_000  # per client; the tissue surface needs more than avatars do
REFUSAL_INTERVAL = 0.5  # s: at most one `refused` per connection and request kind in this time
STARTS_ROOM = frozenset({Role.LEAD_SURGEON, Role.ASSISTANT_SURGEON, Role.MENTOR})


def _names_a_hand(packet: bytes) -> bool:
    """Whether an input packet's header lists a hand device (its device ids follow the 8-byte header)."""
    count = packet[1] if len(packet) > 1 else 0
    return any(device in HAND_OF_DEVICE for device in packet[8 : 8 + min(count, 16)])


MAX_ROSTER = 256  # participants listed in a joiner's roster event
MAX_HEAD_DISTANCE = 50.0  # m from the room's origin: a headset pose beyond is a tracking glitch, not shown


def shown_head(pose: RigidPose) -> RigidPose | None:
    """A headset pose fit for the room's snapshots (finite, near the room, a unit rotation), else None."""
    position = np.asarray(pose.position, np.float64)
    rotation = np.asarray(pose.rotation, np.float64)
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(rotation))):
        return None
    norm = float(np.linalg.norm(rotation))
    if norm < 0.5 or float(np.max(np.abs(position))) > MAX_HEAD_DISTANCE:
        return None
    return RigidPose(position, rotation / norm, math.nan)


class Connections:
    """The connected clients by link key, and the handling of what they send (see the module doc)."""

    def __init__(
        self,
        sessions: Sessions,
        reactor: Any,
        *,
        counters: Counter[str],
        clock: Callable[[], float],
        server_time: Callable[[], float],
    ) -> None:
        self.sessions = sessions
        self.reactor = reactor
        self.counters = counters
        self.clock = clock
        self.server_time = server_time
        self.clients: dict[int, Client] = {}
        self.budgets: dict[int, ConnectionBudget] = {}  # by link key: what each connection may still ask for
        self.room_budgets: dict[str, TokenBucket] = {}  # by session: the input samples of a whole room
        self.presence = Presence(
            reactor, clock, counters, is_live=lambda live: sessions.rooms.get(live.room.session) is live
        )
        sessions.on_room_closed = self.drop_room

    # --- the transport's entry points --------------------------------------------------------------------

    def open(self, link: Link, identity: Identity) -> None:
        """A client proved its identity: join its room, or refuse (then close the link a moment later)."""
        live = self.sessions.rooms.get(identity.session)
        if live is None or live.ending:
            self.refuse_link(link, "unknown or ended session")
            return
        room = live.room
        # before any work for it (join messages carry the whole topology)
        if not self.presence.may_open(identity.session, identity.participant):
            self.counters["budget_refused_reconnect_rate"] += 1
            self.refuse_link(link, "reconnecting too often: wait a few seconds")
            return
        if self.sessions.draining and identity.participant not in room.participants:
            self.refuse_link(link, "the server is draining")  # those already in may come back
            return
        try:
            participant = room.join(identity)
        except ValueError as exc:
            if isinstance(exc, RoomFullError):
                self.counters["budget_refused_room_full"] += 1
            self.refuse_link(link, str(exc))
            return
        client = Client(link, identity)
        self.clients[link.key] = client
        self.budgets[link.key] = ConnectionBudget()
        self.room_budgets.setdefault(identity.session, room_budget())
        live.add(client)
        self.counters["connects"] += 1
        hands = {hand: live.object_id(identity.participant, hand) for hand in participant.hands}
        objects = live.participant_objects(identity.participant)
        for message in [*live.sync.join_messages(), *live.burns.full_messages()]:  # + the burns so far
            link.send(Channel.RELIABLE, message)
        budget = budget_for_rate(SNAPSHOT_BITS_PER_SECOND, room.scenario.tick_hz)
        if identity.role is Role.OBSERVER and link.transport != UDP and self.sessions.settings.share_observer_stream:
            live.observers.budget_bytes = budget
            live.observers.add(link.key)  # one encode per tick for all of them (rehearsal.observer_stream)
        else:
            live.sync.add_client(link.key, budget_bytes=budget)
        welcome = {
            "session": identity.session,
            "scenario": room.scenario.name,
            "participant": identity.participant,
            "role": identity.role.value,
            "name": identity.name,
            "state": room.state.value,
            "hands": hands,
            "progress": plain(room.progress()),
            "annotations": list(room.annotations),
        }
        link.send(Channel.RELIABLE, Message("welcome", welcome))
        link.send(Channel.RELIABLE, self.roster(live, identity.participant))
        if room.fixtures.fixtures:  # the virtual fixtures and their state (rehearsal.fixtures)
            link.send(Channel.RELIABLE, fixtures_message(room.fixtures))
        self.presence.announce(
            live,
            identity.participant,
            "joined",
            {
                "participant": identity.participant,
                "role": identity.role.value,
                "name": identity.name,
                "objects": objects,
            },
        )
        if identity.role in STARTS_ROOM and room.state is RoomState.LOBBY and room.start() is None:
            live.broadcast_event("started", detail={"state": room.state.value})
        log.info(  # participant id, never the display name (names are personal data: shown, not logged)
            "session %s: participant %d joined as %s (%s link %d)",
            identity.session,
            identity.participant,
            identity.role.value,
            link.transport,
            link.key,
        )

    def roster(self, live: LiveRoom, joiner: int) -> Message:
        """The ``roster`` event for a joiner: who else is connected (with the snapshot objects that show them)
        and the scenario's complications."""
        others = [c for c in live.clients.values() if c.identity.participant != joiner][:MAX_ROSTER]
        detail = {
            "participants": [
                {
                    "participant": c.identity.participant,
                    "role": c.identity.role.value,
                    "name": c.identity.name,
                    "objects": live.participant_objects(c.identity.participant),
                }
                for c in others
            ],
            "complications": [{"id": c.id, "title": c.title, "kind": c.kind} for c in live.room.scenario.complications],
        }
        return Message("event", {"kind": "roster", "server_time": self.server_time(), "detail": detail})

    def receive(self, key: int, message: Delivery | Message | None) -> None:
        """A message from the client of a link (a ``Delivery`` of the channels, or the decoded ``Message``)."""
        if isinstance(message, Delivery):
            message = message.message
        client = self.clients.get(key)
        if client is None or message is None:
            return
        live = self.sessions.rooms.get(client.session)
        if live is None or live.ending:
            return
        kind = message.type
        if kind == "input":
            self.on_input(client, live, message.fields["p"])
        elif kind == "command":
            self.on_command(client, live, message.fields)
        elif kind == "snap_ack":
            newest = message.fields["newest"]
            if client.link.transport in IN_ORDER:  # its snapshots were baselines when written: the ack is for health
                if newest <= live.sync.sequence:  # a forged ack of a snapshot never sent names nothing
                    client.ack_base = newest if client.ack_base is None else max(client.ack_base, newest)
            else:
                live.sync.on_ack_fields(key, newest, client.fresh_acks(newest, message.fields["bits"]))
        elif kind == "thread_ack":  # the suture thread's baselines (rehearsal.publishing.publish_thread)
            if client.link.transport not in IN_ORDER:  # over an in-order link what was written is one already
                fields = message.fields
                self.sessions.publisher.on_thread_ack(live, key, fields["newest"], fields["bits"], fields.get("thread"))
        elif kind == "snap_resync":
            if key in live.observers:
                live.observers.expel(key)  # its own stream from full records; the others are not reset
                client.forget_acks()
            else:
                live.sync.reset_client(key)
            self.counters["resyncs"] += 1
        elif kind == "ping":
            client.link.send(Channel.UNRELIABLE, Message("pong", {"time": message.fields["time"]}))
        elif kind != "disconnect":
            self.counters["unexpected_messages"] += 1
            self.refuse(client, f"message:{kind}", f"{kind} is not a message a client sends")

    def closed(self, key: int, reason: str) -> None:
        """The client of a link went away: it leaves its room (its instruments are withdrawn)."""
        client = self.clients.pop(key, None)
        self.budgets.pop(key, None)
        if client is None:
            return
        self.counters["disconnects"] += 1
        live = self.sessions.rooms.get(client.session)
        if live is None:
            return
        live.discard(key)
        live.sync.remove_client(key)
        if key in live.observers:
            live.observers.discard(key)
        live.room.leave(client.identity.participant)
        who = client.identity.participant
        self.presence.announce(live, who, "left", {"participant": who, "reason": reason[:64]})
        if not any(p.connected for p in live.room.participants.values()):
            live.empty_since = self.clock()

    # --- refusing and disconnecting ----------------------------------------------------------------------

    def refuse_link(self, link: Link, reason: str) -> None:
        """Refuse a connection: a reliable ``refused`` (request ``connect``), the link closed a moment later."""
        self.counters["connects_refused"] += 1
        link.send(Channel.RELIABLE, Message("refused", {"request": "connect", "reason": reason}))
        self.reactor.callLater(KICK_DELAY, self._kick, link, None, reason)

    def _kick(self, link: Link, participant: int | None, reason: str) -> None:
        """Close a link if it still holds the same participant (None: if nobody joined on its key since)."""
        client = self.clients.get(link.key)
        if (participant is None and client is None) or (
            client is not None and client.link is link and client.identity.participant == participant
        ):
            link.close(reason)

    def connections_of(self, session: str, participant: int) -> list[Client]:
        """The connections a participant of a session holds (normally one)."""
        return [c for c in self.clients.values() if c.session == session and c.identity.participant == participant]

    def send_away(self, session: str, participant: int, reason: str) -> None:
        """A removed participant's connections are told why, then disconnected a moment later."""
        for client in self.connections_of(session, participant):
            self.refuse(client, "connect", reason)
            self.reactor.callLater(KICK_DELAY, self._kick, client.link, participant, reason)

    def drop_stale_connection(self, identity: Identity) -> None:
        """A participant asked to rejoin (/api/rejoin): a connection still open under their id is a dead
        headset the server has not timed out yet. Netcode refuses a second connection of a connected client
        id, so without this the new token would be ignored until that timeout (10 s): disconnect it now."""
        for client in self.connections_of(identity.session, identity.participant):
            self.counters["rejoin_replaced_connections"] += 1
            client.link.close("replaced by a rejoin")

    def drop_room(self, live: LiveRoom) -> None:
        """A closed room's clients are forgotten (no ``left`` events) and disconnected."""
        self.room_budgets.pop(live.room.session, None)
        self.presence.drop_session(live.room.session)
        for key, client in list(live.clients.items()):
            self.clients.pop(key, None)
            self.budgets.pop(key, None)
            live.discard(key)
            client.link.close("the session ended")

    def refuse(self, client: Client, request: str, reason: str, request_id: int | None = None) -> None:
        """Answer a refusal, at most once per REFUSAL_INTERVAL per request kind (the rest are counted)."""
        self.counters["refusals"] += 1
        if not client.may_answer(request, self.clock(), REFUSAL_INTERVAL):
            self.counters["refusals_not_answered"] += 1
            return
        fields: dict[str, Any] = {"request": request, "reason": reason[:256]}
        if request_id is not None:
            fields["id"] = request_id
        client.link.send(Channel.RELIABLE, Message("refused", fields))

    # --- input and commands ------------------------------------------------------------------------------

    def on_input(self, client: Client, live: LiveRoom, packet: bytes) -> None:
        """A thin-client input packet: each new hand pose to the room, the head's as the gaze.

        The work is paid for first (``rehearsal.budget``): the packet's bytes, then its new samples (read from
        the header) from the connection's and the room's buckets; a role that drives no instrument decodes only
        the newest sample's head pose, at most ``GAZE_UPDATES_PER_SECOND``. A refusal is counted by reason."""
        now = self.clock()
        budget = self.budgets.get(client.key)
        if budget is None:
            return
        if not budget.input_bytes.take(len(packet), now):
            self.over_budget(client, "input_bytes")
            return
        pid = client.identity.participant
        room = live.room
        participant = room.participants.get(pid)
        if participant is None or not participant.hands:  # drives nothing: the head pose for gaze, bounded
            if _names_a_hand(packet):  # read from the header: refused without decoding a pose
                self.counters["budget_refused_role"] += 1
                decision = decide(client.identity.role, Action.DRIVE_INSTRUMENT)
                self.refuse(client, "input", decision.reason or "no instrument in your hands")
            if not budget.gaze.take(1, now):
                self.over_budget(client, "gaze_rate", answer=False)
                return
            self.decode_gaze(client, live, packet)
            return
        fresh = client.inputs.new_samples(packet)
        if fresh and not budget.input_samples.take(fresh, now):
            self.over_budget(client, "input_samples")
            return
        room_bucket = self.room_budgets.get(client.session)
        if fresh and room_bucket is not None and not room_bucket.take(fresh, now):
            self.over_budget(client, "room_input_samples", own=False)
            return
        try:  # one numba pass checks every sample and converts the new ones (netcode.protocol.inputs.decode_batch)
            batch = client.inputs.receive_batch(packet, self.server_time())
        except InputPacketError as exc:
            self.counters["input_malformed"] += 1
            self.refuse(client, "input", f"malformed input packet: {exc}")
            return
        if not batch.times:
            return
        devices = batch.devices
        received_at = self.server_time()
        times, flags = batch.times, batch.flags
        if DEVICE_HEAD in devices:
            self.take_head(client, room.workspace, batch)
        slots = [(k, hand) for k, device in enumerate(devices) if (hand := HAND_OF_DEVICE.get(device)) is not None]
        if not slots:
            return
        positions, quats, jaws = batch.positions, batch.quats, batch.jaws
        for j, sample_time in enumerate(times):
            row = flags[j]
            for k, hand in slots:
                f = row[k]
                if not f & TRACKED:
                    continue  # untracked
                self.counters["input_poses"] += 1
                refusal = room.instrument_input(  # views of the packet's own arrays: never written after this
                    pid,
                    hand,
                    positions[j, k],
                    quats[j, k],  # (w, x, y, z), unit: what to_physics_quat(pose.rotation) gave
                    jaws[j][k],
                    bool(f & ENERGY),
                    sample_time,
                    received_at=received_at,
                )
                if refusal is not None:
                    self.counters["input_refused"] += 1
                    self.refuse(client, "input", refusal.reason)

    @staticmethod
    def take_head(client: Client, workspace: tuple[np.ndarray, np.ndarray], batch: SampleBatch) -> None:
        """The gaze and shown head of a packet's newest tracked head pose (the one that stood after every sample
        set them in turn; the older ones are not built)."""
        heads = [k for k, device in enumerate(batch.devices) if device == DEVICE_HEAD]
        heads.reverse()
        for j in range(len(batch.times) - 1, -1, -1):
            row = batch.flags[j]
            for k in heads:
                if row[k] & TRACKED:
                    head = batch.pose(j, k)
                    assert head is not None
                    client.gaze = gaze_point(head, workspace)
                    client.head = shown_head(head)
                    return

    def decode_gaze(self, client: Client, live: LiveRoom, packet: bytes) -> None:
        """The newest head pose of a packet from someone who drives nothing (their hands are not decoded)."""
        try:
            samples = client.inputs.receive(packet, self.server_time(), newest_only=True)
        except InputPacketError as exc:
            self.counters["input_malformed"] += 1
            self.refuse(client, "input", f"malformed input packet: {exc}")
            return
        devices = client.inputs.devices or ()
        if samples and DEVICE_HEAD in devices:
            head = samples[-1].poses[devices.index(DEVICE_HEAD)]
            if head is not None:
                client.gaze = gaze_point(head, live.room.workspace)

    def over_budget(self, client: Client, reason: str, *, answer: bool = True, own: bool = True) -> None:
        """Work refused unprocessed because a budget is spent: counted by reason (``budget_refused_<reason>``).
        Answered (``answer``) requests of the connection's own budget (``own``; not the room's, which others
        spend too) are ones a headset should never need: a connection that keeps making them for
        ``OVERSPEND_SECONDS`` is disconnected (``budget_refused_disconnected``)."""
        self.counters[f"budget_refused_{reason}"] += 1
        if not answer:
            return  # expected throttling (an observer's head poses beyond the gaze rate)
        self.refuse(client, "input" if reason != "commands" else "command", f"too much {reason.replace('_', ' ')}")
        budget = self.budgets.get(client.key)
        if own and budget is not None and budget.overspent(self.clock()) >= OVERSPEND_SECONDS:
            self.counters["budget_refused_disconnected"] += 1
            self.budgets.pop(client.key, None)  # refused unprocessed until the close takes effect
            log.warning(
                "session %s: participant %d disconnected: over its work budget (%s)",
                client.session,
                client.identity.participant,
                reason,
            )
            client.link.close("over its work budget")

    def on_command(self, client: Client, live: LiveRoom, fields: dict[str, Any]) -> None:
        """A command: refused (with the command's id), or done and broadcast as an ``event``."""
        action, args, request_id = fields["action"], fields.get("args") or {}, fields.get("id")
        pid = client.identity.participant
        request = f"command:{action}"[:64]
        budget = self.budgets.get(client.key)
        if budget is None:
            return  # being disconnected
        if not budget.commands.take(1, self.clock()):
            self.over_budget(client, "commands")
            return
        try:  # every argument bounded before the command runs (its event then always fits the encoder)
            args = COMMAND_ARGS.validate(action, args) if action in COMMAND_ARGS else {}  # else: the room refuses
        except MessageError as exc:
            self.counters["commands_bad_arguments"] += 1
            self.counters["budget_refused_command_arguments"] += 1
            self.refuse(client, request, f"{action}: unexpected arguments ({exc})", request_id)
            return
        try:
            refusal = live.room.command(pid, action, **args)
        except TypeError:
            self.counters["commands_bad_arguments"] += 1
            refusal = Refusal(f"{action}: unexpected arguments {sorted(args)}")
        except Exception as exc:  # a handler bug must not reach the network layer
            self.counters["commands_failed"] += 1
            log.error("command %r failed: %s", action, type(exc).__name__)
            refusal = Refusal(f"{action} failed on the server")
        if refusal is not None:
            self.counters["commands_refused"] += 1
            self.refuse(client, request, refusal.reason, request_id)
            return
        self.counters["commands_accepted"] += 1
        self.sessions.journal_command(live.room.session, pid, action, args)  # on disk before its event (the ack)
        self.command_done(live, pid, Action(action), args)

    def command_done(self, live: LiveRoom, pid: int, action: Action, args: dict[str, Any]) -> None:
        """An accepted command: everyone hears of it; removals send people away, ``end_room`` ends it."""
        room = live.room
        detail = {**plain(args), "state": room.state.value}
        if action in (Action.TAKE_OVER_INSTRUMENT, Action.HOLD_RETRACTOR) and not args.get("release"):
            hand = str(args.get("hand", "right" if action is Action.TAKE_OVER_INSTRUMENT else "left"))
            detail["object"] = live.object_id(pid, hand)
        elif action is Action.HAND_INSTRUMENT:
            to, hand = args.get("to"), str(args.get("hand", "right"))
            if isinstance(to, int):
                detail["object"] = live.object_id(to, hand)
        live.broadcast_event(action.value, by=pid, detail=detail)
        if action is Action.TOGGLE_FIXTURE:
            live.broadcast(Channel.RELIABLE, fixtures_message(room.fixtures))
        if action is Action.REMOVE_PARTICIPANT:
            self.send_away(room.session, args.get("who"), "removed from the session by the mentor")
        if action is Action.END_ROOM:
            self.sessions.end_room(room.session)
