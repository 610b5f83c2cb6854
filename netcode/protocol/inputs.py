"""Tracking inputs: the client's redundant input packets, the server's receiver, and acks.

Why: inputs travel on the unreliable channel. Instead of resending lost packets, every packet carries
the most recent samples the server has not yet acknowledged (at most ``max_samples``, and never more
than ``max_bytes``), so one packet that gets through fills every gap behind it. The server acks the
newest sample sequence it has; the client then stops repeating everything up to it. A burst of losses
longer than the redundancy window (``max_samples`` frames, ~90-130 ms at 72-90 Hz) loses samples for good;
the server simply continues with newer ones.

Sample sequences are u32, consecutive, starting at 0 (no wrap: 1.5 years at 90 Hz).

Binary input packet (all little-endian; carried as the ``p`` bytes field of the ``input`` message)::

    offset size  field
    0      1     version            = 1
    1      1     device_count D     1..16
    2      1     sample_count S     1..255
    3      1     reserved           = 0
    4      4     first_seq u32      sequence of the oldest sample; the samples are first_seq .. first_seq+S-1
    8      D     device ids u8      the device of each pose slot, same for every sample
    8+D    S * (8 + 23 D) samples, oldest first:
             8   client_time f64    local clock (seconds) when the sample was taken
             then D poses of 23 bytes each:
             1   flags u8           bit 0: tracked (0 = device lost: ignore this pose); bit 1: energy on
                                    (cautery pedal pressed); bits 2-7: 0
             12  position 3 x f32   metres
             8   rotation 4 x i16   quaternion x, y, z, w scaled by 32767 (renormalise after decoding)
             2   jaw i16            jaw opening in units of 1e-4 rad (+-3.2767 rad)

``encode_packet`` / ``decode_packet`` are the pure codec (``decode_packet`` checks every length and
raises ``InputPacketError``); ``InputSender`` (client) and ``InputReceiver`` (server reference) are the
stateful shells. No sockets, no clock reads: times are arguments. ``decode_packet`` reads the samples as one
packed numpy record array and checks them (every sample, the redundant ones too) in a nogil numba kernel, so
that a server pays Python only for the samples it builds (the new ones).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from netcode.protocol.poses import IDENTITY, RigidPose

VERSION = 1
HEADER = struct.Struct("<BBBBI")
TIME = struct.Struct("<d")
POSE = struct.Struct("<B3f4hh")
POSE_SIZE = POSE.size  # 23
MAX_DEVICES = 16
MAX_SAMPLES = 255
U32 = 1 << 32
JAW_UNIT = 1e-4
TRACKED = 0x01
ENERGY = 0x02


_UNTRACKED = POSE.pack(0, 0.0, 0.0, 0.0, 0, 0, 0, 32767, 0)
_SAMPLE_ERRORS = ("", "non-finite time", "reserved pose flag bits set", "non-finite position")
_SAMPLE_DTYPES: dict[int, np.dtype] = {}


def _sample_dtype(device_count: int) -> np.dtype:
    """The packed record of one sample of ``device_count`` poses (the wire layout above, no padding)."""
    dtype = _SAMPLE_DTYPES.get(device_count)
    if dtype is None:
        pose = np.dtype([("flags", "u1"), ("position", "<f4", (3,)), ("rotation", "<i2", (4,)), ("jaw", "<i2")])
        dtype = _SAMPLE_DTYPES[device_count] = np.dtype([("time", "<f8"), ("poses", pose, (device_count,))])
        assert dtype.itemsize == sample_size(device_count)
    return dtype


@numba.njit(cache=True, nogil=True)
def _check_samples_kernel(times, flags, positions):
    """(error code, sample index) of the first malformed sample in wire order (0: none): a non-finite time,
    reserved flag bits, a tracked pose with a non-finite position (codes index ``_SAMPLE_ERRORS``)."""
    for i in range(times.shape[0]):
        if not np.isfinite(times[i]):
            return 1, i
        for k in range(flags.shape[1]):
            f = flags[i, k]
            if f & ~(TRACKED | ENERGY):
                return 2, i
            if f & TRACKED:
                for a in range(3):
                    if not np.isfinite(positions[i, k, a]):
                        return 3, i
    return 0, 0


class InputPacketError(ValueError):
    """A malformed input packet; the text says why."""


@dataclass(frozen=True, slots=True)
class InputSample:
    """One display-frame sample: its sequence, local time, and a pose (or None: untracked) per device."""

    seq: int
    client_time: float
    poses: tuple[RigidPose | None, ...]


@dataclass(frozen=True, slots=True)
class InputAck:
    """Server -> client: newest sample ``seq`` the server has, its clock now, and how long it held ``seq``."""

    seq: int
    server_time: float
    hold: float


def sample_size(device_count: int) -> int:
    return TIME.size + POSE_SIZE * device_count


def packet_size(device_count: int, sample_count: int) -> int:
    return HEADER.size + device_count + sample_count * sample_size(device_count)


def _clip_i16(x: float) -> int:
    return int(max(-32767, min(32767, round(x))))


def encode_sample(sample: InputSample, device_count: int) -> bytes:
    """The wire bytes of one sample (its time and ``device_count`` poses); packets repeat them unchanged."""
    if len(sample.poses) != device_count:
        raise ValueError(f"sample {sample.seq} has {len(sample.poses)} poses for {device_count} devices")
    out = bytearray(TIME.pack(sample.client_time))
    for pose in sample.poses:
        if pose is None:
            out += _UNTRACKED
            continue
        x, y, z = pose.position.tolist()
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z) and math.isfinite(pose.jaw)):
            out += _UNTRACKED  # pose.is_finite(), on the floats already at hand
            continue
        qx, qy, qz, qw = [q * 32767.0 for q in pose.rotation.tolist()]  # the same products as numpy's
        out += POSE.pack(
            TRACKED | (ENERGY if pose.energy else 0),
            x,
            y,
            z,
            _clip_i16(qx),
            _clip_i16(qy),
            _clip_i16(qz),
            _clip_i16(qw),
            _clip_i16(pose.jaw / JAW_UNIT),
        )
    return bytes(out)


def _check_samples(devices: Sequence[int], samples: Sequence[InputSample]) -> None:
    d, s = len(devices), len(samples)
    if not (1 <= d <= MAX_DEVICES and 1 <= s <= MAX_SAMPLES):
        raise ValueError(f"need 1..{MAX_DEVICES} devices and 1..{MAX_SAMPLES} samples, got {d}, {s}")
    first = samples[0].seq
    if any(sample.seq != first + i for i, sample in enumerate(samples)) or not 0 <= first < U32 - s:
        raise ValueError("samples must have consecutive u32 sequences")


def encode_packet(devices: Sequence[int], samples: Sequence[InputSample]) -> bytes:
    """The binary packet for consecutive ``samples`` (oldest first) of the given ``devices``."""
    _check_samples(devices, samples)
    d = len(devices)
    head = HEADER.pack(VERSION, d, len(samples), 0, samples[0].seq) + bytes(devices)
    return head + b"".join(encode_sample(sample, d) for sample in samples)


def decode_packet(data: bytes, after: int | None = None) -> tuple[tuple[int, ...], list[InputSample]]:
    """(device ids, samples oldest first) of a packet; raises ``InputPacketError`` on any malformation.

    With ``after``, samples with a sequence up to it (ones the receiver already has: the redundancy) are
    checked but not built, so that a receiver pays for the new samples only."""
    d, s, first = _check_header(data)
    devices = tuple(data[HEADER.size : HEADER.size + d])
    records = np.frombuffer(data, _sample_dtype(d), count=s, offset=HEADER.size + d)
    poses_in = records["poses"]
    flags = poses_in["flags"]
    error, bad = _check_samples_kernel(records["time"], flags, poses_in["position"])
    if error:
        raise InputPacketError(f"sample {first + bad}: {_SAMPLE_ERRORS[error]}")
    start = 0 if after is None else min(s, max(0, after - first + 1))
    samples = []
    if start == s:
        return devices, samples
    new = records[start:]
    times = new["time"].tolist()
    flag_rows = flags[start:].tolist()
    position_rows = poses_in["position"][start:].tolist()
    rotation_rows = poses_in["rotation"][start:].tolist()
    jaw_rows = poses_in["jaw"][start:].tolist()
    for j in range(s - start):
        poses: list[RigidPose | None] = []
        for k in range(d):
            f = flag_rows[j][k]
            if not f & TRACKED:
                poses.append(None)
                continue
            qx, qy, qz, qw = rotation_rows[j][k]
            position = np.array(position_rows[j][k], dtype=np.float64)
            q = np.array([qx, qy, qz, qw], dtype=np.float64) if qx or qy or qz or qw else IDENTITY
            poses.append(RigidPose(position, q, jaw_rows[j][k] * JAW_UNIT, bool(f & ENERGY)))
        samples.append(InputSample(first + start + j, times[j], tuple(poses)))
    return devices, samples


@numba.njit(cache=True, nogil=True)
def _decode_kernel(buf, d, s, start):
    """One pass over a packet whose header passed: (error code, bad sample index, times, flags, jaws, positions,
    quaternions, raw rotations). Every sample is checked as ``_check_samples_kernel`` does (same codes, same
    first bad sample); samples ``start`` .. ``s`` - 1 are then converted: positions as float64, rotations as the
    unit (w, x, y, z) quaternion physics takes (``quat_normalize`` then ``to_physics_quat``, the same bits) and
    raw (x, y, z, w) i16 values as float64 (what ``RigidPose`` is built from), jaws in radians."""
    bits64 = np.empty(1, np.uint64)
    as_f64 = bits64.view(np.float64)
    bits32 = np.empty(1, np.uint32)
    as_f32 = bits32.view(np.float32)
    base = 8 + d
    stride = 8 + 23 * d
    n = s - start
    times = np.empty(n, np.float64)
    flags = np.zeros((n, d), np.int64)
    jaws = np.zeros((n, d), np.float64)
    positions = np.zeros((n, d, 3), np.float64)
    quats = np.zeros((n, d, 4), np.float64)
    raw = np.zeros((n, d, 4), np.float64)
    for i in range(s):
        o = base + i * stride
        u = np.uint64(0)
        for b in range(8):
            u |= np.uint64(buf[o + b]) << np.uint64(8 * b)
        bits64[0] = u
        t = as_f64[0]
        if not np.isfinite(t):
            return 1, i, times, flags, jaws, positions, quats, raw
        j = i - start
        if j >= 0:
            times[j] = t
        for k in range(d):
            p = o + 8 + 23 * k
            f = buf[p]
            if f & ~(TRACKED | ENERGY):
                return 2, i, times, flags, jaws, positions, quats, raw
            if not f & TRACKED:
                continue
            for a in range(3):
                q = p + 1 + 4 * a
                bits32[0] = (
                    np.uint32(buf[q])
                    | (np.uint32(buf[q + 1]) << np.uint32(8))
                    | (np.uint32(buf[q + 2]) << np.uint32(16))
                    | (np.uint32(buf[q + 3]) << np.uint32(24))
                )
                x = as_f32[0]
                if not np.isfinite(x):
                    return 3, i, times, flags, jaws, positions, quats, raw
                if j >= 0:
                    positions[j, k, a] = np.float64(x)
            if j < 0:
                continue
            flags[j, k] = f
            total = 0.0
            for a in range(5):  # x, y, z, w, then the jaw
                q = p + 13 + 2 * a
                v = np.int64(buf[q]) | (np.int64(buf[q + 1]) << 8)
                if v >= 32768:
                    v -= 65536
                if a < 4:
                    raw[j, k, a] = np.float64(v)
                    total += np.float64(v) * np.float64(v)  # exact: integers below 2**33
                else:
                    jaws[j, k] = np.float64(v) * JAW_UNIT
            if total == 0.0:  # decode_packet's IDENTITY for an all-zero rotation
                raw[j, k, 3] = 1.0
                quats[j, k, 0] = 1.0
                continue
            norm = math.sqrt(total)
            quats[j, k, 0] = raw[j, k, 3] / norm
            quats[j, k, 1] = raw[j, k, 0] / norm
            quats[j, k, 2] = raw[j, k, 1] / norm
            quats[j, k, 3] = raw[j, k, 2] / norm
    return 0, 0, times, flags, jaws, positions, quats, raw


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """A packet's new samples as arrays (what the server hands to its rooms without building an object per pose).

    Sample ``j`` has sequence ``first_seq + j`` and time ``times[j]``; its pose of device ``devices[k]`` is
    tracked when ``flags[j][k] & TRACKED``, at ``positions[j, k]`` (m, float64) with the unit rotation
    ``quats[j, k]`` in physics order (w, x, y, z), jaw ``jaws[j][k]`` (rad) and energy ``flags[j][k] & ENERGY``.
    ``times``, ``flags`` and ``jaws`` are plain lists; ``pose(j, k)`` builds the ``RigidPose`` that
    ``decode_packet`` gives (the same values)."""

    devices: tuple[int, ...]
    first_seq: int
    times: list[float]
    flags: list[list[int]]
    jaws: list[list[float]]
    positions: np.ndarray
    quats: np.ndarray
    raw_rotations: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    def pose(self, j: int, k: int) -> RigidPose | None:
        """Sample ``j``'s pose of device slot ``k`` as ``decode_packet`` builds it (None: untracked)."""
        f = self.flags[j][k]
        if not f & TRACKED:
            return None
        return RigidPose(
            self.positions[j, k].copy(), self.raw_rotations[j, k].copy(), self.jaws[j][k], bool(f & ENERGY)
        )

    def samples(self) -> list[InputSample]:
        """The batch as ``decode_packet``'s samples."""
        d = len(self.devices)
        return [
            InputSample(self.first_seq + j, self.times[j], tuple(self.pose(j, k) for k in range(d)))
            for j in range(len(self.times))
        ]


