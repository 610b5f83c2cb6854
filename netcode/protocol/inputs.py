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
        self.devices = devices
        self.duplicates += data[2] - len(fresh)  # the header's sample count (decode_packet checked it)
        if fresh:
            if self.highest is not None:
                self.missing += fresh[0].seq - self.highest - 1
            self.highest = fresh[-1].seq
            self.received_at = server_now
        return fresh

    def ack(self, server_now: float) -> InputAck | None:
        if self.highest is None or self.received_at is None:
            return None
        return InputAck(self.highest, server_now, max(0.0, server_now - self.received_at))
