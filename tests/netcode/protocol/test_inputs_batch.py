"""decode_batch (the server's one-numba-call input decode) against decode_packet: same refusals, same values."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from netcode.protocol.inputs import (
    ENERGY,
    HEADER,
    POSE,
    TIME,
    TRACKED,
    InputPacketError,
    InputReceiver,
    InputSample,
    decode_batch,
    decode_packet,
    encode_packet,
)
from netcode.protocol.poses import RigidPose, rotvec_to_quat


def _random_pose(rng: random.Random) -> RigidPose | None:
    if rng.random() < 0.15:
        return None
    rotation = rotvec_to_quat([rng.uniform(-3, 3) for _ in range(3)])
    return RigidPose([rng.uniform(-2, 2) for _ in range(3)], rotation, rng.uniform(-3, 3), rng.random() < 0.3)


def _valid_packet(rng: random.Random) -> bytes:
    d = rng.randint(1, 5)
    s = rng.randint(1, 12)
    first = rng.choice([0, rng.randint(0, 5000), (1 << 32) - s - 1])
    devices = tuple(rng.randrange(256) for _ in range(d))
    samples = [
        InputSample(first + i, rng.uniform(0, 1e5), tuple(_random_pose(rng) for _ in range(d))) for i in range(s)
    ]
    return encode_packet(devices, samples)


def _mutated(rng: random.Random, packet: bytes) -> bytes:
    """A packet with one of the ways a packet goes wrong: bytes flipped, cut, grown, a bad header or value."""
    data = bytearray(packet)
    d, s = data[1], data[2]
    kind = rng.randrange(8)
    if kind == 0:  # random bytes anywhere
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:
        data = data[: rng.randrange(len(data))]
    elif kind == 2:
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 30)))
    elif kind == 3:  # header fields
        data[rng.randrange(4)] = rng.choice([0, 2, 17, 255, rng.randrange(256)])
    elif kind == 4:  # a non-finite time
        i = rng.randrange(s)
        struct.pack_into("<d", data, 8 + d + i * (8 + 23 * d), rng.choice([float("nan"), float("inf"), -float("inf")]))
    elif kind == 5:  # reserved flag bits or a tracked flag on a slot
        i, k = rng.randrange(s), rng.randrange(d)
        data[8 + d + i * (8 + 23 * d) + 8 + 23 * k] = rng.choice([1, 3, 4, 0x80, 0xFF, 5])
    elif kind == 6:  # a non-finite position component (tracked or not)
        i, k, a = rng.randrange(s), rng.randrange(d), rng.randrange(3)
        at = 8 + d + i * (8 + 23 * d) + 8 + 23 * k + 1 + 4 * a
        struct.pack_into("<f", data, at, rng.choice([float("nan"), float("inf")]))
    else:  # an all-zero or extreme rotation
        i, k = rng.randrange(s), rng.randrange(d)
        at = 8 + d + i * (8 + 23 * d) + 8 + 23 * k + 13
        struct.pack_into("<4h", data, at, *rng.choice([(0, 0, 0, 0), (-32768,) * 4, (1, 0, 0, 0), (0, 0, 0, -1)]))
    return bytes(data)


def _outcome(decode, data: bytes, after: int | None):
    try:
        return "ok", decode(data, after)
    except InputPacketError as exc:
        return "refused", str(exc)


def _assert_same(packet: bytes, after: int | None) -> str:
    old_kind, old = _outcome(decode_packet, packet, after)
    new_kind, batch = _outcome(decode_batch, packet, after)
    assert new_kind == old_kind, (old, batch)
    if old_kind == "refused":
        assert batch == old  # the same text: a refusal names the same reason
        return old_kind
    devices, samples = old
    assert batch.devices == devices and len(batch) == len(samples)
    for j, sample in enumerate(samples):
        assert batch.first_seq + j == sample.seq
        assert batch.times[j] == sample.client_time or (np.isnan(sample.client_time) and np.isnan(batch.times[j]))
        for k, pose in enumerate(sample.poses):
            got = batch.pose(j, k)
            if pose is None:
                assert got is None and not batch.flags[j][k] & TRACKED
                continue
            assert batch.flags[j][k] & TRACKED and bool(batch.flags[j][k] & ENERGY) == pose.energy
            assert batch.positions[j, k].tobytes() == pose.position.tobytes()  # bit for bit
            assert batch.quats[j, k].tobytes() == pose.rotation[[3, 0, 1, 2]].tobytes()  # to_physics_quat's
            assert batch.jaws[j][k] == pose.jaw
            assert got.position.tobytes() == pose.position.tobytes()
            assert got.rotation.tobytes() == pose.rotation.tobytes()
            assert (got.jaw, got.energy) == (pose.jaw, pose.energy)
    rebuilt = batch.samples()  # the poses are compared field by field above; here the samples' frame
    assert [(a.seq, a.client_time, len(a.poses)) for a in rebuilt] == [
        (b.seq, b.client_time, len(b.poses)) for b in samples
    ]
    return old_kind


def test_random_valid_and_mutated_packets_decode_to_the_same_result():
    rng = random.Random(20)
    kinds = {"ok": 0, "refused": 0}
    for _ in range(400):
        packet = _valid_packet(rng)
        first, s = HEADER.unpack_from(packet, 0)[4], packet[2]
        after = rng.choice([None, first - 1, first + rng.randrange(s), first + s + 3, -1])
        kinds[_assert_same(packet, after)] += 1
        kinds[_assert_same(_mutated(rng, packet), after)] += 1
    assert kinds["ok"] > 300 and kinds["refused"] > 200  # both decisions exercised


def test_short_and_header_malformed_packets_raise_the_same_errors():
    good = encode_packet((1,), [InputSample(0, 0.0, (RigidPose([0.0, 0.0, 0.0]),))])
    for packet in [b"", b"\x01", good[:7], b"\x02" + good[1:], good[:3] + b"\x01" + good[4:], good + b"\x00"]:
        with pytest.raises(InputPacketError) as old:
            decode_packet(packet)
        with pytest.raises(InputPacketError) as new:
            decode_batch(packet)
        assert str(new.value) == str(old.value)


def test_a_bad_redundant_sample_refuses_the_packet_even_when_only_newer_ones_are_built():
    pose = RigidPose([0.1, 0.2, 0.3])
    data = bytearray(encode_packet((1, 2), [InputSample(s, s / 90, (pose, pose)) for s in range(4)]))
    struct.pack_into("<d", data, 8 + 2, float("nan"))  # sample 0's time, a sample the receiver already has
    with pytest.raises(InputPacketError, match="sample 0: non-finite time"):
        decode_batch(bytes(data), after=2)
    data[8 + 2 + 8 + 23 + 8 + 23] = TRACKED | 0x10  # sample 1, second pose: reserved bits (sample 0 still first)
    with pytest.raises(InputPacketError, match="sample 0: non-finite time"):
        decode_batch(bytes(data), after=2)


def test_untracked_and_zero_rotation_poses():
    body = bytearray(HEADER.pack(1, 2, 1, 0, 7) + bytes([1, 2]) + TIME.pack(0.5))
    body += POSE.pack(0, float("nan"), 0.0, 0.0, 0, 0, 0, 0, 0)  # untracked: its NaN is never read
    body += POSE.pack(TRACKED | ENERGY, 0.5, -0.25, 1.0, 0, 0, 0, 0, -12)  # zero rotation: the identity
    batch = decode_batch(bytes(body))
    assert batch.first_seq == 7 and batch.times == [0.5] and batch.flags == [[0, TRACKED | ENERGY]]
    assert batch.pose(0, 0) is None and batch.quats[0, 1].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert batch.positions[0, 1].tolist() == [0.5, -0.25, 1.0] and batch.jaws[0][1] == pytest.approx(-12e-4)
    assert decode_batch(bytes(body), after=7).times == []  # nothing new


def test_receive_batch_keeps_the_receivers_books_like_receive():
    rng = random.Random(3)
    old, new = InputReceiver(), InputReceiver()
    pose = RigidPose([0.0, 0.1, 0.0])
    seq = 0
    for n in range(60):
        count = rng.randint(1, 6)
        start = max(0, seq - rng.randint(0, 4)) if rng.random() < 0.8 else seq + rng.randint(1, 5)  # repeats, gaps
        packet = encode_packet((0, 1), [InputSample(s, s / 90, (pose, None)) for s in range(start, start + count)])
        if rng.random() < 0.1:
            packet = packet[:-1]
        try:
            fresh = old.receive(packet, float(n))
        except InputPacketError:
            with pytest.raises(InputPacketError):
                new.receive_batch(packet, float(n))
            continue
        batch = new.receive_batch(packet, float(n))
        assert [s.seq for s in fresh] == [batch.first_seq + j for j in range(len(batch))]
        assert (old.highest, old.received_at, old.devices, old.missing, old.duplicates) == (
            new.highest,
            new.received_at,
            new.devices,
            new.missing,
            new.duplicates,
        )
        seq = max(seq, start + count)
