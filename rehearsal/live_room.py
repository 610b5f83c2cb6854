"""A live room: a ``Room`` with what drives it (ticker, thread), its state sync and its audience of clients.

``Client`` is one connected participant as the server keeps it: its ``Link``, identity, input receiver,
snapshot-ack state and gaze. ``LiveRoom`` holds a room's clients by link key, allocates the snapshot object
ids of its instruments, and sends to all of them (``broadcast``, ``broadcast_event``) or to one
participant's connections (``holders``). Interest management (``set_focus``) ranks what a person works on
and looks at higher in their snapshots.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netcode.messaging.channels import Channel
from netcode.messaging.fragments import DEFAULT_MAX_MESSAGE_SIZE
from netcode.messaging.messages import Message, MessageError
from netcode.protocol.inputs import InputReceiver
from netcode.protocol.poses import RigidPose, rotate
from netcode.sync.patches import PatchLayout, make_patches
from netcode.sync.snapshot_codec import SnapshotServer
from rehearsal.hands import holder_participant, instrument_holder
from rehearsal.identity import Identity
from rehearsal.links import UDP, Link
from rehearsal.observer_stream import ObserverGroup
from rehearsal.room import Room
from rehearsal.surface_damage import SurfaceDamage
from rehearsal.ticking import RoomThread, RoomTicker
from rehearsal.wire import REHEARSAL_REGISTRY, plain

GAZE_DISTANCE = 0.45  # m: a standing surgeon's eyes to the operating field
# Instrument object ids start here so they never equal a tissue patch's id (its index in the layout):
# clients such as the thin client keep every snapshot object in one map by id.
INSTRUMENT_OBJECT_BASE = 32768
# Headsets (RigidKind.HEAD objects) from here: a range of their own, so instrument ids stay as they were.
HEAD_OBJECT_BASE = 49152
MAX_HEAD_OBJECTS = 0xFFFF - HEAD_OBJECT_BASE + 1
ACK_WINDOW = 128  # snapshots behind the newest acked one whose acks the server remembers (a few RTTs' worth)
_ACK_MASK = (1 << ACK_WINDOW) - 1
MAX_EVENT_BYTES = min(DEFAULT_MAX_MESSAGE_SIZE, REHEARSAL_REGISTRY.max_encoded_size)  # what a channel carries
MAX_REFUSAL_KINDS = 64  # per client: the request kinds whose last refusal time is kept


@dataclass
class Client:
    """One connected participant of a room, reached through its ``link``."""

    link: Link
    identity: Identity
    inputs: InputReceiver = field(default_factory=InputReceiver)
    last_refused: dict[str, float] = field(default_factory=dict)
    gaze: np.ndarray | None = None  # where the headset looks (GAZE_DISTANCE ahead of the head), for priority
    head: RigidPose | None = None  # the headset's newest pose (a HEAD rigid object in the room's snapshots)
    ack_base: int | None = None  # newest snapshot sequence an ack of this client named
    ack_passed: int = 0  # bit k: snapshot ack_base - k was already handed to the codec (ACK_WINDOW bits)

    @property
    def key(self) -> int:
        return self.link.key

    @property
    def session(self) -> str:
        return self.identity.session

    def forget_acks(self) -> None:
        """Forget every ack (the client starts over on a stream of its own: nothing it acked is a baseline)."""
        self.ack_base, self.ack_passed = None, 0

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

    def may_answer(self, request: str, now: float, interval: float) -> bool:
        """Whether a refusal of ``request`` may be answered now (at most one per ``interval``); remembers it."""
        last = self.last_refused.get(request)
        if last is not None and now - last < interval:
            return False
        if len(self.last_refused) >= MAX_REFUSAL_KINDS:
            self.last_refused = {}
        self.last_refused[request] = now
        return True


def gaze_point(head: RigidPose, workspace: tuple[np.ndarray, np.ndarray]) -> np.ndarray | None:
    """The point GAZE_DISTANCE along the head's forward axis (+z, Unity's), kept inside the room's
    workspace; None for a head outside it (a tracking glitch is not a place to look at)."""
    lo, hi = workspace
    if np.any(head.position < lo) or np.any(head.position > hi):
        return None
    return np.clip(head.position + GAZE_DISTANCE * rotate(head.rotation, np.array([0.0, 0.0, 1.0])), lo, hi)


def surface_layout(room: Room) -> PatchLayout:
    """The room's current surface vertices split into patches (layout order = what snapshots carry)."""
    ids = room.surface_vertices()
    return make_patches(ids, room.physics.x[ids])


