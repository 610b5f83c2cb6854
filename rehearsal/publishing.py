"""Per-tick publishing of a live room to its audience: epochs, events, grasp models, snapshots, input acks.

After each step (on the reactor thread) ``Publisher.publish(live, report)``: topology changes (a cut or
burn) become a new snapshot epoch sent reliably; physics events (grasp, release, tear, cut, burn) and the
room's own events (steps, complications, resets) become reliable ``event`` messages; burn levels that changed
become a reliable ``surface_damage``; the holder of a new grasp gets its response model (``grasp``, measured on
the room's thread), then ``release``. Then the surface (layout order) and the instruments are quantized once
and each client gets its own ``snapshot`` (deltas against what it acknowledged, or for a WebSocket what was
written to it, under a byte budget; a room's browser observers share one, encoded once:
``rehearsal.observer_stream``) and an ``input_ack`` on the unreliable channel, and the room's links are flushed
(its UDP links in one ``ServerChannels.flush`` call). Before the flush each participant gets the forces on its
own instruments and each mentor the whole room's (unreliable ``forces``, ``netcode.protocol.forces``). In a room
with a suture (``Room.suturing``) the needle is a rigid object (``NEEDLE_OBJECT``) and, before the snapshots, each
client gets the thread's frame (unreliable ``snap_thread``, ``publish_thread``) out of its snapshot byte budget.

Everything goes out through each client's ``Link``; this is the hot path (GIL-bound Python, per client
per tick), so the loop stays flat.

Off the reactor (``encode_on_room_thread``, the default): a room's snapshots are encoded on its own thread right
after its step (``prepare_snapshots``, the ticker's ``after_step``: the frame's quantization in one nogil call and
every client's snapshot in one more, ``SnapshotServer.encode_many``), so rooms encode in parallel across cores, a
room's frame takes the GIL back a few times rather than once per client, and the reactor only sends them. The
reactor's part (``snapshot_context``, the ticker's ``before_step``) sets each client's focus and allocates object
ids when the step is handed over. A tick whose step changed the topology,
or whose epoch changed on the reactor since (a reset), or that found new objects, is encoded on the reactor as
before; the bytes are the same either way.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from netcode.messaging.channels import Channel
from netcode.messaging.messages import Message
from netcode.protocol.forces import MAX_FORCE_INSTRUMENTS, force_fields
from netcode.protocol.poses import RigidPose
from netcode.protocol.response_model import ResponseModel
from netcode.protocol.schema import input_ack_fields, response_model_fields
from netcode.sync.snapshot import HEADER_SIZE, RigidKind, RigidSet
from netcode.sync.snapshot_codec import ClientSync
from netcode.sync.snapshot_messages import snapshot_message
from netcode.sync.thread_polyline import THREAD_ENVELOPE, ThreadError, ThreadStream, thread_id
from physics import StepReport
from physics.suturing import Suturing
from rehearsal.hands import holder_participant, instrument_holder
from rehearsal.links import IN_ORDER, UDP
from rehearsal.live_room import INSTRUMENT_OBJECT_BASE, LiveRoom, surface_layout
from rehearsal.observer_stream import SHARED_OBSERVERS
from rehearsal.roles import Role
from rehearsal.room_health import HEALTH_AUDIENCE, HEALTH_INTERVAL, room_health
from rehearsal.wire import DEVICE_OF_HAND, REHEARSAL_REGISTRY, to_wire_quat

PHYSICS_EVENTS = frozenset({"grasp", "release", "tear", "cut", "burn"})
MAX_JAW = math.pi / 2  # rad: the widest jaw opening snapshots carry
NEEDLE_OBJECT = INSTRUMENT_OBJECT_BASE - 1  # the suture needle's rigid object id (below the instruments' range)
RIGID_RESERVE = 48  # snapshot bytes the thread leaves for the rigid record (instruments and heads go first)


class Publisher:
    """Publishes live rooms (see the module doc).

    ``flush_udp(keys, now)`` pushes out the queued packets of UDP links (``ServerChannels.flush``);
    ``observe_snapshot_bytes`` gets each snapshot's size (a metrics histogram's ``observe``)."""

    def __init__(
        self,
        *,
        server_time: Callable[[], float],
        counters: Counter[str],
        flush_udp: Callable[[Iterable[int], float], None],
        observer_snapshot_hz: float = 0.0,
        observe_snapshot_bytes: Callable[[float], None] | None = None,
        encode_on_room_thread: bool = True,
    ) -> None:
        self.server_time = server_time
        self.counters = counters
        self.flush_udp = flush_udp
        self.observer_snapshot_hz = observer_snapshot_hz
        self.observe_snapshot_bytes = observe_snapshot_bytes or (lambda _: None)
        self.threads: weakref.WeakKeyDictionary[LiveRoom, _ThreadSync] = weakref.WeakKeyDictionary()
        self.encode_on_room_thread = encode_on_room_thread

    def publish(self, live: LiveRoom, report: StepReport | None) -> None:
        """One tick of a room: its events, then (after a step) the physics' news, then everyone's snapshot."""
        self.publish_room_events(live)
        if report is not None:
            self.publish_physics(live, report)
        self.publish_burns(live, report)
        if live.clients:
            self.publish_snapshots(live)
            self.publish_thread(live)
            now = self.server_time()
            if now - live.health_sent_at >= HEALTH_INTERVAL:
                live.health_sent_at = now
                self.publish_health(live)

    def publish_health(self, live: LiveRoom) -> None:
        """The room's ``room_health`` event to its mentors and observers (once a second)."""
        audience = [c for c in live.clients.values() if c.identity.role in HEALTH_AUDIENCE]
        if not audience:
            return
        fields = {"kind": "room_health", "server_time": self.server_time(), "detail": room_health(live)}
        data = REHEARSAL_REGISTRY.encode(Message("event", fields))  # encoded (and framed) once for the audience
        for client in audience:
            client.link.send(Channel.RELIABLE, data)
        self.counters["health_events"] += 1

    # --- events ------------------------------------------------------------------------------------------

    def publish_room_events(self, live: LiveRoom) -> None:
        """Steps completed or violated, complications started, resets: reliable events to everyone."""
        for event in live.room.take_events():
            if event.kind == "grasp_response":
                self.send_grasp_model(live, event.instrument, event.detail)
                continue
            if event.kind == "world_reset":
                live.grasp_ids.clear()  # the new epoch ends every grasp on the clients too
                self.republish_world(live)
            live.physics_event(event.kind, event.instrument, event.by, event.detail)
            self.counters[f"room_{event.kind}"] += 1

    def publish_physics(self, live: LiveRoom, report: StepReport) -> None:
        """A step's topology changes (a new epoch) and its events (grasp, release, tear, cut, burn)."""
        if report.topology:
            self.publish_topology(live, report)
        for event in report.events:
            if event.kind in ("release", "tear"):
                self.send_release(live, event.instrument)
            if event.kind in PHYSICS_EVENTS:
                live.physics_event(event.kind, event.instrument, None, event.detail)
            else:
                self.counters[f"physics_{event.kind}"] += 1

    def publish_burns(self, live: LiveRoom, report: StepReport | None) -> None:
        """Surface vertices whose burn level changed (reliable ``surface_damage`` to everyone): only after a
        frame that heated tissue, removed tets or replaced the world (``rehearsal.surface_damage``)."""
        room = live.room
        for message in live.burns.update(room.model, room.physics, report is not None and bool(report.topology)):
            live.broadcast(Channel.RELIABLE, message)
            self.counters["surface_damage_messages"] += 1

    def send_grasp_model(self, live: LiveRoom, instrument: int, detail: dict) -> None:
        """The new grasp's response model becomes a motion predictor of the room's snapshots (reliable
        ``snap_predictor`` to everyone), and the holder's headset gets its strongest part (reliable
        ``grasp``) to predict the held tissue with."""
        response = detail["response"]
        live.broadcast(Channel.RELIABLE, live.sync.add_predictor(response.vertex_ids, response.matrices))
        objects, vertices, matrices = response.strongest().on_layout(live.sync.layout)
        if objects.size == 0:
            return
        grasp_id = live.grasp_ids[instrument] = live.next_grasp_id
        live.next_grasp_id += 1
        base = detail["baseline"]
        participant, hand = instrument_holder(instrument)
        model = ResponseModel(
            grasp_id=grasp_id,
            instrument=live.object_id(participant, hand),
            device=DEVICE_OF_HAND[hand],
            objects=objects,
            vertices=vertices,
            matrices=matrices,
            baseline=RigidPose(base["position"], to_wire_quat(base["orientation"]), base["jaw"]),
            server_time=self.server_time(),
            epoch=live.sync.epoch,
        )
        message = Message("grasp", response_model_fields(model))
        for client in live.holders(participant):
            client.link.send(Channel.RELIABLE, message)
        self.counters["grasp_models_sent"] += 1

    def send_release(self, live: LiveRoom, instrument: int | None) -> None:
        """The holder of a grasp that ended is told its grasp id (its headset stops predicting)."""
        grasp_id = live.grasp_ids.pop(instrument, None) if instrument is not None else None
        if grasp_id is not None:
            message = Message("release", {"grasp_id": grasp_id})
            for client in live.holders(holder_participant(instrument)):
                client.link.send(Channel.RELIABLE, message)

    # --- topology ----------------------------------------------------------------------------------------

    def republish_world(self, live: LiveRoom) -> None:
        """The room's world was replaced (reset): a new epoch with the full triangle list."""
        surface = live.room.model.surface
        message = live.sync.change_topology(
            surface_layout(live.room), cause="full", added_triangles=surface, triangles=surface
        )
        live.broadcast(Channel.RELIABLE, message)

    def publish_topology(self, live: LiveRoom, report: StepReport) -> None:
        """A cut or burn changed the surface: a new snapshot epoch (reliable, to everyone in the room)."""
        changes = report.topology
        old_ids = live.sync.layout.vertex_ids
        surface_ids = live.room.surface_vertices()
        # an edit of the current layout: untouched patches keep their baselines, the message lists only the rest
        layout = live.sync.edit_layout(surface_ids, live.room.physics.x[surface_ids])
        removed_vertices = np.setdiff1d(old_ids, layout.vertex_ids)
        removed = [np.asarray(c.removed_triangles, np.int64).reshape(-1, 3) for c in changes]
        added = [np.asarray(c.added_triangles, np.int64).reshape(-1, 3) for c in changes]
        last = changes[-1]
        message = live.sync.change_topology(
            layout,
            cause=last.cause if last.cause in ("cut", "burn") else "cut",
            instrument=live.instrument_object(last.instrument),
            removed_vertices=removed_vertices,
            removed_triangles=np.concatenate(removed) if removed else None,
            added_triangles=np.concatenate(added) if added else None,
            triangles=live.room.model.surface,
        )
        live.broadcast(Channel.RELIABLE, message)
        self.counters["topology_epochs"] += 1

    # --- snapshots ---------------------------------------------------------------------------------------

    def publish_snapshots(self, live: LiveRoom) -> None:
        """Each client's snapshot, input ack and forces, the room's UDP links flushed (out now, not at the next 100 Hz
        channel update), then the browser observers' one shared snapshot: per observer only a write of the same
        frame, after the participants' snapshots are on their way."""
        room, sync, counters = live.room, live.sync, self.counters
        now = self.server_time()
        prepared = self.take_prepared(live)
        if prepared is None:
            sync.begin_frame(now, room.physics.x[sync.layout.vertex_ids], self.rigid_set(live))
        watch_every = self.observer_every(room.scenario.tick_hz)
        encoded = sync.clients
        observe = self.observe_snapshot_bytes
        others = False
        clients = [(key, client) for key, client in live.clients.items() if key in encoded]
        if prepared is not None:
            snapshots = prepared.snapshots  # a client missing there: off its rate, or joined after the hand-over
        else:
            seq, keys = sync.sequence, []
            for key, client in clients:
                if watch_every > 1 and client.identity.role is Role.OBSERVER and (seq + key) % watch_every:
                    continue  # an observer's frame off its rate (observers are spread over the ticks)
                live.set_focus(client)
                keys.append(key)
            snapshots = dict(zip(keys, sync.encode_many(keys), strict=True))  # one nogil call for all of them
        sent = sent_bytes = 0
        for key, client in clients:
            data = snapshots.get(key)
            if data is None:
                continue
            link = client.link
            if link.send(Channel.UNRELIABLE, snapshot_message(data)) and link.transport in IN_ORDER:
                sync.on_ack(key, sync.sequence)  # delivered in order: a baseline now (rehearsal.links.IN_ORDER)
            ack = client.inputs.ack(now)
            if ack is not None:
                link.send(Channel.UNRELIABLE, Message("input_ack", input_ack_fields(ack)))
            sent += 1
            sent_bytes += len(data)
            observe(len(data))
            if link.transport != UDP:
                others = True
        counters["snapshots"] += sent
        counters["snapshot_bytes"] += sent_bytes
        self.publish_forces(live, now)  # with the snapshots they belong to
        self.flush_udp(list(live.udp_keys), now)  # the headsets' snapshots leave before the observers' is encoded
        group = live.observers
        if group.members and SHARED_OBSERVERS in encoded and (watch_every == 1 or sync.sequence % watch_every == 0):
            data = sync.encode(SHARED_OBSERVERS)  # once for every browser observer of the room
            wire = snapshot_message(data)  # one bytes object for all (a WebSocket link frames it once for all)
            clients = live.clients
            missed = []  # members whose socket could not take it (see ObserverGroup.delivered)
            for key in group.members:
                client = clients.get(key)
                if client is None or not client.link.send(Channel.UNRELIABLE, wire):
                    missed.append(key)
            others = True
            counters["snapshots"] += len(group) - len(missed)
            counters["snapshots_shared"] += 1
            counters["snapshot_bytes"] += len(data)
            observe(len(data))
            for key in group.delivered(sync.sequence, missed):  # a slow page: its own stream, not the others'
                counters["observers_expelled"] += 1
                if (slow := clients.get(key)) is not None:
                    slow.forget_acks()
        if others:
            for client in list(live.clients.values()):
                if client.link.transport != UDP:
                    client.link.flush(now)

    def publish_thread(self, live: LiveRoom) -> None:
        """The suture thread of the frame ``publish_snapshots`` just sent (``snap_thread``, unreliable) to each
        snapshot client, under that client's snapshot byte budget and priority: the thread is a delta against what
        the client acknowledged (``thread_ack``; over an in-order link what was written), sent when its accumulator
        is at least the client's highest pending patch's and it fits the budget less the rigid record's share; the
        bytes it takes come off the client's next snapshot budget (snapshots may be encoded on the room's thread
        before this runs, so one frame later), and the links it wrote to are flushed. A client's thread follows its
        snapshot stream: a new stream, a reconnect or a resync (``snap_resync``) starts it with a reliable
        ``snap_suture`` (the needle's object id and shape) and a full record (SNAPSHOT.md section 6)."""
        suturing = live.room.suturing
        track = self.threads.get(live)
        if suturing is None:
            if track is not None:
                track.release(live)
                del self.threads[live]
            return
        sync = live.sync
        if track is None or track.suturing is not suturing:  # a new suture (or a scenario reset): everyone afresh
            if track is not None:
                track.release(live)
            track = self.threads[live] = _ThreadSync(suturing)
        seq = sync.sequence  # the frame publish_snapshots just sent
        try:
            streams = track.begin_frame(seq, self.server_time(), suturing.threads(), sync.config)
        except ValueError:  # a thread the physics lost (not finite, too long): this frame has none to send
            self.counters["thread_frames_refused"] += 1
            return
        watch_every = self.observer_every(live.room.scenario.tick_hz)
        clients, members = live.clients, live.observers.members
        for stream in streams.values():
            for key in [k for k in stream.clients if k not in sync.clients]:
                stream.remove_client(key)
        for key in [k for k in track.budgets if k not in sync.clients]:
            track.budgets.pop(key, None)
        flush: list = []  # the links written to: out now, with the snapshot they follow
        for key, codec in list(sync.clients.items()):
            shared = key == SHARED_OBSERVERS
            links = [clients[m].link for m in members if m in clients] if shared else []
            if not shared:
                client = clients.get(key)
                if client is None:
                    continue
                if watch_every > 1 and client.identity.role is Role.OBSERVER and (seq + key) % watch_every:
                    continue
                links = [client.link]
            elif watch_every > 1 and seq % watch_every:
                continue
            started, base = track.follow(key, codec)
            if started:  # its stream (re)started: the suture's shape first, reliably
                setup = Message("snap_suture", _suture_fields(suturing))
                for link in links:
                    link.send(Channel.RELIABLE, setup)
            rival = float(codec.priority.acc.max()) if codec.priority.acc.size else 0.0
            used = 0
            for tid, stream in streams.items():  # the live thread first, then the tied pieces
                if key not in stream.clients:
                    stream.add_client(key)  # a piece cut since this client's stream started: full first
                room = None if base is None else base - HEADER_SIZE - RIGID_RESERVE - used
                data = stream.encode(key, room, rival, codec.focus)
                if data is None:
                    continue
                used += len(data) + THREAD_ENVELOPE
                # thread 0 without its id: a room with one thread sends the bytes it sent before threads had ids
                message = Message("snap_thread", {"data": data} if tid == 0 else {"thread": tid, "data": data})
                written = [link.send(Channel.UNRELIABLE, message) for link in links]
                flush.extend(links)
                if links and all(written) and all(link.transport in IN_ORDER for link in links):
                    stream.on_ack(key, seq)  # delivered in order: a baseline now
                self.counters["thread_messages"] += len(links)
                self.counters["thread_bytes"] += len(data)
            if base is not None:
                with sync.lock:  # the room's thread may encode the next snapshots
                    codec.budget_bytes = max(HEADER_SIZE, base - used)
        if flush:
            now = self.server_time()
            once = list({id(link): link for link in flush}.values())  # a link written several threads: flushed once
            self.flush_udp([link.key for link in once if link.transport == UDP], now)
            for link in once:
                if link.transport != UDP:
                    link.flush(now)

    def on_thread_ack(self, live: LiveRoom, key: int, newest: int, bits: int, thread: object = 0) -> None:
        """A client's ``thread_ack`` (over UDP) of thread ``thread`` (the message's field; absent, 0): the versions
        of it the client applied become its baselines. An id out of range or unknown is counted, not raised."""
        track = self.threads.get(live)
        try:
            stream = None if track is None else track.streams.get(thread_id(thread))
        except ThreadError:
            stream = None
        if stream is None:
            self.counters["thread_acks_unknown"] += 1
        elif key in stream.clients:
            stream.on_ack_fields(key, newest, bits)

    # --- snapshots encoded on the room's thread ----------------------------------------------------------

    def attach_room_thread(self, live: LiveRoom) -> None:
        """From the next tick on, encode the room's snapshots on its thread after each step (idempotent)."""
        ticker = live.ticker
        if ticker is None or ticker.after_step is not None:
            return
        ticker.before_step = functools.partial(self.snapshot_context, live)
        ticker.after_step = functools.partial(self.prepare_snapshots, live)

    def snapshot_context(self, live: LiveRoom) -> SnapshotContext | None:
        """On the reactor, as the step is handed over: each client's focus and the object ids of the room's
        instruments and heads (the reactor owns them), and who gets a snapshot; None: nothing to prepare."""
        if not live.clients or live.ending:
            return None
        for client in list(live.clients.values()):
            live.set_focus(client)
            if client.head is not None:
                live.head_object(client.identity.participant)
        for key in live.room.instruments():
            live.instrument_object(key)
        sync = live.sync
        keys = tuple(key for key in live.clients if key in sync.clients)
        observers = frozenset(key for key, c in live.clients.items() if c.identity.role is Role.OBSERVER)
        return SnapshotContext(keys, observers, self.observer_every(live.room.scenario.tick_hz))

    def prepare_snapshots(
        self, live: LiveRoom, report: StepReport | None, context: SnapshotContext
    ) -> PreparedSnapshots | None:
        """On the room's thread after its step: the frame and every client's snapshot (None: the reactor
        encodes this tick, after a topology change or with objects the reactor has not given ids yet)."""
        if report is None or report.topology:
            return None
        room, sync = live.room, live.sync
        if any(instrument_holder(key) not in live.object_ids for key in room.instruments()):
            return None
        clients = list(live.clients.values())
        if any(c.head is not None and c.identity.participant not in live.head_ids for c in clients):
            return None
        try:
            rigid = self.rigid_set(live)
        except RuntimeError:  # the audience changed while it was read: the reactor encodes this tick
            return None
        every = context.watch_every
        with sync.lock:
            sync.begin_frame(self.server_time(), room.physics.x[sync.layout.vertex_ids], rigid)
            seq = sync.sequence
            codecs, observers = sync.clients, context.observers
            keys = [
                key
                for key in context.keys
                if key in codecs and not (every > 1 and key in observers and (seq + key) % every)
            ]
            # every client's snapshot in one nogil call (one GIL round trip for the room's frame, not one each)
            return PreparedSnapshots(sync.epoch, seq, dict(zip(keys, sync.encode_many(keys), strict=True)))

    def take_prepared(self, live: LiveRoom) -> PreparedSnapshots | None:
        """This tick's snapshots from the room's thread if they still hold (same epoch, no frame since), and
        from the next tick on they will be prepared there (``encode_on_room_thread``)."""
        ticker = live.ticker
        if ticker is None or not self.encode_on_room_thread:
            return None
        self.attach_room_thread(live)
        prepared = ticker.take_prepared()
        if not isinstance(prepared, PreparedSnapshots):
            return None
        sync = live.sync
        if prepared.epoch != sync.epoch or prepared.sequence != sync.sequence:
            self.counters["prepared_snapshots_dropped"] += 1  # like a lost packet for those clients
            return None
        self.counters["prepared_snapshot_ticks"] += 1
        return prepared

    def publish_forces(self, live: LiveRoom, now: float) -> None:
        """This tick's instrument and grasp forces (unreliable ``forces``): each participant its own instruments',
        each mentor every instrument's (in messages of at most ``MAX_FORCE_INSTRUMENTS``)."""
        instruments = live.room.instruments()
        if not instruments:
            return
        rows: dict[int, list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]] = {}
        for key, inst in instruments.items():
            pull = inst.grasp.force if inst.grasp is not None else _NO_FORCE
            row = (live.instrument_object(key), inst.force, pull, inst.position)
            rows.setdefault(holder_participant(key), []).append(row)
        tick = live.sync.sequence
        everyone: list[Message] | None = None
        own = OwnForces(tick, now, rows)
        for client in list(live.clients.values()):
            identity = client.identity
            if identity.role is Role.MENTOR:
                if everyone is None:
                    everyone = force_messages(tick, now, [r for group in rows.values() for r in group])
                messages = everyone
            elif identity.participant in rows:
                messages = own.messages(identity.participant)
            else:
                continue
            for message in messages:
                client.link.send(Channel.UNRELIABLE, message)
            self.counters["force_messages"] += len(messages)

    def observer_every(self, tick_hz: float) -> int:
        """Observers get every n-th snapshot (``observer_snapshot_hz``; 0: every tick): they only watch, and
        their headsets interpolate between snapshots whatever the rate."""
        hz = self.observer_snapshot_hz
        return max(1, round(tick_hz / hz)) if hz > 0 else 1

    @staticmethod
    def rigid_set(live: LiveRoom) -> RigidSet:
        """The room's instruments (wire quaternion order, jaws clamped), tracked headsets and suture needle as rigid
        objects."""
        instruments = live.room.instruments()
        heads = [(c.identity.participant, c.head) for c in live.clients.values() if c.head is not None]
        if not instruments and not heads and live.room.suturing is None:
            return RigidSet.empty()
        n = len(instruments)
        ids, jaws = np.empty(n, np.int64), np.empty(n)
        positions, orientations = np.empty((n, 3)), np.empty((n, 4))
        for j, (key, inst) in enumerate(instruments.items()):
            ids[j] = live.instrument_object(key)
            positions[j] = inst.position
            orientations[j] = inst.orientation
            jaws[j] = min(max(float(inst.jaw), 0.0), MAX_JAW) if inst.spec.has_jaw else math.nan
        kinds = np.full(n, int(RigidKind.INSTRUMENT), np.int64)
        orientations = to_wire_quat(orientations) if n else orientations
        if heads:
            by_id = {live.head_object(pid): pose for pid, pose in heads}  # one per participant (rejoins overlap)
            extra = [(oid, pose) for oid, pose in by_id.items() if oid is not None]
            if extra:
                ids = np.concatenate([ids, np.array([oid for oid, _ in extra], np.int64)])
                kinds = np.concatenate([kinds, np.full(len(extra), int(RigidKind.HEAD), np.int64)])
                positions = np.concatenate([positions, np.array([p.position for _, p in extra], np.float64)])
                orientations = np.concatenate([orientations, np.array([p.rotation for _, p in extra], np.float64)])
                jaws = np.concatenate([jaws, np.full(len(extra), math.nan)])
        suturing = live.room.suturing
        needle = suturing.needle if suturing is not None else None
        if needle is not None and np.isfinite(needle.position).all() and np.isfinite(needle.orientation).all():
            # the needle: its pose (its shape goes in snap_suture), no jaw
            ids = np.concatenate([ids, np.array([NEEDLE_OBJECT], np.int64)])
            kinds = np.concatenate([kinds, np.array([int(RigidKind.NEEDLE)], np.int64)])
            positions = np.concatenate([positions, np.asarray(needle.position, np.float64).reshape(1, 3)])
            orientations = np.concatenate([orientations, to_wire_quat(np.asarray(needle.orientation)).reshape(1, 4)])
            jaws = np.concatenate([jaws, [math.nan]])
        return RigidSet(ids, kinds, positions, orientations, jaws)


