"""Channel messages of state sync (msgpack schemas on top of ``messages.py``), see SNAPSHOT.md.

* ``snap_config``   (reliable, at join): the quantization both ends use.
* ``snap_topology`` (reliable): a topology epoch: the patch layout, and what changed (a cut) or, with
  cause ``"full"``, the whole triangle list (join, reconnect, resync). Mirrors the fields of
  physics' TopologyChange (epoch, cause, instrument, removed/added triangles) without importing it.
* ``snap_predictor`` (reliable): a motion predictor (``motion_predictor.py``): id, mesh vertex ids and
  int16 gains; snapshots whose drive record names it need it (a decoder holds them until it arrives).
* ``snapshot``      (unreliable): ``data`` = one snapshot (snapshot.py's binary format).
* ``snap_ack``      (unreliable, client -> server): ``newest`` applied snapshot sequence and ``bits``,
  bit i set = snapshot ``newest - 1 - i`` was applied too (32 bits, redundancy instead of resends).
* ``snap_resync``   (reliable, client -> server): the client lost a baseline; send everything in full.

Integer arrays travel as ``bytes``: little-endian int32, differences from the previous value (so ids
that increase compress well), zlib-compressed. A decoder bounds the decompressed size before inflating.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import msgpack
import numpy as np

from netcode.messaging.messages import DEFAULT_REGISTRY, SCHEMA_VERSION, Field, MessageError
from netcode.sync.motion_predictor import MAX_PREDICTOR_VERTICES, Predictor, pack_gains, unpack_gains
from netcode.sync.patches import MAX_PATCH_SIZE, PatchLayout
from netcode.sync.snapshot import CodecConfig, SnapshotError

MAX_ARRAY_ITEMS = 4_000_000
"""Largest id array a decoder inflates (16 MB of int32)."""
CAUSES = ("full", "cut", "burn")

SNAPSHOT_REGISTRY = DEFAULT_REGISTRY.copy()
SNAPSHOT_REGISTRY.register(
    "snap_config",
    Field("max_error", "float"),
    Field("origin", "list", max_length=3, items="float"),
    Field("step", "float"),
    Field("rotation_bits", "int"),
    Field("jaw_lo", "float"),
    Field("jaw_hi", "float"),
    Field("jaw_bits", "int"),
    doc="Quantization of snapshots (reliable, before the first snapshot).",
)
SNAPSHOT_REGISTRY.register(
    "snap_topology",
    Field("epoch", "int"),
    Field("cause", "str", max_length=16),
    Field("instrument", "int", required=False),
    Field("removed_vertices", "bytes"),
    Field("removed_triangles", "bytes"),
    Field("added_triangles", "bytes"),
    Field("patch_offsets", "bytes"),
    Field("patch_vertices", "bytes"),
    Field("kept_patches", "bytes", required=False),
    doc="A topology epoch: patch layout plus the triangle changes (or all triangles when cause is 'full').",
)
SNAPSHOT_REGISTRY.register(
    "snap_predictor",
    Field("id", "int"),
    Field("vertex_ids", "bytes"),
    Field("gains", "bytes"),
    doc="A motion predictor: mesh vertex ids (ascending) and their 3x3 int16 gains (units of 2^-12).",
)
SNAPSHOT_REGISTRY.register("snapshot", Field("data", "bytes"), doc="One binary snapshot (unreliable).")
SNAPSHOT_REGISTRY.register(
    "snap_ack", Field("newest", "int"), Field("bits", "int"), doc="Snapshots applied by the client."
)
SNAPSHOT_REGISTRY.register(
    "snap_resync", Field("reason", "str", max_length=256), doc="Client asks for full records of everything."
)


@dataclass(frozen=True, slots=True)
class TopologyUpdate:
    """A topology epoch as sent to clients (layout + triangle changes, or all triangles when 'full')."""

    epoch: int
    cause: str
    instrument: int | None
    layout: PatchLayout
    removed_vertices: np.ndarray | None = None
    removed_triangles: np.ndarray | None = None
    added_triangles: np.ndarray | None = None
    kept_patches: np.ndarray | None = None
    """Patch ids identical to the previous epoch's (SNAPSHOT.md 1, layout edits); None: a whole layout.
    A parsed edit's ``layout`` holds only the other patches' vertices until ``resolve_layout``."""

    def resolve_layout(self, old: PatchLayout | None) -> PatchLayout:
        """The full layout of an edit (the kept patches' vertices taken from ``old``); SnapshotError if
        ``old`` does not have them or the sizes disagree. A whole layout is returned as is."""
        if self.kept_patches is None:
            return self.layout
        kept, offsets, listed = self.kept_patches, self.layout.offsets, self.layout.vertex_ids
        sizes = np.diff(offsets)
        if old is None or (len(kept) and (kept[-1] >= min(old.patch_count, len(sizes)))):
            raise SnapshotError("snap_topology: kept patches the previous layout does not have")
        if np.any(old.sizes[kept] != sizes[kept]):
            raise SnapshotError("snap_topology: a kept patch changed size")
        is_kept = np.zeros(len(sizes), bool)
        is_kept[kept] = True
        if int(sizes[~is_kept].sum()) != len(listed):
            raise SnapshotError("snap_topology: patch_vertices does not match the patches not kept")
        parts, at = [], 0
        for p in range(len(sizes)):
            if is_kept[p]:
                parts.append(old.vertex_ids[old.patch(p)])
            else:
                parts.append(listed[at : at + sizes[p]])
                at += int(sizes[p])
        layout = PatchLayout(np.concatenate(parts) if parts else listed, offsets)
        try:
            layout.validate(MAX_PATCH_SIZE)
        except ValueError as exc:
            raise SnapshotError(f"snap_topology: {exc}") from None
        return layout


def pack_ids(values: np.ndarray | None) -> bytes:
    """zlib(delta-coded little-endian int32) of an integer array (any shape, flattened)."""
    a = np.zeros(0, np.int64) if values is None else np.asarray(values, np.int64).reshape(-1)
    if a.size and (a.min() < 0 or a.max() > 2**31 - 1):
        raise ValueError("ids must be in 0..2^31-1")
    delta = np.diff(a, prepend=0).astype("<i4")
    return zlib.compress(delta.tobytes(), 6)


def unpack_ids(data: bytes, what: str, width: int = 1) -> np.ndarray:
    """Inverse of ``pack_ids`` (reshaped to (-1, width) when width > 1); SnapshotError when malformed."""
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, MAX_ARRAY_ITEMS * 4)
        if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
            raise SnapshotError(f"{what}: compressed array is truncated, too large or followed by junk")
    except zlib.error as exc:
        raise SnapshotError(f"{what}: bad compressed array ({exc})") from None
    if len(raw) % 4:
        raise SnapshotError(f"{what}: {len(raw)} bytes is not a whole number of int32")
    a = np.cumsum(np.frombuffer(raw, "<i4").astype(np.int64))
    if a.size and (a.min() < 0 or a.max() > 2**31 - 1):
        raise SnapshotError(f"{what}: ids out of range")
    if width > 1:
        if a.size % width:
            raise SnapshotError(f"{what}: {a.size} values is not a multiple of {width}")
        a = a.reshape(-1, width)
    return a


def config_message(config: CodecConfig) -> bytes:
    return SNAPSHOT_REGISTRY.encode("snap_config", config.to_fields())


def topology_message(update: TopologyUpdate) -> bytes:
    fields = {
        "epoch": int(update.epoch),
        "cause": update.cause,
        "removed_vertices": pack_ids(update.removed_vertices),
        "removed_triangles": pack_ids(update.removed_triangles),
        "added_triangles": pack_ids(update.added_triangles),
        "patch_offsets": pack_ids(update.layout.offsets),
        "patch_vertices": pack_ids(update.layout.vertex_ids),
    }
    if update.kept_patches is not None:  # an edit: only the patches not kept list their vertices
        layout = update.layout
        is_kept = np.zeros(layout.patch_count, bool)
        is_kept[update.kept_patches] = True
        fields["kept_patches"] = pack_ids(update.kept_patches)
        fields["patch_vertices"] = pack_ids(layout.vertex_ids[np.repeat(~is_kept, layout.sizes)])
    if update.instrument is not None:
        fields["instrument"] = int(update.instrument)
    return SNAPSHOT_REGISTRY.encode("snap_topology", fields)


def predictor_message(predictor: Predictor) -> bytes:
    fields = {
        "id": int(predictor.pid),
        "vertex_ids": pack_ids(predictor.vertex_ids),
        "gains": pack_gains(predictor.gains),
    }
    return SNAPSHOT_REGISTRY.encode("snap_predictor", fields)


def parse_predictor(fields: dict) -> Predictor:
    """A validated Predictor from decoded ``snap_predictor`` fields; SnapshotError otherwise."""
    ids = unpack_ids(fields["vertex_ids"], "snap_predictor vertex_ids")
    if len(ids) > MAX_PREDICTOR_VERTICES:
        raise SnapshotError(f"snap_predictor: {len(ids)} vertices (at most {MAX_PREDICTOR_VERTICES})")
    try:
        return Predictor(fields["id"], ids, unpack_gains(fields["gains"], len(ids)))
    except ValueError as exc:
        raise SnapshotError(f"snap_predictor: {exc}") from None


def snapshot_message(data: bytes) -> bytes:
    """The unreliable-channel message carrying one snapshot: the registry's encoding, packed directly (it goes
    to every client every frame, and the codec's own bytes need none of the registry's field checks)."""
    if not isinstance(data, bytes):
        raise MessageError(f"snapshot.data: expected bytes, got {type(data).__name__}")
    out = msgpack.packb({"v": SCHEMA_VERSION, "t": "snapshot", "data": data}, use_bin_type=True)
    if len(out) > SNAPSHOT_REGISTRY.max_encoded_size:
        raise MessageError(f"snapshot: encoded size {len(out)} exceeds {SNAPSHOT_REGISTRY.max_encoded_size} bytes")
    return out


def parse_config(fields: dict) -> CodecConfig:
    try:
        return CodecConfig.from_fields(fields)
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"snap_config: {exc}") from None


def parse_topology(fields: dict) -> TopologyUpdate:
    """A validated TopologyUpdate from decoded ``snap_topology`` fields; SnapshotError otherwise."""
    epoch = fields["epoch"]
    if not 0 <= epoch <= 0xFFFFFFFF:
        raise SnapshotError(f"snap_topology: epoch {epoch} out of range")
    if fields["cause"] not in CAUSES:
        raise SnapshotError(f"snap_topology: unknown cause {fields['cause']!r}")
    layout = PatchLayout(
        unpack_ids(fields["patch_vertices"], "patch_vertices"), unpack_ids(fields["patch_offsets"], "patch_offsets")
    )
    kept = fields.get("kept_patches")
    if kept is not None:
        kept = unpack_ids(kept, "kept_patches")
        if fields["cause"] == "full" or np.any(np.diff(kept) <= 0):
            raise SnapshotError("snap_topology: kept_patches must ascend strictly, and not with cause 'full'")
        o = layout.offsets
        if o.ndim != 1 or len(o) < 1 or o[0] != 0 or np.any(np.diff(o) < 1) or np.any(np.diff(o) > MAX_PATCH_SIZE):
            raise SnapshotError(f"snap_topology: every patch needs 1..{MAX_PATCH_SIZE} vertices")
    else:
        try:
            layout.validate(MAX_PATCH_SIZE)
        except ValueError as exc:
            raise SnapshotError(f"snap_topology: {exc}") from None
    return TopologyUpdate(
        epoch,
        fields["cause"],
        fields.get("instrument"),
        layout,
        removed_vertices=unpack_ids(fields["removed_vertices"], "removed_vertices"),
        removed_triangles=unpack_ids(fields["removed_triangles"], "removed_triangles", 3),
        added_triangles=unpack_ids(fields["added_triangles"], "added_triangles", 3),
        kept_patches=kept,
    )


def decode_message(data: bytes):
    """Decode any state-sync message: (type name, parsed value). Raises SnapshotError (MessageError inside)."""
    try:
        message = SNAPSHOT_REGISTRY.decode(data)
    except MessageError as exc:
        raise SnapshotError(str(exc)) from None
    if message.type == "snap_config":
        return message.type, parse_config(message.fields)
    if message.type == "snap_topology":
        return message.type, parse_topology(message.fields)
    if message.type == "snap_predictor":
        return message.type, parse_predictor(message.fields)
    if message.type == "snapshot":
        return message.type, message.fields["data"]
    return message.type, message.fields
