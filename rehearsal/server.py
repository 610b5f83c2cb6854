"""The rehearsal server: the composition root that wires the join API, the netcode server and the rooms.

One process, one twisted reactor:

* **HTTP** (twisted.web, ``settings.http_host:http_port``): the join API of ``rehearsal.http_api``. An
  admin (bearer credential) creates a session from a packaged scenario: a ``Room`` with its own
  ``RoomTicker`` (a worker thread that steps the physics) and ``SnapshotServer`` (state sync); the admin
  gets invite codes per role, which participants trade for netcode connect tokens.
* **UDP** (``settings.udp_host:udp_port``): the netcode 1.02 server with ``ServerChannels`` (reliable
  and unreliable messages of ``rehearsal.wire.REHEARSAL_REGISTRY``).

A connection is a participant: its identity (session, participant id, role, name) comes from the
token's user data, which only our join service can mint. On connect it joins its room and gets the
state-sync join messages (``snap_config``, full ``snap_topology``) and a ``welcome``; the room starts
(lobby -> running) when its first surgeon or mentor joins. Then:

* ``input`` (thin-client input packets): each new pose sample of a hand device goes to
  ``Room.instrument_input`` (validated there by role, finiteness, workspace and speed); refusals are
  counted and answered with ``refused`` at most once per ``REFUSAL_INTERVAL`` per connection and request.
* ``command``: ``Room.command``; a refusal is answered with ``refused``; an accepted command is
  broadcast to the room as a reliable ``event``.
* ``snap_ack`` / ``snap_resync``: the client's snapshot baselines; ``ping``: answered with ``pong``.

Every room tick (``RoomTicker.on_report``, on the reactor thread, after the worker thread finished the
step) publishes the room: topology changes (a cut or burn) become a new snapshot epoch sent reliably,
physics events (grasp, release, tear, cut, burn) become reliable ``event`` messages (and the holder of a
new grasp gets its response model, ``grasp``, measured on the room's thread, then ``release``), then the surface
(layout order) and the instruments (rigid objects) are quantized once and each client of the room gets
its own ``snapshot`` (deltas against what it acknowledged, under a byte budget) and an ``input_ack`` on
the unreliable channel.

Rooms end when a mentor ends them or after ``settings.empty_room_seconds`` without anybody connected;
their clients are told (``event`` ``ended``) and disconnected.

Ops is wired in here and only here (``start``): ``/metrics`` reads ``ops_status()`` at scrape time,
``/readyz`` reads ``ready()``, and the admin API (``ops.admin_api``, under ``/admin``) gets the
``admin_*`` methods as plain callables and the same ``ops.auth.AdminGate`` as ``/api/sessions``. On
SIGTERM ``serve`` drains (``start_drain``, ``ops.drain``) before it stops.

Secrets (the token key, the admin credential) live in ``settings.data_dir`` (0700) or the environment;
they are never logged: ``serve`` logs where they are.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numba
import numpy as np
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.web.server import Site

from netcode.messaging.channels import Channel
from netcode.messaging.connection import ConnectionConfig, Delivery
from netcode.messaging.messages import Message
from netcode.messaging.peers import ServerChannels
from netcode.protocol.inputs import InputPacketError, InputReceiver
from netcode.protocol.poses import RigidPose, rotate
from netcode.protocol.response_model import ResponseModel
from netcode.protocol.schema import input_ack_fields, response_model_fields
from netcode.sync.patches import PatchLayout, make_patches
from netcode.sync.snapshot import RigidKind, RigidSet
from netcode.sync.snapshot_codec import SnapshotServer, budget_for_rate
from netcode.sync.snapshot_messages import snapshot_message
from netcode.transport.address import Address
from netcode.transport.server import ServerConfig
from netcode.transport.udp import free_udp_port, listen_server
from ops.admin_api import AdminActions, admin_root
from ops.auth import AdminGate
from ops.drain import Drain
from ops.http import Heartbeat, ops_root
from ops.metrics import OpsMetrics, by_prefix, quantile
from physics import StepReport
from physics.instruments import Kind, look_rotation
from rehearsal.http_api import api_root
from rehearsal.identity import Identity, IdentityError
from rehearsal.join_service import JoinService
from rehearsal.lifecycle import RoomState
from rehearsal.recording import Recorder
from rehearsal.results_store import RESULTS_FILE, ResultsStore
from rehearsal.roles import Action, Role
from rehearsal.room import HANDS, Room
from rehearsal.scenario import load_scenario, packaged_scenarios
from rehearsal.secrets_store import ADMIN_CREDENTIAL, TOKEN_KEY, server_secret
from rehearsal.settings import Settings
from rehearsal.ticking import RoomThread, RoomTicker
from rehearsal.wire import (
    DEVICE_HEAD,
    DEVICE_OF_HAND,
    HAND_OF_DEVICE,
    REHEARSAL_REGISTRY,
    plain,
    to_physics_quat,
    to_wire_quat,
)

log = logging.getLogger("rehearsal.server")


SNAPSHOT_BITS_PER_SECOND = 1_500_000  # per client; the tissue surface needs more than avatars do
REFUSAL_INTERVAL = 0.5  # s: at most one `refused` per connection and request kind in this time
KICK_DELAY = 0.5  # s: time for a last reliable message (refusal, `ended`) before disconnecting
MAX_ROOMS = 64
GAZE_DISTANCE = 0.45  # m: a standing surgeon's eyes to the operating field
CONNECTION_SAMPLE_SECONDS = 1.0  # RTT and loss sampling for the metrics
# Acks wait this long for a packet with entries (every client gets a snapshot each tick) before going out alone:
# without it the 100 Hz channel update sends most clients an extra ack-only packet between two snapshots.
ACK_DELAY = 0.025
# How long a thread that wants the GIL waits before the holder is asked to let go (Python's default: 5 ms). A
# room's step takes the GIL back after each numba kernel (a dozen times a step); with the reactor busy in
# Python, each of those waits could last the whole interval, and a 1 ms step took tens of milliseconds.
GIL_SWITCH_SECONDS = 0.0005
# Room threads run at a lower CPU priority than the reactor: with several rooms stepping on two cores the reactor
# (which publishes every room) otherwise waits for a core behind its own physics threads.
ROOM_THREAD_NICE = 5
# Instrument object ids start here so they never equal a tissue patch's id (its index in the layout):
# clients such as the thin client keep every snapshot object in one map by id.
INSTRUMENT_OBJECT_BASE = 32768
ACK_WINDOW = 128  # snapshots behind the newest acked one whose acks the server remembers (a few RTTs' worth)
_ACK_MASK = (1 << ACK_WINDOW) - 1
PHYSICS_EVENTS = frozenset({"grasp", "release", "tear", "cut", "burn"})
STARTS_ROOM = frozenset({Role.LEAD_SURGEON, Role.ASSISTANT_SURGEON, Role.MENTOR})


@dataclass
class _Client:
    """One netcode connection that joined a room."""

    index: int
    identity: Identity
    session: str
    inputs: InputReceiver = field(default_factory=InputReceiver)
    last_refused: dict[str, float] = field(default_factory=dict)
    gaze: np.ndarray | None = None  # where the headset looks (GAZE_DISTANCE ahead of the head), for priority
    ack_base: int | None = None  # newest snapshot sequence an ack of this client named
    ack_passed: int = 0  # bit k: snapshot ack_base - k was already handed to the codec (ACK_WINDOW bits)

    def fresh_acks(self, newest: int, bits: int) -> int:
        """The ``bits`` of a ``snap_ack`` that acknowledge a snapshot for the first time (every ack repeats the
        previous 32, which the codec would look up again one by one); remembers them as handed over."""
        incoming = (1 | (bits << 1)) & _ACK_MASK  # bit k: snapshot newest - k
        base = self.ack_base
        if base is None:
            passed = 0
        elif newest >= base:
            passed = (self.ack_passed << min(newest - base, ACK_WINDOW)) & _ACK_MASK
        else:
            passed = self.ack_passed >> min(base - newest, ACK_WINDOW)
        fresh = incoming & ~passed
        if base is None or newest >= base:
            self.ack_base, self.ack_passed = newest, passed | incoming
        else:
            self.ack_passed |= (incoming << min(base - newest, ACK_WINDOW)) & _ACK_MASK
        return (fresh >> 1) & 0xFFFFFFFF


@dataclass
class _LiveRoom:
    """A room and what drives and publishes it."""

    room: Room
    ticker: RoomTicker
    pool: RoomThread
    sync: SnapshotServer
    clients: set[int] = field(default_factory=set)  # connection indices
    object_ids: dict[tuple[int, str], int] = field(default_factory=dict)  # (participant, hand) -> rigid id
    empty_since: float | None = None
    ending: bool = False
    created_at: float = field(default_factory=time.time)
    grasp_ids: dict[int, int] = field(default_factory=dict)  # physics instrument id -> grasp id sent to its holder
    next_grasp_id: int = 1


def gaze_point(head: RigidPose, workspace: tuple[np.ndarray, np.ndarray]) -> np.ndarray | None:
    """The point GAZE_DISTANCE along the head's forward axis (+z, Unity's), kept inside the room's
    workspace; None for a head outside it (a tracking glitch is not a place to look at)."""
    lo, hi = workspace
    if np.any(head.position < lo) or np.any(head.position > hi):
        return None
    return np.clip(head.position + GAZE_DISTANCE * rotate(head.rotation, np.array([0.0, 0.0, 1.0])), lo, hi)


def surface_layout(room: Room) -> PatchLayout:
    """The room's current surface vertices split into patches (layout order = what snapshots carry)."""
    ids = np.unique(room.model.surface).astype(np.int64)
    return make_patches(ids, room.physics.x[ids])


