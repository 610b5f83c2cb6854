"""``ThinClient``: clock sync + interpolation + inputs + prediction, combined into a render state.

Why: this is the one object a headset (or a bot, or a load test) keeps. It never touches a socket or
reads a clock: every call takes ``local_now`` (seconds on the client's monotonic clock). Feed it

- the state-sync messages (``on_snapshot_message``: with a snapshot decoder given at construction, which
  decodes them; the snapshots it applies become ``SnapshotObject``s through ``adapters``), or decoded
  snapshot objects (``on_snapshot``, one call per snapshot packet) from a decoder of the caller's,
- input acks, grasps and releases (``on_input_ack``, ``on_grasp``, ``on_release``, or all of them, and the
  state-sync messages, through ``dispatch`` from a ``netcode.messaging.peers.ClientChannels`` delivery),
- local tracking once per display frame (``track``, which returns the input packet to send),
- the suture's messages (``on_suture``, ``on_thread_message``, or ``dispatch``: the needle's shape, the thread per
  frame, SNAPSHOT.md section 6; ``send_thread_ack`` acks the thread, or asks for a resync when it lost a baseline),

send the ``snap_ack`` of what the decoder applied (``send_snapshot_ack``, once per frame), and ask
``render_state(local_now)`` for what to draw:

- own devices (``own_objects``: object id -> device id) from local tracking, never from the server;
- patches held by one of our grasps: newest authoritative + response-model prediction, reconciled;
- every other object from its interpolation buffer at ``render_time = server_now - (latency + delay)``; a patch
  just released is blended from its predicted to its interpolated state by the same reconciliation.

The adaptive delay measures snapshot transit through the synchronised clock, so when the clock steps (its
first exchange, or a forward jump) the delay starts measuring afresh. A patch of an older topology epoch
than the newest seen is dropped; a newer epoch clears
the patches (their vertex indexing changed) and ends held-tissue prediction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from netcode.messaging.channels import Channel
from netcode.messaging.connection import Delivery
from netcode.messaging.messages import Message
from netcode.messaging.peers import ClientChannels
from netcode.protocol.inputs import InputAck
from netcode.protocol.poses import RigidPose, interpolate_pose, interpolate_vertices
from netcode.protocol.response_model import ResponseModel, ResponseModelError
from netcode.protocol.schema import input_ack_from_fields, response_model_from_fields
from netcode.sync.thread_polyline import ThreadBaselineMissingError, ThreadDecoder, ThreadError, ThreadSet, thread_id
from netcode.thin_client.adapters import from_decoded_snapshot
from netcode.thin_client.clock_sync import ClockSync, ClockSyncConfig
from netcode.thin_client.input_sender import InputSender, InputSenderConfig
from netcode.thin_client.interpolation import (
    AdaptiveDelay,
    BufferConfig,
    DelayConfig,
    Insert,
    InterpolationBuffer,
    Mode,
)
from netcode.thin_client.prediction import (
    HeldTissue,
    PoseHistory,
    Reconciler,
    authoritative_jaw,
)
from netcode.thin_client.render_state import (
    ObjectKind,
    RenderObject,
    RenderState,
    SnapshotObject,
    Source,
    SutureShape,
)

_MODE_SOURCE = {
    Mode.INTERPOLATED: Source.INTERPOLATED,
    Mode.EXTRAPOLATED: Source.EXTRAPOLATED,
    Mode.HELD: Source.HELD,
    Mode.EARLY: Source.HELD,
}


# The state-sync messages a snapshot decoder takes (netcode.sync.snapshot_messages; SNAPSHOT.md).
SNAPSHOT_MESSAGES = frozenset({"snap_config", "snap_topology", "snap_predictor", "snapshot"})
# The suture's (netcode/sync/thread_polyline.py, SNAPSHOT.md section 6): its shape, then the thread per frame.
THREAD_MESSAGES = frozenset({"snap_suture", "snap_thread"})
MAX_PENDING_GRASPS = 8  # grasps kept waiting for their epoch (a room has a few instruments)


class SnapshotDecoding(Protocol):
    """What ``ThinClient`` needs of a snapshot decoder (``netcode.sync.snapshot_decode.SnapshotDecoder``)."""

    def on_message(self, data: bytes) -> list[Any]:
        """Apply one state-sync message; the decoded snapshots it made applicable (a ValueError, the codec's
        SnapshotError, for a bad one)."""
        ...

    def ack_fields(self) -> dict[str, int]:
        """The ``snap_ack`` fields of what was applied."""
        ...


@dataclass(frozen=True)
class ThinClientConfig:
    devices: tuple[int, ...]  # tracked device ids, in input-packet slot order
    own_objects: Mapping[int, int] = field(default_factory=dict)  # snapshot object id -> device id
    clock: ClockSyncConfig = field(default_factory=ClockSyncConfig)
    delay: DelayConfig = field(default_factory=DelayConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    inputs: InputSenderConfig = field(default_factory=InputSenderConfig)
    reconcile_tau: float = 0.12  # seconds
    max_objects: int = 4096  # buffers kept; objects beyond this are ignored


class ThinClient:
    """The thin client's state; see the module doc."""

    def __init__(self, config: ThinClientConfig, decoder: SnapshotDecoding | None = None) -> None:
        """``decoder``: the snapshot decoder that ``on_snapshot_message`` and ``dispatch`` feed (e.g. a
        ``SnapshotDecoder``); without one, the caller decodes and feeds ``on_snapshot`` itself."""
        self.config = config
        self.decoder = decoder
        self.own_objects: dict[int, int] = dict(config.own_objects)  # grows with ``own``
        self.snapshot_ack_due = False  # the decoder applied a snapshot since the last snap_ack
        self.clock = ClockSync(config.clock)
        self.delay = AdaptiveDelay(config.delay)
        self.inputs = InputSender(config.devices, config.inputs)
        self.buffers: dict[int, InterpolationBuffer] = {}
        self.kinds: dict[int, ObjectKind] = {}
        self.epoch = 0
        self.grasps: dict[int, HeldTissue] = {}
        # Grasps of an epoch newer than ours (their reliable message came before the unreliable snapshot that
        # brings the epoch): started when it comes. A few at most; the oldest goes first.
        self._pending_grasps: dict[int, ResponseModel] = {}
        self.tracking: dict[int, RigidPose] = {}
        self._server_poses: dict[int, PoseHistory] = {}  # own objects as the server saw them
        self._local_poses: dict[int, PoseHistory] = {}  # own devices by estimated server apply time
        self._handoff: dict[int, Reconciler] = {}  # patches blending back from prediction
        self._last_drawn: dict[int, np.ndarray] = {}
        self._render_time = -np.inf
        self.suture: SutureShape | None = None  # the room's needle and thread shapes (snap_suture)
        self.threads: ThreadSet | None = None  # the threads' decoders by id, made with the snapshot decoder's config
        self.thread = InterpolationBuffer(interpolate_vertices, config.buffer)  # the live thread's points (id 0)
        self.thread_buffers: dict[int, InterpolationBuffer] = {0: self.thread}  # every thread's, by id
        self.thread_acks_due: set[int] = set()  # threads with a message applied since their last thread_ack
        self.resync_due = False  # a thread delta named a version we lack: ask for full records (snap_resync)
        self.dropped = {
            "epoch": 0,
            "invalid": 0,
            "late": 0,
            "duplicate": 0,
            "kind": 0,
            "capacity": 0,
            "snapshot": 0,
            "thread": 0,
        }

    def own(self, object_id: int, device: int) -> None:
        """Snapshot object ``object_id`` is tracked by our ``device`` (e.g. learnt from the server's welcome)."""
        if device not in self.config.devices:
            raise ValueError(f"device {device} is not one of the tracked devices {self.config.devices}")
        self.own_objects[int(object_id)] = int(device)

    # ------------------------------------------------------------------ time

    def server_now(self, local_now: float) -> float:
        return self.clock.server_now(local_now)

    def render_time(self, local_now: float) -> float:
        """``server_now - (latency + delay)`` (interpolation.py), never decreasing."""
        self._render_time = max(self._render_time, self.server_now(local_now) - self.delay.lag(local_now))
        return self._render_time

    # ------------------------------------------------------------------ inputs

    def track(self, local_now: float, poses: Mapping[int, RigidPose | None]) -> bytes | None:
        """This display frame's tracking (device id -> pose, None = lost); returns the input packet to send."""
        server_apply = self.server_now(local_now) + (self.clock.rtt or 0.0) / 2.0
        for device, pose in poses.items():
            if pose is not None and pose.is_finite():
                self.tracking[device] = pose
                self._local_poses.setdefault(device, PoseHistory()).add(server_apply, pose)
            else:
                self.tracking.pop(device, None)  # lost: own objects fall back to snapshots
        self.inputs.add_sample(local_now, poses)
        return self.inputs.packet(local_now)

    def on_input_ack(self, ack: InputAck, local_now: float) -> None:
        """An ack: forget acked samples, and use the exchange as a clock-sync sample."""
        sent = self.inputs.on_ack(ack)
        if sent is not None:
            steps = self.clock.steps
            self.clock.add_exchange(sent, ack.server_time - ack.hold, ack.server_time, local_now)
            if self.clock.steps != steps:  # the offset jumped (e.g. the first exchange after snapshots came):
                self.delay = AdaptiveDelay(self.config.delay)  # transits measured through the old one mislead

    # ------------------------------------------------------------------ snapshots

    def on_snapshot(self, objects: Iterable[SnapshotObject], local_now: float) -> int:
        """Feed one snapshot packet's decoded objects; returns how many were accepted."""
        objects = list(objects)
        if not objects:
            return 0
        newest = max(o.server_time for o in objects)
        self.delay.on_snapshot(newest, self.server_now(local_now))
        return sum(self._on_object(o, local_now) for o in objects)

    def on_snapshot_message(self, data: bytes, local_now: float) -> list[Any]:
        """A state-sync message (``SNAPSHOT_MESSAGES``) into the decoder; every snapshot it applied goes to
        ``on_snapshot``. Returns those decoded snapshots; raises the decoder's SnapshotError (a ValueError) for a
        bad message and RuntimeError without a decoder."""
        if self.decoder is None:
            raise RuntimeError("this ThinClient has no snapshot decoder: feed on_snapshot instead")
        applied = self.decoder.on_message(data)
        for snapshot in applied:
            self.on_snapshot(from_decoded_snapshot(snapshot), local_now)
        if applied:
            self.snapshot_ack_due = True
        return applied

    def send_snapshot_ack(self, channels: ClientChannels) -> bool:
        """One ``snap_ack`` (unreliable) for what the decoder applied since the last one; False if none due."""
        if not self.snapshot_ack_due or self.decoder is None:
            return False
        self.snapshot_ack_due = False
        return channels.send(Channel.UNRELIABLE, Message("snap_ack", self.decoder.ack_fields()))

    @property
    def thread_decoder(self) -> ThreadDecoder | None:
        """The live thread's decoder (id 0; None before its first message)."""
        return None if self.threads is None else self.threads.decoders.get(0)

    @property
    def thread_ack_due(self) -> bool:
        return bool(self.thread_acks_due)

    def on_suture(self, fields: Mapping[str, Any]) -> None:
        """``snap_suture``: the needle's object id and the shapes; a new suture stream starts (ValueError if bad):
        every thread is forgotten (the live one's buffer kept empty, the tied pieces' dropped)."""
        self.suture = SutureShape.from_fields(dict(fields))
        self.thread.clear()
        self.thread_buffers = {0: self.thread}
        self.thread_acks_due.clear()
        if self.threads is not None:
            self.threads.reset()

    def on_thread_message(self, data: bytes, local_now: float, thread: object = 0) -> bool:
        """One ``snap_thread`` payload (of thread id ``thread``: the message's field, 0 when absent) into that
        thread's decoder; True if it is that thread's newest now. Raises ThreadError (a ValueError) for a bad one
        or an id out of range, state unchanged; one whose baseline we lack also marks a resync due
        (``send_thread_ack`` sends it)."""
        key = thread_id(thread)
        if self.threads is None:
            config = getattr(self.decoder, "config", None)
            if config is None:
                raise ThreadError("snap_thread before snap_config")
            self.threads = ThreadSet(config)
        decoder = self.threads.decoder(key)
        try:
            newest = decoder.apply(data)
        except ThreadBaselineMissingError:
            self.resync_due = True
            decoder.reset()
            raise
        self.thread_acks_due.add(key)
        if newest:
            buffer = self.thread_buffers.get(key)
            if buffer is None:
                buffer = self.thread_buffers[key] = InterpolationBuffer(interpolate_vertices, self.config.buffer)
            buffer.insert(decoder.time, decoder.points())
        return newest

    def send_thread_ack(self, channels: ClientChannels) -> bool:
        """The ``thread_ack`` of each thread with messages applied (unreliable, once per frame; ``thread`` only
        for ids above 0), or the ``snap_resync`` a lost thread baseline needs (reliable); False if none was due."""
        if self.resync_due:
            self.resync_due = False
            self.thread_acks_due.clear()
            return channels.send(Channel.RELIABLE, Message("snap_resync", {"reason": "thread baseline"}))
        if not self.thread_acks_due or self.threads is None:
            return False
        sent = False
        for key in sorted(self.thread_acks_due):
            fields = self.threads.decoder(key).ack_fields()
            if key:
                fields["thread"] = key
            sent = channels.send(Channel.UNRELIABLE, Message("thread_ack", fields)) or sent
        self.thread_acks_due.clear()
        return sent

    def _on_object(self, obj: SnapshotObject, local_now: float) -> bool:
        if not obj.valid():
            self.dropped["invalid"] += 1
            return False
        if obj.kind is ObjectKind.PATCH:  # rigid poses do not depend on the surface topology
            if obj.epoch < self.epoch:
                self.dropped["epoch"] += 1
                return False
            if obj.epoch > self.epoch:
                self._new_epoch(obj.epoch, local_now)
        oid = obj.object_id
        kind = self.kinds.get(oid)
        if kind is None:
            if len(self.buffers) >= self.config.max_objects:
                self.dropped["capacity"] += 1
                return False
            interpolate = interpolate_pose if obj.kind is ObjectKind.RIGID else interpolate_vertices
            self.buffers[oid] = InterpolationBuffer(interpolate, self.config.buffer)
            self.kinds[oid] = kind = obj.kind
        elif kind is not obj.kind:
            self.dropped["kind"] += 1
            return False
        state = obj.pose if kind is ObjectKind.RIGID else np.asarray(obj.vertices, dtype=np.float64)
        if oid in self.own_objects:
            self._server_poses.setdefault(oid, PoseHistory()).add(obj.server_time, obj.pose)
        result = self.buffers[oid].insert(obj.server_time, state)
        if kind is ObjectKind.PATCH:
            for grasp in self.grasps.values():
                if oid in grasp.patch_ids:
                    jaw = self._jaw_at(grasp.model, obj.server_time)
                    if jaw is not None:
                        grasp.on_authoritative(oid, obj.server_time, state, jaw, local_now, self._last_drawn.get(oid))
                    break
        if result is Insert.INSERTED:
            return True
        self.dropped["late" if result is Insert.LATE else "duplicate"] += 1
        return False

    def _new_epoch(self, epoch: int, local_now: float) -> None:
        self.epoch = epoch
        for oid in [o for o, k in self.kinds.items() if k is ObjectKind.PATCH]:
            del self.buffers[oid], self.kinds[oid]
        self.grasps.clear()
        pending, self._pending_grasps = self._pending_grasps, {}
        for model in pending.values():
            if model.epoch > epoch:
                self._pending_grasps[model.grasp_id] = model
            elif model.epoch == epoch:
                self.on_grasp(model, local_now)
        self._handoff.clear()
        self._last_drawn.clear()

    def _jaw_at(self, model: ResponseModel, server_time: float) -> RigidPose | None:
        return authoritative_jaw(
            self._server_poses.get(model.instrument, PoseHistory()),
            self._local_poses.get(model.device, PoseHistory()),
            server_time,
        )

    # ------------------------------------------------------------------ grasps

    def on_grasp(self, model: ResponseModel, local_now: float) -> bool:
        """A grasp started: predict its patches from now on, or once its epoch arrives if it is newer than ours
        (False for an older epoch: its vertex indices name a surface that is gone)."""
        if model.epoch < self.epoch:
            return False
        if model.epoch > self.epoch:
            self._pending_grasps.pop(model.grasp_id, None)
            self._pending_grasps[model.grasp_id] = model
            while len(self._pending_grasps) > MAX_PENDING_GRASPS:
                self._pending_grasps.pop(next(iter(self._pending_grasps)))
            return True
        held = HeldTissue(model, self.config.reconcile_tau)
        self.grasps[model.grasp_id] = held
        for pid in held.patch_ids:
            buffer = self.buffers.get(pid)
            newest = buffer.newest() if buffer is not None else None
            jaw = self._jaw_at(model, newest[0]) if newest is not None else None
            if newest is not None and jaw is not None:
                held.on_authoritative(pid, newest[0], newest[1], jaw, local_now, self._last_drawn.get(pid))
            self._handoff.pop(pid, None)
        return True

    def on_release(self, grasp_id: int, local_now: float) -> None:
        """A grasp ended: its patches go back to interpolation, blended from where they are drawn."""
        self._pending_grasps.pop(grasp_id, None)
        held = self.grasps.pop(grasp_id, None)
        if held is None:
            return
        for pid in held.patch_ids:
            drawn = self._last_drawn.get(pid)
            buffer = self.buffers.get(pid)
            if drawn is None or buffer is None:
                continue
            sampled = buffer.sample(self.render_time(local_now))
            if sampled is not None:
                reconciler = Reconciler(self.config.reconcile_tau)
                reconciler.correct(drawn, sampled[0], local_now)
                self._handoff[pid] = reconciler

    # ------------------------------------------------------------------ render

    def render_state(self, local_now: float) -> RenderState:
        """What to draw at ``local_now`` (see the module doc)."""
        server_now = self.server_now(local_now)
        render_time = self.render_time(local_now)
        delay = self.delay.delay(local_now)
        out: dict[int, RenderObject] = {}
        for grasp in self.grasps.values():
            jaw = self.tracking.get(grasp.model.device) or grasp.last_jaw  # tracking lost: hold the last jaw
            if jaw is None:
                continue
            for pid, vertices in grasp.display(jaw, local_now).items():
                if pid not in out:
                    out[pid] = RenderObject(pid, ObjectKind.PATCH, Source.PREDICTED, vertices=vertices)
        for oid, device in self.own_objects.items():
            pose = self.tracking.get(device)
            if pose is not None:
                out[oid] = RenderObject(oid, ObjectKind.RIGID, Source.TRACKED, pose=pose)
        for oid, buffer in self.buffers.items():
            if oid in out:
                continue
            sampled = buffer.sample(render_time)
            if sampled is None:
                continue
            state, mode = sampled
            kind = self.kinds[oid]
            if kind is ObjectKind.RIGID:
                out[oid] = RenderObject(oid, kind, _MODE_SOURCE[mode], pose=state)
            else:
                handoff = self._handoff.get(oid)
                if handoff is not None:
                    state = handoff.apply(state, local_now)
                    if handoff.offset(local_now) is None:
                        del self._handoff[oid]
                out[oid] = RenderObject(oid, kind, _MODE_SOURCE[mode], vertices=state)
        for oid, obj in out.items():
            if obj.kind is ObjectKind.PATCH:
                self._last_drawn[oid] = obj.vertices
        threads: dict[int, np.ndarray] = {}
        if self.suture is not None:
            for key, buffer in self.thread_buffers.items():
                sampled = buffer.sample(render_time)
                if sampled is not None and len(sampled[0]):
                    threads[key] = sampled[0]
        sampled = self.thread.sample(render_time) if self.suture is not None else None
        thread = sampled[0] if sampled is not None else None
        return RenderState(local_now, server_now, render_time, delay, self.delay.latency, out, thread, self.suture,
                           threads)  # fmt: skip

    # ------------------------------------------------------------------ network side

    def dispatch(self, delivery: Delivery, local_now: float) -> bool:
        """Handle a ``ClientChannels`` delivery of ours (input_ack, grasp, release, and with a decoder the
        state-sync and suture messages); False otherwise.

        The channels must decode with ``schema.THIN_CLIENT_REGISTRY`` (or a registry extended by
        ``register_thin_client_types``). A malformed grasp or state-sync message is dropped (counted in
        ``dropped``), never raised.
        """
        message = delivery.message
        if message is None:
            return False
        if message.type in SNAPSHOT_MESSAGES and self.decoder is not None:
            try:
                self.on_snapshot_message(delivery.data, local_now)
            except ValueError:  # the codec's SnapshotError; the decoder kept its state
                self.dropped["snapshot"] += 1
        elif message.type in THREAD_MESSAGES and self.decoder is not None:
            try:
                if message.type == "snap_suture":
                    self.on_suture(message.fields)
                else:
                    self.on_thread_message(message.fields["data"], local_now, message.fields.get("thread"))
            except ValueError:  # ThreadError or a bad shape; the thread decoder kept its state
                self.dropped["thread"] += 1
        elif message.type == "input_ack":
            self.on_input_ack(input_ack_from_fields(message.fields), local_now)
        elif message.type == "grasp":
            try:
                model = response_model_from_fields(message.fields)
            except ResponseModelError:
                self.dropped["invalid"] += 1
                return True
            self.on_grasp(model, local_now)
        elif message.type == "release":
            self.on_release(message.fields["grasp_id"], local_now)
        else:
            return False
        return True

    def send_frame(self, channels: ClientChannels, local_now: float, poses: Mapping[int, RigidPose | None]) -> bool:
        """``track`` and send the input packet on the unreliable channel; False when not sent."""
        packet = self.track(local_now, poses)
        return packet is not None and channels.send(Channel.UNRELIABLE, Message("input", {"p": packet}))
