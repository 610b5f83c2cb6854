"""The thin client's message types (msgpack envelope of netcode.messaging.messages) and their field conversions.

Why: inputs, input acks and grasp response models travel as ordinary channel messages, validated by a
``MessageRegistry``; this module registers them on a copy of ``DEFAULT_REGISTRY`` (the rehearsal
server registers them on its own registry with ``register_thin_client_types``) and converts between
message fields and the plain dataclasses the client logic uses. Snapshots are *not* here: they belong
to the snapshot codec, whose decoded objects are fed to ``ThinClient.on_snapshot`` by an adapter.

| type        | channel    | direction       | fields |
|-------------|------------|-----------------|--------|
| input       | unreliable | client->server  | p: bytes (<= 1,100; the binary layout of inputs.py) |
| input_ack   | unreliable | server->client  | seq: int, server_time: float (s), hold: float (s) |
| release     | reliable   | server->client  | grasp_id: int |
| grasp       | reliable   | server->client  | see below |
| snap_suture | reliable   | server->client  | needle: int (object id); radius, arc, wire_radius, thread_radius: float |
| snap_thread | unreliable | server->client  | data: bytes (<= 65,536; SNAPSHOT.md 6); thread: int (optional) |
| thread_ack  | unreliable | client->server  | newest: int, bits: int (as snap_ack); thread: int (optional) |

``thread`` says which of the room's threads (0 .. MAX_THREADS - 1: the live one on the needle is 0, the tied pieces
cut off it 1, 2, ...); absent means 0, so a room with one thread sends the same bytes as before threads had ids.

``grasp`` fields: grasp_id, instrument, device, epoch: int; server_time: float (s); baseline: 8 floats
[px, py, pz (m), qx, qy, qz, qw, jaw (rad)]; columns: int (3 or 6); objects, vertices: bytes (K x u32
LE); matrices: bytes (K x 3 x columns f32 LE, row-major).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from netcode.messaging.messages import DEFAULT_REGISTRY, Field, MessageRegistry
from netcode.protocol.inputs import InputAck
from netcode.protocol.poses import RigidPose
from netcode.protocol.response_model import MAX_RESPONSE_VERTICES, ResponseModel, ResponseModelError

MAX_INPUT_BYTES = 1100
MAX_THREAD_BYTES = 64 * 1024
"""Largest ``snap_thread`` payload (``netcode.sync.thread_polyline.MAX_THREAD_BYTES``; the layers are siblings)."""
MAX_THREADS = 16
"""Threads a room may have at once (``netcode.sync.thread_polyline.MAX_THREADS``): ``thread`` ids 0 .. 15."""


def register_thin_client_types(registry: MessageRegistry) -> MessageRegistry:
    """Add input, input_ack, grasp, release and the suture's messages to ``registry`` (returns it)."""
    registry.register(
        "input", Field("p", "bytes", max_length=MAX_INPUT_BYTES), doc="Redundant tracking samples (inputs.py)."
    )
    registry.register(
        "input_ack",
        Field("seq", "int"),
        Field("server_time", "float"),
        Field("hold", "float"),
        doc="Newest input sample the server has; its clock now and how long it held that sample.",
    )
    k = MAX_RESPONSE_VERTICES
    registry.register(
        "grasp",
        Field("grasp_id", "int"),
        Field("instrument", "int"),
        Field("device", "int"),
        Field("epoch", "int"),
        Field("server_time", "float"),
        Field("baseline", "list", max_length=8, items="float"),
        Field("columns", "int"),
        Field("objects", "bytes", max_length=4 * k),
        Field("vertices", "bytes", max_length=4 * k),
        Field("matrices", "bytes", max_length=4 * 18 * k),
        doc="A grasp started: the linear response model of the held tissue (prediction.py).",
    )
    registry.register("release", Field("grasp_id", "int"), doc="The grasp ended.")
    registry.register(
        "snap_suture",
        Field("needle", "int"),
        Field("radius", "float"),
        Field("arc", "float"),
        Field("wire_radius", "float"),
        Field("thread_radius", "float"),
        doc="The room's suture: the needle's rigid object id and shape, the thread's radius (before snap_thread).",
    )
    registry.register(
        "snap_thread",
        Field("data", "bytes", max_length=MAX_THREAD_BYTES),
        Field("thread", "int", required=False),
        doc="One frame of a suture thread (``thread``: its id, absent: 0): a quantized polyline, full or a delta "
        "(SNAPSHOT.md section 6).",
    )
    registry.register(
        "thread_ack",
        Field("newest", "int"),
        Field("bits", "int"),
        Field("thread", "int", required=False),
        doc="Thread frames applied by the client (of thread ``thread``, absent: 0).",
    )
    return registry


THIN_CLIENT_REGISTRY = register_thin_client_types(DEFAULT_REGISTRY.copy())


def response_model_fields(model: ResponseModel) -> dict[str, Any]:
    """The ``grasp`` message fields of a response model."""
    b = model.baseline
    return {
        "grasp_id": model.grasp_id,
        "instrument": model.instrument,
        "device": model.device,
        "epoch": model.epoch,
        "server_time": float(model.server_time),
        "baseline": [*map(float, b.position), *map(float, b.rotation), float(b.jaw)],
        "columns": model.columns,
        "objects": model.objects.astype("<u4").tobytes(),
        "vertices": model.vertices.astype("<u4").tobytes(),
        "matrices": model.matrices.astype("<f4").tobytes(),
    }


def response_model_from_fields(fields: Mapping[str, Any]) -> ResponseModel:
    """A validated ``ResponseModel`` from ``grasp`` fields; raises ``ResponseModelError`` when inconsistent."""
    columns = fields["columns"]
    if columns not in (3, 6):
        raise ResponseModelError(f"columns must be 3 or 6, got {columns}")
    objects, vertices, matrices = fields["objects"], fields["vertices"], fields["matrices"]
    if len(objects) % 4 or len(objects) != len(vertices):
        raise ResponseModelError("objects and vertices must be equal-length u32 arrays")
    k = len(objects) // 4
    if len(matrices) != k * 3 * columns * 4:
        raise ResponseModelError(f"matrices is {len(matrices)} bytes, expected {k * 3 * columns * 4}")
    baseline = fields["baseline"]
    if len(baseline) != 8:
        raise ResponseModelError("baseline must hold 8 floats")
    return ResponseModel(
        grasp_id=fields["grasp_id"],
        instrument=fields["instrument"],
        device=fields["device"],
        objects=np.frombuffer(objects, dtype="<u4"),
        vertices=np.frombuffer(vertices, dtype="<u4"),
        matrices=np.frombuffer(matrices, dtype="<f4").reshape(k, 3, columns),
        baseline=RigidPose(baseline[0:3], baseline[3:7], baseline[7]),
        server_time=fields["server_time"],
        epoch=fields["epoch"],
    )


def input_ack_fields(ack: InputAck) -> dict[str, Any]:
    return {"seq": ack.seq, "server_time": float(ack.server_time), "hold": float(ack.hold)}


def input_ack_from_fields(fields: Mapping[str, Any]) -> InputAck:
    return InputAck(int(fields["seq"]), float(fields["server_time"]), float(fields["hold"]))