class _ThreadSync:
    """A room's suture thread streams (one per thread id: the live thread 0 and the tied pieces cut off it; a thread
    that is gone stays as a stream of 0 points, so the clients stop drawing it) and, per snapshot client, its
    budget before the threads' share."""

    def __init__(self, suturing: Suturing) -> None:
        self.suturing = suturing
        self.streams: dict[int, ThreadStream] = {}
        self.budgets: dict[object, tuple[ClientSync, object, int | None]] = {}  # key -> (codec client, history, budget)

    @property
    def stream(self) -> ThreadStream | None:
        """The live thread's stream (id 0)."""
        return self.streams.get(0)

    def begin_frame(self, seq: int, time: float, threads, config) -> dict[int, ThreadStream]:
        """This frame's threads ((id, points) pairs) into their streams (made for a new id; ids are bounded by
        MAX_THREADS, ValueError beyond); returns the streams by id, ascending."""
        now = dict(threads)
        for tid in now:
            if tid not in self.streams:
                thread_id(tid)  # a ThreadError (ValueError) beyond the protocol's ids
                self.streams[tid] = ThreadStream(config)
        for tid, stream in self.streams.items():
            stream.begin_frame(seq, time, now.get(tid, _NO_POINTS))
        self.streams = dict(sorted(self.streams.items()))
        return self.streams

    def follow(self, key: object, codec: ClientSync) -> tuple[bool, int | None]:
        """(whether the client's thread streams start now, its snapshot budget without the threads). They start
        with a new codec client or one whose baselines were forgotten (``reset_client`` gives it a new history;
        a cut's carry-over keeps it): then the threads' baselines go too."""
        entry = self.budgets.get(key)
        history = codec.history
        if entry is not None and entry[0] is codec and entry[1] is history:
            return False, entry[2]
        budget = entry[2] if entry is not None and entry[0] is codec else codec.budget_bytes
        self.budgets[key] = (codec, history, budget)
        for stream in self.streams.values():
            stream.reset_client(key)
        return True, budget

    def release(self, live: LiveRoom) -> None:
        """Give the snapshot clients their whole budgets back (the suture is gone)."""
        for key, (codec, _history, budget) in self.budgets.items():
            if live.sync.clients.get(key) is codec:
                codec.budget_bytes = budget
        self.budgets.clear()


