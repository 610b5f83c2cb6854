"""The snapshot wire format and the scene it describes: rigid objects and tissue patches (SNAPSHOT.md).

This module is the shared vocabulary of the encoder (``snapshot_codec``) and the decoder
(``snapshot_decode``): the codec configuration both sides must agree on, the kinds of rigid object, the
snapshot header and the byte-level pieces of a rigid record. It holds no per-client state.

A snapshot is::

    u8     version         SNAPSHOT_VERSION (4)
    varint sequence        the server frame it describes (u32); acks name it
    f64    server_time     seconds, the server clock of that frame
    varint epoch           topology epoch the patch ids refer to (u32)
    varint record_count    (at most 0xFFFF)
    records...             a drive record (the motion predictors' drives, ``motion_predictor.py``), a
                           rigid record holding every rigid object sent and a patch record holding
                           every tissue patch sent (bit streams, see SNAPSHOT.md); nothing after the last

All integers little-endian. Objects not in a snapshot are unchanged for the client.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from netcode.sync.quantize import (
    DEFAULT_MAX_ERROR,
    DEFAULT_ROTATION_BITS,
    PositionQuantizer,
    ScalarQuantizer,
    rotation_code_bytes,
)

SNAPSHOT_VERSION = 4
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
RECORD_DRIVE = 3
MAX_DRIVES = 64
"""Entries a drive record may hold (a decoder refuses more)."""
MAX_EG_PREFIX = 40
NO_JAW = -1
MAX_OBJECT_ID = 0xFFFF
MAX_GROUP = 0xFFFF
ACK_BITS = 32
"""Frames before the newest a ``snap_ack`` / ``thread_ack`` acknowledges in its bit field."""
"""Most patches one patch record holds (its count is a u16)."""


class RigidKind(IntEnum):
    """What a rigid object is (sent in its full record; the client uses it to pick a model)."""

    INSTRUMENT = 0
    JAW = 1
    HEAD = 2
    HAND = 3
    OTHER = 4
    NEEDLE = 5
    """A curved suture needle: its shape comes once in ``snap_suture`` (SNAPSHOT.md section 6)."""


_RIGID_KINDS = frozenset(k.value for k in RigidKind)


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
        if not r:
            return
        ids = self.ids.tolist()  # a few objects: plain Python beats numpy's per-call cost
        if min(ids) < 0 or max(ids) > MAX_OBJECT_ID or len(set(ids)) != r:
            raise ValueError(f"rigid ids must be unique and in 0..{MAX_OBJECT_ID}")
        if not set(self.kinds.tolist()) <= _RIGID_KINDS:
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


class BitWriter:
    """LSB-first bit stream (SNAPSHOT.md 2.2 conventions) in a Python int; for the few rigid objects."""

    __slots__ = ("acc", "n")

    def __init__(self) -> None:
        self.acc = 0
        self.n = 0

    def bits(self, value: int, nbits: int) -> None:
        self.acc |= (value & ((1 << nbits) - 1)) << self.n
        self.n += nbits

    def eg(self, u: int, k: int) -> None:
        """Exp-Golomb(k) of ``u`` >= 0: z zeros, a one, then z + k low bits."""
        w = (u >> k) + 1
        z = w.bit_length() - 1
        self.n += z
        self.bits(1, 1)
        self.bits((w & ((1 << z) - 1)) | ((u & ((1 << k) - 1)) << z), z + k)

    def extend(self, other: BitWriter) -> None:
        self.bits(other.acc, other.n)

    def to_bytes(self) -> bytes:
        return self.acc.to_bytes((self.n + 7) // 8, "little")


def eg_bits(u: int, k: int) -> int:
    """Length of the Exp-Golomb(k) code of ``u`` >= 0."""
    return 2 * (((u >> k) + 1).bit_length() - 1) + 1 + k


class BitReader:
    """Reads what ``BitWriter`` wrote from ``data[pos:end]``; SnapshotError past the end."""

    __slots__ = ("bit", "data", "end_bit", "what")

    def __init__(self, data: bytes, pos: int, end: int, what: str) -> None:
        self.data, self.bit, self.end_bit, self.what = data, pos * 8, end * 8, what

    def bits(self, nbits: int) -> int:
        bit = self.bit
        if bit + nbits > self.end_bit:
            raise SnapshotError(f"{self.what}: truncated")
        i = bit >> 3
        window = int.from_bytes(self.data[i : ((bit + nbits + 7) >> 3)], "little")
        self.bit = bit + nbits
        return (window >> (bit & 7)) & ((1 << nbits) - 1)

    def eg(self, k: int) -> int:
        bit = self.bit
        z = 0
        while True:  # count the zeros before the first one, a byte window at a time
            i = bit >> 3
            if bit >= self.end_bit:
                raise SnapshotError(f"{self.what}: truncated")
            window = int.from_bytes(self.data[i : min(i + 8, (self.end_bit + 7) >> 3)], "little") >> (bit & 7)
            avail = min(self.end_bit - bit, 64 - (bit & 7))
            window &= (1 << avail) - 1
            if window:
                zeros = (window & -window).bit_length() - 1
                z += zeros
                bit += zeros
                break
            z += avail
            bit += avail
            if z > MAX_EG_PREFIX:
                break
        if z > MAX_EG_PREFIX:
            raise SnapshotError(f"{self.what}: Exp-Golomb prefix longer than {MAX_EG_PREFIX} bits")
        self.bit = bit + 1
        low = self.bits(z + k)
        w = (1 << z) | (low & ((1 << z) - 1))
        return ((w - 1) << k) | (low >> z)

    def finish(self) -> int:
        """Check the padding to the next byte is zero; returns the byte position after it."""
        pad = -self.bit % 8
        if pad and self.bits(pad):
            raise SnapshotError(f"{self.what}: padding bits are not zero")
        return self.bit // 8


def best_k(values: list[int]) -> int:
    """A short Exp-Golomb order (0..15) for the unsigned ``values``: from the largest value's bit length
    (higher orders only cost more) down while the total length does not grow (the lengths are nearly
    convex in k: at most a couple of bits from the optimum; any order is valid on the wire)."""
    top = 0
    for u in values:
        top = max(top, u.bit_length())
    top = min(15, top)
    nv = len(values)
    best, best_bits = top, 1 << 30
    for k in range(top, -1, -1):
        bits = nv * k
        for u in values:
            bits += ((u >> k) + 1).bit_length() << 1
        if bits > best_bits:
            break
        if bits < best_bits:
            best, best_bits = k, bits
    return best


def rotation_parts(code: int, bits: int) -> tuple[int, int, int, int]:
    """(largest index, first, second, third component) of a smallest-three orientation code."""
    mask = (1 << bits) - 1
    return code >> (3 * bits), code >> (2 * bits) & mask, code >> bits & mask, code & mask


def rigid_entry_body(
    kind: int | None,
    pos: tuple[int, int, int] | None,
    rot: int | None,
    base_rot: int | None,
    jaw: int | None,
    base_jaw: int | None,
    rotation_bits: int,
    jaw_bits: int,
) -> BitWriter:
    """The part of a rigid entry after its age (SNAPSHOT.md 2.1). Full (``kind`` given): grid position,
    absolute orientation and jaw codes. Delta (``kind`` None): ``pos`` is the change (None: unchanged),
    ``rot``/``jaw`` the new codes (None: unchanged), coded as changes from ``base_rot``/``base_jaw`` when
    that is shorter."""
    acc = 0  # LSB-first bits, as in BitWriter, kept local for speed
    n = 0
    if kind is not None:
        acc, n = kind & 7, 3
    if pos is None:
        n += 1
    else:
        zz = [(v << 1) if v >= 0 else ((-v) << 1) - 1 for v in pos]
        k = best_k(zz)
        acc |= (1 | k << 1) << n
        n += 5
        for u in zz:
            acc, n = _put_eg(acc, n, u, k)
    if rot is None:
        n += 1
    else:
        acc |= 1 << n
        n += 1
        width = 2 + 3 * rotation_bits
        delta = None
        if base_rot is not None and rot >> (3 * rotation_bits) == base_rot >> (3 * rotation_bits):
            mask = (1 << rotation_bits) - 1
            zz = []
            for shift in (2 * rotation_bits, rotation_bits, 0):
                v = (rot >> shift & mask) - (base_rot >> shift & mask)
                zz.append((v << 1) if v >= 0 else ((-v) << 1) - 1)
            k = best_k(zz)
            if 4 + eg_bits(zz[0], k) + eg_bits(zz[1], k) + eg_bits(zz[2], k) < width:
                delta = (k, zz)
        if delta is None:
            acc |= rot << (n + 1)  # mode bit 0, then the code
            n += 1 + width
        else:
            acc |= (1 | delta[0] << 1) << n
            n += 5
            for u in delta[1]:
                acc, n = _put_eg(acc, n, u, delta[0])
    if jaw is None:
        n += 1
    else:
        acc |= 1 << n
        n += 1
        delta = None
        if base_jaw is not None and base_jaw != NO_JAW:
            u = zigzag(jaw - base_jaw)
            k = best_k([u])
            if 4 + eg_bits(u, k) < jaw_bits:
                delta = (k, u)
        if delta is None:
            acc |= (jaw & ((1 << jaw_bits) - 1)) << (n + 1)
            n += 1 + jaw_bits
        else:
            acc |= (1 | delta[0] << 1) << n
            n += 5
            acc, n = _put_eg(acc, n, delta[1], delta[0])
    w = BitWriter()
    w.acc, w.n = acc, n
    return w


def _put_eg(acc: int, n: int, u: int, k: int) -> tuple[int, int]:
    """Append EG(k) of ``u`` to the LSB-first bits (acc, n)."""
    w = (u >> k) + 1
    z = w.bit_length() - 1
    low = (w & ((1 << z) - 1)) | ((u & ((1 << k) - 1)) << z)
    return acc | (1 | low << 1) << (n + z), n + 2 * z + 1 + k


def rigid_record(entries: list[tuple[int, int, BitWriter]]) -> bytes:
    """One rigid record (SNAPSHOT.md 2.1) of (id, age, body) entries, ids ascending."""
    out = bytearray((RECORD_RIGID,))
    write_varint(out, len(entries))
    w = BitWriter()
    prev_id, prev_age = -1, -1
    for oid, age, body in entries:
        w.eg(oid - prev_id - 1, 0)
        w.bits(age == prev_age, 1)
        if age != prev_age:
            w.eg(age, 0)
        w.extend(body)
        prev_id, prev_age = oid, age
    return bytes(out) + w.to_bytes()


def rigid_record_size(entries: list[tuple[int, int, int]]) -> int:
    """Bytes of ``rigid_record`` for (id, age, body bits) entries, ids ascending."""
    bits = 0
    prev_id, prev_age = -1, -1
    for oid, age, nbits in entries:
        bits += eg_bits(oid - prev_id - 1, 0) + 1 + (0 if age == prev_age else eg_bits(age, 0)) + nbits
        prev_id, prev_age = oid, age
    return 1 + max(1, (len(entries).bit_length() + 6) // 7) + (bits + 7) // 8


def drive_record(drives: list[tuple[int, np.ndarray]]) -> bytes:
    """The drive record: tag, varint count, then per predictor its varint id and three zigzag varint
    drive components (FINE units, ``motion_predictor.py``)."""
    out = bytearray((RECORD_DRIVE,))
    write_varint(out, len(drives))
    for pid, drive in drives:
        write_varint(out, int(pid))
        for v in np.asarray(drive, np.int64).tolist():
            write_varint(out, zigzag(int(v)))
    return bytes(out)


def read_drive_record(data: bytes, pos: int, end: int, max_drive: int) -> tuple[dict[int, np.ndarray], int]:
    """({predictor id: drive (3,) int64}, position after) of a drive record after its tag; SnapshotError
    when truncated, too long, with a repeated id or a component beyond ``max_drive``."""
    count, pos = read_varint(data, pos, end, "drive count")
    if count > MAX_DRIVES:
        raise SnapshotError(f"drive record of {count} entries (at most {MAX_DRIVES})")
    drives: dict[int, np.ndarray] = {}
    for _ in range(count):
        pid, pos = read_varint(data, pos, end, "predictor id")
        values = []
        for _axis in range(3):
            u, pos = read_varint(data, pos, end, "drive")
            values.append(unzigzag(u))
        if pid in drives:
            raise SnapshotError(f"predictor {pid} appears twice in the drive record")
        if max(abs(v) for v in values) > max_drive:
            raise SnapshotError(f"predictor {pid} drive beyond +-{max_drive}")
        drives[pid] = np.array(values, np.int64)
    return drives, pos


def ack_fields(applied) -> dict[str, int]:
    """``snap_ack`` / ``thread_ack`` fields for the applied sequence numbers: the newest, and bit i - 1 set
    for the one i frames before it (1 <= i <= ACK_BITS)."""
    newest = max(applied)
    bits = 0
    for s in applied:
        if 0 < newest - s <= ACK_BITS:
            bits |= 1 << (newest - s - 1)
    return {"newest": newest, "bits": bits}