class RehearsalServer:
    """The join API, the netcode server and the rooms in one reactor (see the module doc)."""

    def __init__(self, settings: Settings, reactor: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.reactor = reactor
        self.clock = clock
        data_dir = Path(settings.data_dir)
        self.data_dir = data_dir
        self._token_key = server_secret(data_dir, TOKEN_KEY)
        credential = server_secret(data_dir, ADMIN_CREDENTIAL).hex()
        self.gate = AdminGate(credential)
        self.rooms: dict[str, _LiveRoom] = {}
        self.results = ResultsStore(data_dir / RESULTS_FILE)
        self.clients: dict[int, _Client] = {}
        self.counters: Counter[str] = Counter()
        self.departed_message_drops: Counter[str] = Counter()  # message-layer drops of closed connections
        self.channels = ServerChannels(
            ConnectionConfig(ack_delay=ACK_DELAY),
            registry=REHEARSAL_REGISTRY,
            on_message=self._on_message,
            on_dropped=self._dropped,
        )
        self.join_service: JoinService | None = None
        self.protocol = None
        self._udp_port = None
        self._http_port = None
        self.udp_address: Address | None = None
        self.http_port: int | None = None
        # ops is wired here, in the composition root only: it reads status() at scrape time.
        self.metrics = OpsMetrics(status=self.ops_status)
        self.heartbeat: Heartbeat | None = None
        self._sampler: LoopingCall | None = None
        self.packet_loss = 0.0  # mean estimated loss over connections, refreshed by _sample_connections
        self.draining = False
        self.drain: Drain | None = None

    def __repr__(self) -> str:  # never show secrets
        return f"RehearsalServer(udp={self.udp_address}, http_port={self.http_port}, rooms={len(self.rooms)})"

    @property
    def credential_path(self) -> Path:
        return self.data_dir / ADMIN_CREDENTIAL.name

    # ------------------------------------------------------------------ life

    def start(self, warm_up: bool = True) -> None:
        """Compile the numba kernels (so the first room does not stall the reactor), then listen."""
        if warm_up:
            _warm_up(self.settings.default_scenario)
        settings = self.settings
        if settings.udp_port == 0:  # the token must name the real port: pick a free one first
            settings = replace(settings, udp_port=free_udp_port(settings.udp_host))
            self.settings = settings
        public = Address.parse(settings.public_address)
        self.join_service = JoinService(
            self._token_key,
            settings.protocol_id,
            [public],
            session_exists=self._session_open,
            on_rejoin=self._drop_stale_connection,
        )
        config = ServerConfig(settings.protocol_id, self._token_key, [public], max_clients=settings.max_clients)
        self.protocol, self._udp_port = listen_server(
            self.reactor,
            config,
            settings.udp_port,
            settings.udp_host,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_payload=self.channels.on_payload,
        )
        self.channels.clock = self.protocol.now
        self.channels.attach(self.protocol.core)
        self.protocol.tick_hooks.append(self.channels.update)
        self.udp_address = Address.from_host_port(settings.udp_host, self._udp_port.getHost().port)
        self.heartbeat = Heartbeat(self.reactor).start()
        self._sampler = LoopingCall(self._sample_connections)
        self._sampler.clock = self.reactor
        self._sampler.start(CONNECTION_SAMPLE_SECONDS, now=False)
        root = api_root(self.join_service, self.gate, self.create_session, closed=self._closed)
        admin_root(self.gate, self.admin_actions(), root=root)  # the same gate: one failure budget
        site = Site(ops_root(self.metrics, self.heartbeat, self.ready, root=root))
        site.noisy = False
        self._http_port = self.reactor.listenTCP(settings.http_port, site, interface=settings.http_host)
        self.http_port = self._http_port.getHost().port

    def stop(self) -> defer.Deferred:
        """Disconnect everybody, stop every room's ticker and thread, close the ports."""
        self.draining = True
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self._sampler is not None and self._sampler.running:
            self._sampler.stop()
        if self.protocol is not None:
            self.protocol.disconnect_all()
        for session, live in list(self.rooms.items()):
            if live.room.state is not RoomState.ENDED:
                live.room.end()
            self._close_room(session)
        waits = []
        for port in (self._udp_port, self._http_port):
            if port is not None:
                waits.append(defer.maybeDeferred(port.stopListening))
        self._udp_port = self._http_port = None
        return defer.DeferredList(waits)

    # ------------------------------------------------------------------ sessions

    def _session_open(self, session: str) -> bool:
        live = self.rooms.get(session)
        return live is not None and live.room.state is not RoomState.ENDED

    def create_session(self, scenario_name: str) -> str:
        """A new room from a packaged scenario, ticking at once; returns its session id."""
        known = packaged_scenarios()
        if scenario_name not in known:
            raise ValueError(f"unknown scenario {scenario_name!r} (available: {', '.join(sorted(known))})")
        if len(self.rooms) >= MAX_ROOMS:
            raise ValueError(f"this server already runs {MAX_ROOMS} rooms")
        if self.draining:
            raise ValueError("this server is draining: create the session on another one")
        session = "s-" + secrets.token_urlsafe(9)
        scenario = load_scenario(scenario_name)
        room = Room(session, scenario)
        if self.settings.record:
            room.recorder = Recorder(self.data_dir / "recordings" / f"{session}.rec", session, scenario)
        layout = surface_layout(room)
        sync = SnapshotServer(layout, triangles=room.model.surface)
        pool = RoomThread(self.reactor, f"room-{session}", nice=ROOM_THREAD_NICE)
        pool.start()
        ticker = RoomTicker(
            self.reactor,
            room,
            on_report=self._on_report,
            pool=pool,
            physics_threads=self.settings.physics_threads,
            observe_tick=self.metrics.histograms.tick.observe,
        )
        self.rooms[session] = _LiveRoom(room, ticker, pool, sync, empty_since=self.clock())
        ticker.start().addErrback(self._ticker_failed, session)
        self.counters["rooms_created"] += 1
        log.info("session %s created (scenario %s)", session, scenario_name)
        return session

    def _ticker_failed(self, failure: Any, session: str) -> None:
        self.counters["ticker_failed"] += 1
        log.error("room %s: tick loop failed: %s", session, failure.type.__name__)

    def _close_room(self, session: str) -> None:
        live = self.rooms.pop(session, None)
        if live is None:
            return
        live.ticker.stop()
        live.pool.stop()  # waits for a step in flight (milliseconds)
        self._save_result(live)
        for index in list(live.clients):
            self.clients.pop(index, None)
            if self.protocol is not None:
                self.protocol.core.disconnect(index, self.protocol.now())

    def _save_result(self, live: _LiveRoom) -> None:
        """Close the room's recording and keep its result; a failing disk is logged, never raised."""
        room = live.room
        try:
            if room.recorder is not None:
                room.recorder.close(room.state.value)
            self.results.save(room.result(live.created_at, time.time()))
            self.counters["results_saved"] += 1
        except (OSError, sqlite3.Error) as exc:
            self.counters["results_failed"] += 1
            log.error("session %s: could not keep its result: %s", room.session, exc)

    def _end_room(self, session: str) -> None:
        """Tell the room it ended, then disconnect its clients and free it a moment later."""
        live = self.rooms.get(session)
        if live is None or live.ending:
            return
        live.ending = True
        if live.room.state is not RoomState.ENDED:
            live.room.end()
        live.ticker.stop()
        self._broadcast_event(live, "ended", detail={"state": live.room.state.value})
        self.counters["rooms_ended"] += 1
        log.info("session %s ended", session)
        self.reactor.callLater(KICK_DELAY, self._close_room, session)

    # ------------------------------------------------------------------ connections

    def _on_connect(self, index: int, client_id: int, user_data: bytes, address: object) -> None:
        self.channels.on_connect(index, client_id, user_data, address)
        try:
            identity = Identity.from_user_data(user_data)
        except IdentityError as exc:
            self._refuse_connection(index, str(exc))
            return
        live = self.rooms.get(identity.session)
        if live is None or live.ending or identity.participant != client_id:
            self._refuse_connection(index, "unknown or ended session")
            return
        if self.draining and identity.participant not in live.room.participants:
            self._refuse_connection(index, "the server is draining")  # those already in may come back
            return
        room = live.room
        try:
            participant = room.join(identity)
        except ValueError as exc:
            self._refuse_connection(index, str(exc))
            return
        client = _Client(index, identity, identity.session)
        self.clients[index] = client
        live.clients.add(index)
        live.empty_since = None
        self.counters["connects"] += 1
        for hand in participant.hands:
            self._object_id(live, identity.participant, hand)
        for message in live.sync.join_messages():
            self.channels.send(index, Channel.RELIABLE, message)
        live.sync.add_client(index, budget_bytes=budget_for_rate(SNAPSHOT_BITS_PER_SECOND, room.scenario.tick_hz))
        hands = {hand: live.object_ids[(identity.participant, hand)] for hand in participant.hands}
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
        self.channels.send(index, Channel.RELIABLE, Message("welcome", welcome))
        self._broadcast_event(
            live,
            "joined",
            by=identity.participant,
            detail={"participant": identity.participant, "role": identity.role.value, "name": identity.name},
        )
        if identity.role in STARTS_ROOM and room.state is RoomState.LOBBY and room.start() is None:
            self._broadcast_event(live, "started", detail={"state": room.state.value})
        log.info("session %s: %s joined as %s (slot %d)", identity.session, identity.name, identity.role.value, index)

    def _refuse_connection(self, index: int, reason: str) -> None:
        self.counters["connects_refused"] += 1
        self.channels.send(index, Channel.RELIABLE, Message("refused", {"request": "connect", "reason": reason}))
        self.reactor.callLater(KICK_DELAY, self._kick, index, None)

    def _kick(self, index: int, participant: int | None) -> None:
        """Disconnect a slot if it still holds the same participant (None: whoever is unjoined there)."""
        if self.protocol is None:
            return
        client = self.clients.get(index)
        if (participant is None and client is None) or (
            client is not None and client.identity.participant == participant
        ):
            self.protocol.core.disconnect(index, self.protocol.now())

    def _drop_stale_connection(self, identity: Identity) -> None:
        """A participant asked to rejoin (/api/rejoin): a connection still open under their id is a dead
        headset the server has not timed out yet. Netcode refuses a second connection of a connected client
        id, so without this the new token would be ignored until that timeout (10 s): disconnect it now."""
        for client in self._connections_of(identity.session, identity.participant):
            self.counters["rejoin_replaced_connections"] += 1
            if self.protocol is not None:
                self.protocol.core.disconnect(client.index, self.protocol.now())

    def _connections_of(self, session: str, participant: int) -> list[_Client]:
        """The connections a participant of a session holds (normally one)."""
        return [c for c in self.clients.values() if c.session == session and c.identity.participant == participant]

    def _send_away(self, session: str, participant: int, reason: str) -> None:
        """A removed participant's connections are told why, then disconnected a moment later."""
        for client in self._connections_of(session, participant):
            self._refuse(client, "connect", reason)
            self.reactor.callLater(KICK_DELAY, self._kick, client.index, participant)

    def _on_disconnect(self, index: int, reason: str) -> None:
        stats = self.channels.stats(index)
        if stats is not None:  # keep its message-layer drop counts (the connection goes now)
            self.departed_message_drops.update(stats.drops)
        self.channels.on_disconnect(index, reason)
        client = self.clients.pop(index, None)
        if client is None:
            return
        self.counters["disconnects"] += 1
        live = self.rooms.get(client.session)
        if live is None:
            return
        live.clients.discard(index)
        live.sync.remove_client(index)
        live.room.leave(client.identity.participant)
        who = client.identity
        self._broadcast_event(
            live, "left", by=who.participant, detail={"participant": who.participant, "reason": reason}
        )
        if not any(p.connected for p in live.room.participants.values()):
            live.empty_since = self.clock()

    def _dropped(self, index: int, reason: str) -> None:
        self.counters[f"dropped_{reason}"] += 1

    # ------------------------------------------------------------------ messages

    def _on_message(self, index: int, delivery: Delivery) -> None:
        client = self.clients.get(index)
        message = delivery.message
        if client is None or message is None:
            return
        live = self.rooms.get(client.session)
        if live is None or live.ending:
            return
        kind = message.type
        if kind == "input":
            self._on_input(client, live, message.fields["p"])
        elif kind == "command":
            self._on_command(client, live, message.fields)
        elif kind == "snap_ack":
            newest = message.fields["newest"]
            live.sync.on_ack_fields(index, newest, client.fresh_acks(newest, message.fields["bits"]))
        elif kind == "snap_resync":
            live.sync.reset_client(index)
            self.counters["resyncs"] += 1
        elif kind == "ping":
            self.channels.send(index, Channel.UNRELIABLE, Message("pong", {"time": message.fields["time"]}))
        elif kind != "disconnect":
            self.counters["unexpected_messages"] += 1
            self._refuse(client, f"message:{kind}", f"{kind} is not a message a client sends")

    def _refuse(self, client: _Client, request: str, reason: str, request_id: int | None = None) -> None:
        """Answer a refusal, at most once per REFUSAL_INTERVAL per request kind (the rest are counted)."""
        self.counters["refusals"] += 1
        now = self.clock()
        if now - client.last_refused.get(request, -math.inf) < REFUSAL_INTERVAL:
            self.counters["refusals_not_answered"] += 1
            return
        client.last_refused[request] = now
        if len(client.last_refused) > 64:
            client.last_refused = {request: now}
        fields: dict[str, Any] = {"request": request, "reason": reason[:256]}
        if request_id is not None:
            fields["id"] = request_id
        self.channels.send(client.index, Channel.RELIABLE, Message("refused", fields))

    def _on_input(self, client: _Client, live: _LiveRoom, packet: bytes) -> None:
        try:
            samples = client.inputs.receive(packet, self.protocol.now())
        except InputPacketError as exc:
            self.counters["input_malformed"] += 1
            self._refuse(client, "input", f"malformed input packet: {exc}")
            return
        devices = client.inputs.devices or ()
        pid = client.identity.participant
        for sample in samples:
            for device, pose in zip(devices, sample.poses, strict=True):
                hand = HAND_OF_DEVICE.get(device)
                if pose is not None and device == DEVICE_HEAD:
                    client.gaze = gaze_point(pose, live.room.workspace)
                if pose is None or hand is None:
                    continue  # untracked, or the head (not an instrument)
                self.counters["input_poses"] += 1
                refusal = live.room.instrument_input(
                    pid,
                    hand,
                    pose.position,
                    to_physics_quat(pose.rotation),
                    pose.jaw,
                    pose.energy,
                    sample.client_time,
                )
                if refusal is not None:
                    self.counters["input_refused"] += 1
                    self._refuse(client, "input", refusal.reason)

    def _on_command(self, client: _Client, live: _LiveRoom, fields: dict[str, Any]) -> None:
        action, args, request_id = fields["action"], fields.get("args") or {}, fields.get("id")
        pid = client.identity.participant
        room = live.room
        request = f"command:{action}"[:64]
        try:
            refusal = room.command(pid, action, **args)
        except TypeError:
            self.counters["commands_bad_arguments"] += 1
            refusal = _Refused(f"{action}: unexpected arguments {sorted(args)}")
        except Exception as exc:  # a handler bug must not reach the network layer
            self.counters["commands_failed"] += 1
            log.error("command %r failed: %s", action, type(exc).__name__)
            refusal = _Refused(f"{action} failed on the server")
        if refusal is not None:
            self.counters["commands_refused"] += 1
            self._refuse(client, request, refusal.reason, request_id)
            return
        self.counters["commands_accepted"] += 1
        self._command_done(live, pid, Action(action), args)

    def _command_done(self, live: _LiveRoom, pid: int, action: Action, args: dict[str, Any]) -> None:
        room = live.room
        detail = {**plain(args), "state": room.state.value}
        if action in (Action.TAKE_OVER_INSTRUMENT, Action.HOLD_RETRACTOR) and not args.get("release"):
            hand = str(args.get("hand", "right" if action is Action.TAKE_OVER_INSTRUMENT else "left"))
            detail["object"] = self._object_id(live, pid, hand)
        elif action is Action.HAND_INSTRUMENT:
            to, hand = args.get("to"), str(args.get("hand", "right"))
            if isinstance(to, int):
                detail["object"] = self._object_id(live, to, hand)
        self._broadcast_event(live, action.value, by=pid, detail=detail)
        if action is Action.REMOVE_PARTICIPANT:
            self._send_away(room.session, args.get("who"), "removed from the session by the mentor")
        if action is Action.END_ROOM:
            self._end_room(room.session)

    # ------------------------------------------------------------------ publishing

    def _object_id(self, live: _LiveRoom, participant: int, hand: str) -> int:
        """The snapshot object id of a participant's instrument (stable for the room's life)."""
        key = (participant, hand)
        oid = live.object_ids.get(key)
        if oid is None:
            oid = INSTRUMENT_OBJECT_BASE + len(live.object_ids)  # 32,768 instruments before RigidSet refuses
            live.object_ids[key] = oid
        return oid

    def _instrument_object(self, live: _LiveRoom, instrument: int | None) -> int | None:
        if instrument is None:
            return None
        return self._object_id(live, instrument // len(HANDS), HANDS[instrument % len(HANDS)])

    def _broadcast_event(
        self,
        live: _LiveRoom,
        kind: str,
        *,
        by: int | None = None,
        instrument: int | None = None,
        detail: dict | None = None,
    ) -> None:
        fields: dict[str, Any] = {"kind": kind, "server_time": self.protocol.now()}
        if by is not None:
            fields["by"] = by
        if instrument is not None:
            fields["instrument"] = instrument
        if detail:
            fields["detail"] = plain(detail)
        message = Message("event", fields)
        for index in list(live.clients):
            self.channels.send(index, Channel.RELIABLE, message)
        self.counters["events"] += 1

    def _broadcast(self, live: _LiveRoom, channel: Channel, message: bytes | Message) -> None:
        for index in list(live.clients):
            self.channels.send(index, channel, message)

    def _republish_world(self, live: _LiveRoom) -> None:
        """The room's world was replaced (reset): a new epoch with the full triangle list."""
        surface = live.room.model.surface
        message = live.sync.change_topology(
            surface_layout(live.room), cause="full", added_triangles=surface, triangles=surface
        )
        self._broadcast(live, Channel.RELIABLE, message)

    def _on_report(self, room: Room, report: StepReport | None) -> None:
        live = self.rooms.get(room.session)
        if live is None or live.ending:
            return
        if report is not None:
            self.metrics.histograms.physics_step.observe(live.ticker.stats.last_step_seconds)
        try:
            self._publish_room_events(live)
            self._publish(live, report)
        except Exception as exc:  # a publishing bug must not stop the room's tick loop
            self.counters["publish_failed"] += 1
            log.error("room %s: publishing failed: %s: %s", room.session, type(exc).__name__, exc)
        if (
            live.empty_since is not None
            and self.clock() - live.empty_since > self.settings.empty_room_seconds
            and not live.ending
        ):
            self._end_room(room.session)

    def _publish_room_events(self, live: _LiveRoom) -> None:
        """Steps completed or violated, complications started, resets: reliable events to everyone."""
        for event in live.room.take_events():
            if event.kind == "grasp_response":
                self._send_grasp_model(live, event.instrument, event.detail)
                continue
            if event.kind == "world_reset":
                live.grasp_ids.clear()  # the new epoch ends every grasp on the clients too
                self._republish_world(live)
            obj = self._instrument_object(live, event.instrument)
            by = event.by if event.by is not None or event.instrument is None else event.instrument // len(HANDS)
            self._broadcast_event(live, event.kind, by=by, instrument=obj, detail=event.detail)
            self.counters[f"room_{event.kind}"] += 1

    def _holder_clients(self, live: _LiveRoom, instrument: int) -> list[int]:
        return [c.index for c in self._connections_of(live.room.session, instrument // len(HANDS))]

    def _send_grasp_model(self, live: _LiveRoom, instrument: int, detail: dict) -> None:
        """The new grasp's response model becomes a motion predictor of the room's snapshots (reliable
        ``snap_predictor`` to everyone), and the holder's headset gets its strongest part (reliable
        ``grasp``) to predict the held tissue with."""
        response = detail["response"]
        self._broadcast(live, Channel.RELIABLE, live.sync.add_predictor(response.vertex_ids, response.matrices))
        objects, vertices, matrices = response.strongest().on_layout(live.sync.layout)
        if objects.size == 0:
            return
        grasp_id = live.grasp_ids[instrument] = live.next_grasp_id
        live.next_grasp_id += 1
        base = detail["baseline"]
        model = ResponseModel(
            grasp_id=grasp_id,
            instrument=self._instrument_object(live, instrument),
            device=DEVICE_OF_HAND[HANDS[instrument % len(HANDS)]],
            objects=objects,
            vertices=vertices,
            matrices=matrices,
            baseline=RigidPose(base["position"], to_wire_quat(base["orientation"]), base["jaw"]),
            server_time=self.protocol.now(),
            epoch=live.sync.epoch,
        )
        message = Message("grasp", response_model_fields(model))
        for index in self._holder_clients(live, instrument):
            self.channels.send(index, Channel.RELIABLE, message)
        self.counters["grasp_models_sent"] += 1

    def _send_release(self, live: _LiveRoom, instrument: int | None) -> None:
        grasp_id = live.grasp_ids.pop(instrument, None) if instrument is not None else None
        if grasp_id is not None:
            for index in self._holder_clients(live, instrument):
                self.channels.send(index, Channel.RELIABLE, Message("release", {"grasp_id": grasp_id}))

    def _publish(self, live: _LiveRoom, report: StepReport | None) -> None:
        room, sync = live.room, live.sync
        now = self.protocol.now()
        if report is not None:
            if report.topology:
                self._publish_topology(live, report)
            for event in report.events:
                if event.kind in ("release", "tear"):
                    self._send_release(live, event.instrument)
                if event.kind in PHYSICS_EVENTS:
                    obj = self._instrument_object(live, event.instrument)
                    by = None if event.instrument is None else event.instrument // len(HANDS)
                    self._broadcast_event(live, event.kind, by=by, instrument=obj, detail=event.detail)
                else:
                    self.counters[f"physics_{event.kind}"] += 1
        if not live.clients:
            return
        x = room.physics.x
        sync.begin_frame(now, x[sync.layout.vertex_ids], self._rigid_set(live))
        watch_every = self._observer_every(room)
        for index in list(live.clients):
            client = self.clients.get(index)
            if client is None or index not in sync.clients:
                continue
            if watch_every > 1 and client.identity.role is Role.OBSERVER and (sync.sequence + index) % watch_every:
                continue  # an observer's frame off its rate (observers are spread over the ticks)
            self._set_focus(live, client)
            data = sync.encode(index)
            self.channels.send(index, Channel.UNRELIABLE, snapshot_message(data))
            ack = client.inputs.ack(now)
            if ack is not None:
                self.channels.send(index, Channel.UNRELIABLE, Message("input_ack", input_ack_fields(ack)))
            self.counters["snapshots"] += 1
            self.counters["snapshot_bytes"] += len(data)
            self.metrics.histograms.snapshot_bytes.observe(len(data))
        self.channels.flush(list(live.clients), now)  # out now rather than at the next 100 Hz update

    def _observer_every(self, room: Room) -> int:
        """Observers get every n-th snapshot (``observer_snapshot_hz``; 0: every tick): they only watch, and
        their headsets interpolate between snapshots whatever the rate."""
        hz = self.settings.observer_snapshot_hz
        return max(1, round(room.scenario.tick_hz / hz)) if hz > 0 else 1

    def _set_focus(self, live: _LiveRoom, client: _Client) -> None:
        """What this person works on and looks at ranks higher in their snapshots (interest management)."""
        pid = client.identity.participant
        points = [pose.position for (p, _), pose in live.room.inputs.items() if p == pid]
        if client.gaze is not None:
            points.append(client.gaze)
        if points:
            live.sync.set_focus(client.index, np.asarray(points))

    def _rigid_set(self, live: _LiveRoom) -> RigidSet:
        instruments = live.room.physics.instruments
        if not instruments:
            return RigidSet.empty()
        n = len(instruments)
        ids, jaws = np.empty(n, np.int64), np.empty(n)
        positions, orientations = np.empty((n, 3)), np.empty((n, 4))
        for j, (key, inst) in enumerate(instruments.items()):
            ids[j] = self._instrument_object(live, key)
            positions[j] = inst.position
            w, x, y, z = inst.orientation.tolist()
            orientations[j] = (x, y, z, w)  # the wire's order
            jaws[j] = min(max(float(inst.jaw), 0.0), math.pi / 2) if inst.spec.has_jaw else math.nan
        return RigidSet(ids, np.full(n, int(RigidKind.INSTRUMENT), np.int64), positions, orientations, jaws)

    def _publish_topology(self, live: _LiveRoom, report: StepReport) -> None:
        """A cut or burn changed the surface: a new snapshot epoch (reliable, to everyone in the room)."""
        changes = report.topology
        old_ids = live.sync.layout.vertex_ids
        layout = surface_layout(live.room)
        removed_vertices = np.setdiff1d(old_ids, layout.vertex_ids)
        removed = [np.asarray(c.removed_triangles, np.int64).reshape(-1, 3) for c in changes]
        added = [np.asarray(c.added_triangles, np.int64).reshape(-1, 3) for c in changes]
        last = changes[-1]
        message = live.sync.change_topology(
            layout,
            cause=last.cause if last.cause in ("cut", "burn") else "cut",
            instrument=self._instrument_object(live, last.instrument),
            removed_vertices=removed_vertices,
            removed_triangles=np.concatenate(removed) if removed else None,
            added_triangles=np.concatenate(added) if added else None,
            triangles=live.room.model.surface,
        )
        self._broadcast(live, Channel.RELIABLE, message)
        self.counters["topology_epochs"] += 1

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """Plain numbers for a status line, a health check or metrics (no secrets, no names)."""
        rooms = {}
        for session, live in self.rooms.items():
            stats = live.ticker.stats
            rooms[session] = {
                "state": live.room.state.value,
                "clients": len(live.clients),
                "frame": live.room.frame,
                "ticks": stats.ticks,
                "overruns": stats.overruns,
                "last_step_seconds": stats.last_step_seconds,
                "substeps": live.ticker.governor.substeps,
                "refusals": sum(v for k, v in live.room.counters.items() if k.startswith(("refused", "input_rej"))),
            }
        return {"rooms": rooms, "clients": len(self.clients), "counters": dict(self.counters)}

    def ready(self) -> bool | str:
        """For /readyz: False-like reasons while draining or when most rooms cannot keep real time."""
        if self.draining:
            return "draining"
        degraded = sum(live.ticker.governor.degraded for live in self.rooms.values())
        if self.rooms and degraded * 2 > len(self.rooms):
            return "overloaded"
        return True

    def drop_counts(self) -> Counter[str]:
        """Dropped traffic by reason: the packet layer's (netcode core) plus the message layer's (each
        connection's channels: e.g. ``message_invalid`` for a payload that decrypted but is no valid message)."""
        drops: Counter[str] = Counter(self.protocol.core.drops if self.protocol is not None else {})
        drops.update(self.departed_message_drops)
        for index in self.channels.peers:
            stats = self.channels.stats(index)
            if stats is not None:
                drops.update(stats.drops)
        return drops

    def _sample_connections(self) -> None:
        """Once a second: every connection's RTT into the histogram, and the mean packet loss."""
        losses = []
        for index in list(self.clients):
            stats = self.channels.stats(index)
            if stats is None:
                continue
            if stats.rtt is not None:
                self.metrics.histograms.rtt.observe(stats.rtt)
            losses.append(stats.packet_loss)
        self.packet_loss = float(np.mean(losses)) if losses else 0.0

    def ops_status(self) -> dict[str, Any]:
        """The status in the shape ops.metrics reads (see its module docstring)."""
        rooms: Counter[str] = Counter()
        roles: Counter[str] = Counter()
        rejected: Counter[str] = Counter()
        solver: Counter[str] = Counter()
        substeps, ticks, overruns = {}, 0, 0
        for session, live in self.rooms.items():
            rooms[live.room.state.value] += 1
            for p in live.room.participants.values():
                if p.connected:
                    roles[p.identity.role.value] += 1
            rejected.update(by_prefix(live.room.counters, "input_rejected_"))
            solver.update(by_prefix(live.room.counters, "solver_"))
            substeps[session] = live.ticker.governor.substeps
            ticks += live.ticker.stats.ticks
            overruns += live.ticker.stats.overruns
        core = self.protocol.core if self.protocol is not None else None
        stats = core.stats if core is not None else {}
        return {
            "rooms": dict(rooms),
            "participants": dict(roles),
            "substeps": substeps,
            "packets": {"in": stats.get("packets_in", 0), "out": stats.get("packets_out", 0)},
            "bytes": {"in": stats.get("bytes_in", 0), "out": stats.get("bytes_out", 0)},
            "drops": self.drop_counts(),
            "rejected_inputs": dict(rejected),
            "handshakes": {"accepted": self.counters["connects"], "refused": self.counters["connects_refused"]},
            "ticks": ticks,
            "tick_overruns": overruns,
            "solver": dict(solver),
            "packet_loss_ratio": self.packet_loss,
            "tick_budget_utilisation": max(
                (live.ticker.stats.last_tick_seconds / live.ticker.dt for live in self.rooms.values()), default=0.0
            ),
            "room_stats": {session: self._room_stats(live) for session, live in self.rooms.items()},
        }

    # ------------------------------------------------------------------ admin and drain (ops)

    @staticmethod
    def _room_stats(live: _LiveRoom) -> dict[str, Any]:
        """One room in the ops.metrics ``room_stats`` shape (also the base of the admin API's views)."""
        stats, governor = live.ticker.stats, live.ticker.governor
        roles: Counter[str] = Counter(p.identity.role.value for p in live.room.participants.values() if p.connected)
        return {
            "scenario": live.room.scenario.name,
            "state": live.room.state.value,
            "participants": dict(roles),
            "substeps": governor.substeps,
            "degraded": governor.degraded,
            "ticks": stats.ticks,
            "tick_overruns": stats.overruns,
            "tick_seconds": {
                "p50": quantile(stats.tick_seconds, 0.5),
                "p99": quantile(stats.tick_seconds, 0.99),
                "sum": stats.tick_seconds_sum,
                "count": stats.timed_ticks,
            },
            "physics_step_seconds": {
                "p50": quantile(stats.step_seconds, 0.5),
                "p99": quantile(stats.step_seconds, 0.99),
                "sum": stats.step_seconds_sum,
                "count": stats.steps,
            },
        }

    def admin_actions(self) -> AdminActions:
        """What ops' admin API may see and do here (plain callables: ops never imports rehearsal)."""
        return AdminActions(
            list_rooms=self.admin_rooms,
            room=self.admin_room,
            end_room=self.admin_end_room,
            remove_participant=self.admin_remove_participant,
            list_results=self.results.sessions,
            result=self.results.session,
        )

    def admin_rooms(self) -> list[dict[str, Any]]:
        """Every room: state, scenario, participants by role, tick p99 (seconds, None before a tick)."""
        rooms = []
        for session, live in sorted(self.rooms.items()):
            stats = self._room_stats(live)
            rooms.append(
                {
                    "session": session,
                    "state": stats["state"],
                    "scenario": stats["scenario"],
                    "participants": stats["participants"],
                    "tick_p99_seconds": stats["tick_seconds"]["p99"],
                    "degraded": stats["degraded"],
                    "ending": live.ending,
                }
            )
        return rooms

    def admin_room(self, session: str) -> dict[str, Any] | None:
        """One room in detail (None if unknown). Display names are shown to the admin, never logged."""
        live = self.rooms.get(session)
        if live is None:
            return None
        room, stats, ticker = live.room, self._room_stats(live), live.ticker
        return {
            "session": session,
            "state": stats["state"],
            "scenario": stats["scenario"],
            "ending": live.ending,
            "frame": room.frame,
            "participants": [
                {"id": pid, "role": p.identity.role.value, "name": p.identity.name, "connected": p.connected}
                for pid, p in sorted(room.participants.items())
            ],
            "clients": len(live.clients),
            "substeps": {
                "current": ticker.governor.substeps,
                "nominal": ticker.governor.nominal,
                "minimum": ticker.governor.minimum,
                "degraded": ticker.governor.degraded,
            },
            "tick": {
                "budget_seconds": ticker.dt,
                "p50_seconds": stats["tick_seconds"]["p50"],
                "p99_seconds": stats["tick_seconds"]["p99"],
                "ticks": ticker.stats.ticks,
                "overruns": ticker.stats.overruns,
            },
            "physics_step": {
                "p50_seconds": stats["physics_step_seconds"]["p50"],
                "p99_seconds": stats["physics_step_seconds"]["p99"],
                "last_seconds": ticker.stats.last_step_seconds,
                "steps": ticker.stats.steps,
                "failed": room.counters["step_failed"],
            },
            **plain(room.progress()),  # steps with their status, current_step, complications
            "counters": dict(room.counters),
        }

    def _admin_live(self, session: str) -> _LiveRoom:
        live = self.rooms.get(session)
        if live is None:
            raise LookupError(f"no room {session!r}")
        return live

    def admin_end_room(self, session: str) -> dict[str, Any]:
        """End a room now (as a mentor would: everybody is told, records kept). Ending twice is harmless."""
        live = self._admin_live(session)
        log.info("session %s: ended by an administrator", session)
        self._end_room(session)
        return {"session": session, "state": live.room.state.value}

    def admin_remove_participant(self, session: str, participant: int) -> dict[str, Any]:
        """Remove a participant for good (as a mentor would); they are told, then disconnected."""
        live = self._admin_live(session)
        if not live.room.remove(participant):
            raise LookupError(f"no participant {participant} in room {session!r}")
        log.info("session %s: participant %d removed by an administrator", session, participant)
        self._broadcast_event(live, "remove_participant", detail={"who": participant, "by_admin": True})
        self._send_away(session, participant, "removed from the session by an administrator")
        return {"session": session, "participant": participant, "removed": True}

    def _closed(self) -> str | None:
        """For the join API: a reason while no new sessions or joins are taken."""
        return "the server is draining: no new sessions or joins" if self.draining else None

    def start_drain(self) -> defer.Deferred:
        """Graceful drain (SIGTERM): not ready, no new sessions, joins or connections; every participant
        gets a reliable ``event`` ``draining`` with the deadline in server time; rooms end (``_end_room``)
        when empty or at the deadline. Fires when every room is closed (bounded: deadline + grace)."""
        if self.drain is None:
            self.draining = True
            self.drain = Drain(
                self.reactor,
                self.settings.drain_seconds,
                rooms=lambda: list(self.rooms),
                empty=self._room_empty,
                end=self._end_room,
                announce=self._announce_drain,
            )
        return self.drain.start()

    def _room_empty(self, session: str) -> bool:
        live = self.rooms.get(session)
        return live is None or not any(p.connected for p in live.room.participants.values())

    def _announce_drain(self, deadline: float) -> None:
        seconds = max(deadline - self.reactor.seconds(), 0.0)
        server_deadline = self.protocol.now() + seconds if self.protocol is not None else deadline
        for live in list(self.rooms.values()):
            if not live.ending:
                self._broadcast_event(live, "draining", detail={"deadline": server_deadline, "seconds": seconds})


class _Refused:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _warm_up(scenario_name: str) -> None:
    """Each of the scenario's instruments works the tissue once (contact, grasp and its response probe, cut,
    burn) and one snapshot is encoded, so numba compiles (or loads its cache) every kernel now, not in the
    middle of a session."""
    scenario = load_scenario(scenario_name)
    room = Room("warm-up", scenario)
    surgeon = room.join(Identity("warm-up", 1, Role.LEAD_SURGEON, "warm-up"))
    room.start()
    rest = room.model.rest_positions
    lo, hi = rest.min(axis=0), rest.max(axis=0)
    hinge = np.array([(lo[0] + hi[0]) / 2, hi[1] + 0.01, (lo[2] + hi[2]) / 2])  # jaws reach into the top
    down = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))
    dt, t = 1.0 / scenario.tick_hz, 0.0
    default_threads = numba.get_num_threads()
    try:
        for threads in sorted({1, default_threads}):  # a room's thread steps with the serial kernels
            numba.set_num_threads(threads)
            for kind in scenario.instruments:
                surgeon.hands["right"] = Kind(kind)
                for jaw in (1.0, 1.0, 0.6, 0.3, 0.0, 0.0, 1.0):
                    t += dt
                    room.instrument_input(1, "right", hinge, down, jaw, kind == Kind.CAUTERY_HOOK, t)
                    room.advance(dt)
    finally:
        numba.set_num_threads(default_threads)
    layout = surface_layout(room)
    sync = SnapshotServer(layout, triangles=room.model.surface)
    sync.add_client(0)
    rigid = RigidSet(np.zeros(1, np.int64), np.zeros(1, np.int64), hi[None, :], np.array([[0, 0, 0, 1.0]]), np.zeros(1))
    for _ in range(2):
        sync.begin_frame(0.0, room.physics.x[layout.vertex_ids], rigid)
        sync.encode(0)
        sync.on_ack(0, sync.sequence)


def serve(settings: Settings) -> int:
    """Run a RehearsalServer until SIGINT/SIGTERM, then drain (``start_drain``: rooms end when empty or
    after ``settings.drain_seconds``), disconnect everybody and stop. A second signal stops at once. Returns 0."""
    from twisted.internet import reactor

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    server = RehearsalServer(settings, reactor)
    for spec in (TOKEN_KEY, ADMIN_CREDENTIAL):
        where = f"environment {spec.env_var}" if os.environ.get(spec.env_var) else str(server.data_dir / spec.name)
        log.info("secret %s: %s", spec.name, where)
    log.info("admin credential file: %s (send it as 'Authorization: Bearer <contents>')", server.credential_path)
    log.info("warming up the physics and snapshot kernels")
    server.start()
    log.info(
        "listening udp=%s http=%s:%d (public address %s)",
        server.udp_address,
        server.settings.http_host,
        server.http_port,
        server.settings.public_address,
    )
    state = {"signals": 0, "stopping": False}

    def stop(_: object = None) -> None:  # on the reactor thread
        if state["stopping"]:
            return
        state["stopping"] = True
        server.stop().addBoth(lambda _: reactor.stop())

    def shutdown(signum: int, frame: object) -> None:
        state["signals"] += 1
        if state["signals"] == 1:
            log.info("signal %d: draining (up to %.1f s)", signum, server.settings.drain_seconds)
            reactor.callFromThread(lambda: server.start_drain().addBoth(stop))
        else:
            log.info("signal %d again: stopping now", signum)
            reactor.callFromThread(stop)

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)
    reactor.run(installSignalHandlers=False)
    log.info("stopped: %s", {k: v for k, v in server.counters.items()})
    return 0
