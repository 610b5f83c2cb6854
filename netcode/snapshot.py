"""The snapshot wire format and the scene it describes: rigid objects and tissue patches (SNAPSHOT.md).

This module is the shared vocabulary of the encoder (``snapshot_codec``) and the decoder
(``snapshot_decode``): the codec configuration both sides must agree on, the kinds of rigid object, the
snapshot header and the byte-level pieces of a rigid record. It holds no per-client state.

A snapshot is::

    u8     version         SNAPSHOT_VERSION (3)
    varint sequence        the server frame it describes (u32); acks name it
    f64    server_time     seconds, the server clock of that frame
    varint epoch           topology epoch the patch ids refer to (u32)
    varint record_count    (at most 0xFFFF)
    records...             one per rigid object sent, plus one patch record holding every
                           tissue patch sent (see SNAPSHOT.md); nothing after the last

All integers little-endian. Objects not in a snapshot are unchanged for the client.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from netcode.quantize import (
    DEFAULT_MAX_ERROR,
    DEFAULT_ROTATION_BITS,
    PositionQuantizer,
    ScalarQuantizer,
    rotation_code_bytes,
)

SNAPSHOT_VERSION = 3
TIME = struct.Struct("<d")
HEADER_SIZE = 1 + 5 + 8 + 5 + 3
"""Longest snapshot header (22 bytes; usually 12-14: the sequence, epoch and record count are varints)."""
MAX_RECORDS = 0xFFFF
MAX_SNAPSHOT_BYTES = 256 * 1024 - 64
"""A snapshot travels inside a msgpack envelope as one channel message (<= 256 KiB)."""
ENVELOPE_OVERHEAD = 24
"""Bytes the msgpack envelope ``{"v": 1, "t": "snapshot", "data": <bin>}`` adds (at most, for <= 64 KiB)."""

RECORD_PATCH = 1
RECORD_RIGID = 2
RIGID_POS = 0x04
RIGID_ROT = 0x08
RIGID_JAW = 0x10
NO_JAW = -1
MAX_OBJECT_ID = 0xFFFF
MAX_GROUP = 0xFFFF
"""Most patches one patch record holds (its count is a u16)."""


class RigidKind(IntEnum):
    """What a rigid object is (sent in its full record; the client uses it to pick a model)."""

    INSTRUMENT = 0
    JAW = 1
    HEAD = 2
    HAND = 3
    OTHER = 4


class SnapshotError(ValueError):
    """A snapshot (or topology message) is malformed or cannot be applied; the text says why.

    The decoder's state is unchanged when this is raised.
    """


def _default_positions() -> PositionQuantizer:
    return PositionQuantizer(DEFAULT_MAX_ERROR, step=DEFAULT_MAX_ERROR)


@dataclass(frozen=True, slots=True)
class CodecConfig:
    """Quantization both ends agree on (sent to a client at join as a ``snap_config`` message).

    The default grid step equals the error bound (not twice it): with hysteresis, a vertex whose solver
    jitter stays below half the bound then settles on a grid point for good, whereas with a step of twice
    the bound a vertex sitting between two grid points flips between them forever. On the benchmark
    trace this halved the stream (1.5 vs 3.0 Mbit/s unlimited, before per-client deltas) at the same 0.1 mm
    bound. It also leaves each coordinate two or three admissible grid values, which the per-client delta
    choice of ``snapshot_codec`` uses to make runs.
    """

    positions: PositionQuantizer = field(default_factory=_default_positions)
    rotation_bits: int = DEFAULT_ROTATION_BITS
    jaw: ScalarQuantizer = field(default_factory=ScalarQuantizer)

    def __post_init__(self) -> None:
        if not 1 <= self.rotation_bits <= 20:
            raise ValueError("rotation_bits must be 1..20")

    @property
    def rotation_bytes(self) -> int:
        return rotation_code_bytes(self.rotation_bits)

    def to_fields(self) -> dict:
        p = self.positions
        return {
            "max_error": p.max_error,
            "origin": [float(v) for v in p.origin],
            "step": p.grid,
            "rotation_bits": self.rotation_bits,
            "jaw_lo": self.jaw.lo,
            "jaw_hi": self.jaw.hi,
            "jaw_bits": self.jaw.bits,
        }

    @classmethod
    def from_fields(cls, f: dict) -> CodecConfig:
        """Inverse of ``to_fields``; ValueError on anything inconsistent."""
        origin = f["origin"]
        if not isinstance(origin, list) or len(origin) != 3:
            raise ValueError("snap_config.origin must be three numbers")
        return cls(
            PositionQuantizer(float(f["max_error"]), tuple(float(v) for v in origin), float(f["step"])),
            int(f["rotation_bits"]),
            ScalarQuantizer(float(f["jaw_lo"]), float(f["jaw_hi"]), int(f["jaw_bits"])),
        )


DEFAULT_CONFIG = CodecConfig()


@dataclass(frozen=True, slots=True)
class RigidSet:
    """One frame of rigid objects (server truth): ids (R,), kinds (R,), positions (R, 3) metres,
    orientations (R, 4) quaternions (x, y, z, w), jaws (R,) radians with NaN for "has no jaw"."""

    ids: np.ndarray
    kinds: np.ndarray
    positions: np.ndarray
    orientations: np.ndarray
    jaws: np.ndarray

    @classmethod
    def empty(cls) -> RigidSet:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 4)), np.zeros(0))

    def validate(self) -> None:
        r = len(self.ids)
        shapes = (self.kinds.shape, self.positions.shape, self.orientations.shape, self.jaws.shape)
        if shapes != ((r,), (r, 3), (r, 4), (r,)):
            raise ValueError(f"rigid arrays disagree in shape: {shapes} for {r} ids")
        if r and (self.ids.min() < 0 or self.ids.max() > MAX_OBJECT_ID or len(np.unique(self.ids)) != r):
            raise ValueError(f"rigid ids must be unique and in 0..{MAX_OBJECT_ID}")
        if r and not np.isin(self.kinds, [k.value for k in RigidKind]).all():
            raise ValueError("unknown rigid kind")


# ------------------------------------------------------------------------------------------ byte pieces


def write_varint(out: bytearray, value: int) -> None:
    """LEB128 unsigned varint (value < 2^35)."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def read_varint(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """(value, new position); SnapshotError if truncated or longer than 5 bytes."""
    value = 0
    for i in range(5):
        if pos >= end:
            raise SnapshotError(f"truncated varint ({what}) at byte {pos}")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, pos
    raise SnapshotError(f"varint ({what}) longer than 5 bytes at byte {pos}")


def zigzag(v: int) -> int:
    return (v << 1) if v >= 0 else ((-v) << 1) - 1


def unzigzag(u: int) -> int:
    return (u >> 1) ^ -(u & 1)


def pack_header(sequence: int, server_time: float, epoch: int, record_count: int) -> bytes:
    """The snapshot header (``header_size`` bytes)."""
    out = bytearray((SNAPSHOT_VERSION,))
    write_varint(out, sequence & 0xFFFFFFFF)
    out += TIME.pack(server_time)
    write_varint(out, epoch & 0xFFFFFFFF)
    write_varint(out, record_count)
    return bytes(out)


def header_size(sequence: int, epoch: int, record_count: int) -> int:
    """Bytes of ``pack_header`` for these values."""
    return 9 + sum(_varint_size(v) for v in (sequence & 0xFFFFFFFF, epoch & 0xFFFFFFFF, record_count))


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def read_header(data: bytes) -> tuple[int, float, int, int, int]:
    """(sequence, server_time, epoch, record_count, header length); SnapshotError on a short or foreign
    header (a varint longer than 5 bytes or above 32 bits, more than ``MAX_RECORDS`` records)."""
    if not data:
        raise SnapshotError("empty snapshot")
    if data[0] != SNAPSHOT_VERSION:
        raise SnapshotError(f"snapshot version {data[0]} (this decoder reads {SNAPSHOT_VERSION})")
    end = len(data)
    sequence, pos = read_varint(data, 1, end, "header sequence")
    if pos + TIME.size > end:
        raise SnapshotError(f"snapshot of {end} bytes is shorter than its header")
    (server_time,) = TIME.unpack_from(data, pos)
    epoch, pos = read_varint(data, pos + TIME.size, end, "header epoch")
    count, pos = read_varint(data, pos, end, "header record count")
    if sequence > 0xFFFFFFFF or epoch > 0xFFFFFFFF or count > MAX_RECORDS:
        raise SnapshotError("snapshot header field out of range")
    if not math.isfinite(server_time):
        raise SnapshotError("snapshot server time is not finite")
    return sequence, server_time, epoch, count, pos


def parse_header(data: bytes) -> tuple[int, float, int, int]:
    """(sequence, server_time, epoch, record_count); SnapshotError on a short or foreign header."""
    return read_header(data)[:4]


def rigid_record(
    object_id: int,
    age: int,
    kind: int,
    pos: tuple[int, int, int] | np.ndarray | None,
    rot: int | None,
    jaw: int | None,
    rotation_bytes: int,
) -> bytes:
    """One rigid record. ``age`` 0 = full (kind and all fields); else ``pos`` is a delta (or None when
    unchanged) and ``rot``/``jaw`` are absolute codes sent only when they changed (None otherwise)."""
    flags = RECORD_RIGID
    if pos is not None:
        flags |= RIGID_POS
    if rot is not None:
        flags |= RIGID_ROT
    if jaw is not None:
        flags |= RIGID_JAW
    out = bytearray((flags,))
    write_varint(out, object_id)
    write_varint(out, age)
    if age == 0:
        out.append(kind)
    if pos is not None:
        for v in pos:
            write_varint(out, zigzag(int(v)))
    if rot is not None:
        out += int(rot).to_bytes(rotation_bytes, "little")
    if jaw is not None:
        out += int(jaw).to_bytes(2, "little")
    return bytes(out)