class LiveRoom:
    """A room, what drives it and its audience (see the module doc).

    ``server_time`` stamps events (the clock clients sync to); ``counters`` are the server's."""

    def __init__(
        self,
        room: Room,
        sync: SnapshotServer,
        *,
        ticker: RoomTicker | None = None,
        pool: RoomThread | None = None,
        server_time: Callable[[], float] = time.monotonic,
        counters: Counter[str] | None = None,
        empty_since: float | None = None,
    ) -> None:
        self.room = room
        self.sync = sync
        self.ticker = ticker
        self.pool = pool
        self.server_time = server_time
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.clients: dict[int, Client] = {}  # by link key
        self.udp_keys: set[int] = set()  # the clients on UDP links: flushed in one ServerChannels call per tick
        self.object_ids: dict[tuple[int, str], int] = {}  # (participant, hand) -> snapshot object id
        self.head_ids: dict[int, int] = {}  # participant -> snapshot object id of their headset
        self.empty_since = empty_since
        self.ending = False
        self.created_at = time.time()
        self.grasp_ids: dict[int, int] = {}  # physics instrument id -> grasp id sent to its holder
        self.next_grasp_id = 1
        self.observers = ObserverGroup(sync, None)  # browser observers sharing one snapshot stream
        self.health_sent_at = -math.inf  # server time of the last room_health event (rehearsal.room_health)
        self.burns = SurfaceDamage()  # the burn levels its clients were told (rehearsal.surface_damage)

    # --- audience ----------------------------------------------------------------------------------------

    def add(self, client: Client) -> None:
        self.clients[client.key] = client
        if client.link.transport == UDP:
            self.udp_keys.add(client.key)
        self.empty_since = None

    def discard(self, key: int) -> Client | None:
        self.udp_keys.discard(key)
        return self.clients.pop(key, None)

    def holders(self, participant: int) -> list[Client]:
        """The clients of a participant (normally one)."""
        return [c for c in self.clients.values() if c.identity.participant == participant]

    def broadcast(self, channel: Channel, message: Message | bytes) -> None:
        for client in list(self.clients.values()):
            client.link.send(channel, message)

    def broadcast_event(
        self, kind: str, *, by: int | None = None, instrument: int | None = None, detail: dict | None = None
    ) -> None:
        """A reliable ``event`` to everyone in the room (``instrument``: a snapshot object id)."""
        fields: dict[str, Any] = {"kind": kind, "server_time": self.server_time(), "session_time": self.room.elapsed}
        if by is not None:
            fields["by"] = by
        if instrument is not None:
            fields["instrument"] = instrument
        if detail:
            fields["detail"] = plain(detail)
        message = Message("event", fields)
        try:  # one that cannot be sent is counted, never raised into the transport
            size = len(REHEARSAL_REGISTRY.encode(message))
        except MessageError:
            self.counters["events_refused_invalid"] += 1
            return
        if size > MAX_EVENT_BYTES:
            self.counters["events_refused_too_large"] += 1
            return
        self.broadcast(Channel.RELIABLE, message)
        self.counters["events"] += 1

    def physics_event(self, kind: str, instrument: int | None, by: int | None, detail: dict | None) -> None:
        """An event about a physics instrument: its snapshot object id, and its holder as ``by`` unless given."""
        if by is None and instrument is not None:
            by = holder_participant(instrument)
        self.broadcast_event(kind, by=by, instrument=self.instrument_object(instrument), detail=detail)

    # --- snapshot object ids -----------------------------------------------------------------------------

    def object_id(self, participant: int, hand: str) -> int:
        """The snapshot object id of a participant's instrument (stable for the room's life)."""
        key = (participant, hand)
        oid = self.object_ids.get(key)
        if oid is None:
            oid = INSTRUMENT_OBJECT_BASE + len(self.object_ids)  # 32,768 instruments before RigidSet refuses
            self.object_ids[key] = oid
        return oid

    def head_object(self, participant: int) -> int | None:
        """The snapshot object id of a participant's headset (stable for the room's life; None past the range)."""
        oid = self.head_ids.get(participant)
        if oid is None and len(self.head_ids) < MAX_HEAD_OBJECTS:
            oid = self.head_ids[participant] = HEAD_OBJECT_BASE + len(self.head_ids)
        return oid

    def participant_objects(self, participant: int) -> dict[str, int]:
        """The snapshot object ids that show a participant: their headset and the instruments they hold (only a
        tracked head and held instruments appear in snapshots), for pages to label them with name and role."""
        objects = {hand: oid for (p, hand), oid in self.object_ids.items() if p == participant}
        head = self.head_object(participant)
        if head is not None:
            objects["head"] = head
        return objects

    def instrument_object(self, instrument: int | None) -> int | None:
        """The snapshot object id of a physics instrument id (None for None)."""
        if instrument is None:
            return None
        return self.object_id(*instrument_holder(instrument))

    # --- interest management -----------------------------------------------------------------------------

    def set_focus(self, client: Client) -> None:
        """What this person works on and looks at ranks higher in their snapshots (interest management). A member
        of the shared observer stream has no snapshots of its own to rank (``rehearsal.observer_stream``)."""
        if client.key not in self.sync.clients:
            return
        pid = client.identity.participant
        points = [pose.position for (p, _), pose in self.room.inputs.items() if p == pid]
        if client.gaze is not None:
            points.append(client.gaze)
        if points:
            self.sync.set_focus(client.key, np.asarray(points))