def _check_header(data: bytes) -> tuple[int, int, int]:
    """(device count, sample count, first sequence) of a packet whose header and length are well formed."""
    if len(data) < HEADER.size:
        raise InputPacketError(f"packet of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    version, d, s, reserved, first = HEADER.unpack_from(data, 0)
    if version != VERSION:
        raise InputPacketError(f"unsupported input packet version {version}")
    if reserved != 0 or not (1 <= d <= MAX_DEVICES) or s < 1:
        raise InputPacketError(f"bad header (devices {d}, samples {s}, reserved {reserved})")
    if len(data) != packet_size(d, s):
        raise InputPacketError(f"packet is {len(data)} bytes, header says {packet_size(d, s)}")
    if first + s > U32:
        raise InputPacketError("sequence range overflows u32")
    return d, s, first


def decode_batch(data: bytes, after: int | None = None) -> SampleBatch:
    """``decode_packet`` as arrays, in one nogil numba pass: the same checks (the same ``InputPacketError``
    texts), the same samples built (those after ``after``) and the same values, without a Python object per
    pose."""
    d, s, first = _check_header(data)
    start = 0 if after is None else min(s, max(0, after - first + 1))
    error, bad, times, flags, jaws, positions, quats, raw = _decode_kernel(np.frombuffer(data, np.uint8), d, s, start)
    if error:
        raise InputPacketError(f"sample {first + bad}: {_SAMPLE_ERRORS[error]}")
    devices = tuple(data[HEADER.size : HEADER.size + d])
    return SampleBatch(devices, first + start, times.tolist(), flags.tolist(), jaws.tolist(), positions, quats, raw)


class InputReceiver:
    """Server side (reference): delivers each sample once and in order, and builds the ack."""

    def __init__(self) -> None:
        self.highest: int | None = None
        self.received_at: float | None = None  # server time when ``highest`` arrived
        self.devices: tuple[int, ...] | None = None
        self.missing = 0  # samples never received (gaps longer than the client's redundancy)
        self.duplicates = 0

    def new_samples(self, data: bytes) -> int:
        """How many samples of a packet would be new, from its header alone (0 for a malformed header): what
        a server charges to a work budget before it decodes anything."""
        if len(data) < HEADER.size:
            return 0
        _, _, count, _, first = HEADER.unpack_from(data, 0)
        if self.highest is None:
            return count
        return max(0, min(count, first + count - 1 - self.highest))

    def receive(self, data: bytes, server_now: float, *, newest_only: bool = False) -> list[InputSample]:
        """New samples of a packet, in sequence order (already-seen ones dropped). Raises on malformation.
        ``newest_only``: build only the packet's newest sample (a role that drives nothing needs its head)."""
        after = self.highest
        if newest_only and len(data) >= HEADER.size:
            _, _, count, _, first = HEADER.unpack_from(data, 0)
            after = max(-1 if after is None else after, first + count - 2)
        devices, fresh = decode_packet(data, after)
        self._count(devices, data[2], fresh[0].seq if fresh else 0, len(fresh), server_now)
        return fresh

    def receive_batch(self, data: bytes, server_now: float) -> SampleBatch:
        """``receive`` as a ``SampleBatch`` (``decode_batch``): the server's input path, one numba call a packet."""
        batch = decode_batch(data, self.highest)
        self._count(batch.devices, data[2], batch.first_seq, len(batch.times), server_now)
        return batch

    def _count(self, devices: tuple[int, ...], count: int, first: int, fresh: int, server_now: float) -> None:
        """Book a decoded packet of ``count`` samples whose ``fresh`` new ones start at sequence ``first``."""
        self.devices = devices
        self.duplicates += count - fresh  # the header's sample count (the decode checked it)
        if fresh:
            if self.highest is not None:
                self.missing += first - self.highest - 1
            self.highest = first + fresh - 1
            self.received_at = server_now

    def ack(self, server_now: float) -> InputAck | None:
        if self.highest is None or self.received_at is None:
            return None
        return InputAck(self.highest, server_now, max(0.0, server_now - self.received_at))