_NO_POINTS = np.zeros((0, 3))


def _suture_fields(suturing: Suturing) -> dict:
    """``snap_suture``: the needle's rigid object id and shape, the thread's radius."""
    spec, thread = suturing.needle.spec, suturing.thread.spec
    return {
        "needle": NEEDLE_OBJECT,
        "radius": float(spec.radius),
        "arc": float(spec.arc_angle),
        "wire_radius": float(spec.wire_radius),
        "thread_radius": float(thread.radius),
    }


_NO_FORCE = np.zeros(3)


@dataclass(frozen=True, slots=True)
class SnapshotContext:
    """What the reactor hands to the room's thread with a step: the link keys that get snapshots, the
    observers among them, and the observers' rate (every n-th tick)."""

    keys: tuple[int, ...]
    observers: frozenset[int]
    watch_every: int


@dataclass(frozen=True, slots=True)
class PreparedSnapshots:
    """A room's snapshots encoded on its thread after a step: the frame's epoch and sequence, the bytes by key."""

    epoch: int
    sequence: int
    snapshots: dict[int, bytes]


class OwnForces:
    """Each participant's own ``forces`` messages of a tick: the room's instruments quantized once (one
    ``force_fields`` for all, rows grouped by participant) and each participant's rows cut out of its byte fields
    (quantizing is per value, so the bytes are those of ``force_messages`` of its rows alone); a room with more
    than ``MAX_FORCE_INSTRUMENTS`` instruments goes participant by participant."""

    def __init__(self, tick: int, now: float, rows: dict[int, list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]]):
        self.tick, self.now, self.rows = tick, now, rows
        self.whole: dict | None = None
        self.spans: dict[int, tuple[int, int]] = {}

    def messages(self, participant: int) -> list[Message]:
        rows = self.rows
        if sum(len(group) for group in rows.values()) > MAX_FORCE_INSTRUMENTS:
            return force_messages(self.tick, self.now, rows[participant])
        whole = self.whole
        if whole is None:
            start = 0
            for pid, group in rows.items():
                self.spans[pid] = (start, start + len(group))
                start += len(group)
            whole = self.whole = _force_fields(self.tick, self.now, [r for group in rows.values() for r in group])
        a, b = self.spans[participant]
        fields = {
            "tick": whole["tick"],
            "server_time": whole["server_time"],
            "objects": whole["objects"][4 * a : 4 * b],
            "forces": whole["forces"][6 * a : 6 * b],
            "grasp": whole["grasp"][6 * a : 6 * b],
            "positions": whole["positions"][12 * a : 12 * b],
        }
        return [Message("forces", fields)]


def _force_fields(tick: int, now: float, rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """``forces`` fields of at most ``MAX_FORCE_INSTRUMENTS`` (object id, force, grasp pull, position) rows."""
    objects, forces, pulls, positions = (np.array(column) for column in zip(*rows, strict=True))
    return force_fields(tick, now, objects, forces, pulls, positions)


def force_messages(tick: int, now: float, rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> list[Message]:
    """``forces`` messages of (object id, force, grasp pull, position) rows, ``MAX_FORCE_INSTRUMENTS`` each."""
    out = []
    for start in range(0, len(rows), MAX_FORCE_INSTRUMENTS):
        out.append(Message("forces", _force_fields(tick, now, rows[start : start + MAX_FORCE_INSTRUMENTS])))
    return out
