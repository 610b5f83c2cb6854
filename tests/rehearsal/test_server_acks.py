"""Snapshot acks: the server hands the codec each acknowledged snapshot once, however often clients repeat it."""

import random

from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.server import _Client


def test_fresh_acks_name_every_acknowledged_snapshot_once_under_reordering():
    """The codec gets ``newest`` with every ack (applying it again is a no-op there) and, from the bits, only
    snapshots no earlier ack named: together every acknowledged snapshot, none of the bits twice."""
    rng = random.Random(5)
    client = _Client(0, Identity("s", 1, Role.OBSERVER, "o"), "s")
    handed: set[int] = set()
    named: set[int] = set()
    applied: set[int] = set()
    for newest in range(1, 400):
        applied |= {s for s in range(newest - 40, newest + 1) if s >= 0 and rng.random() < 0.9}
        ack = max(0, max(applied) - rng.choice([0, 0, 0, 3, 40]))  # mostly the newest, sometimes a late, reordered ack
        bits = sum(1 << i for i in range(32) if ack - 1 - i in applied)
        named |= {ack} | {ack - 1 - i for i in range(32) if bits >> i & 1}
        fresh_bits = client.fresh_acks(ack, bits)
        fresh = [ack - 1 - i for i in range(32) if fresh_bits >> i & 1]
        assert not handed & set(fresh)  # never a snapshot the codec already had
        handed |= {ack, *fresh}
    assert handed == named


def test_fresh_acks_survive_hostile_numbers():
    client = _Client(0, Identity("s", 1, Role.OBSERVER, "o"), "s")
    for newest, bits in [(2**63, 2**64 - 1), (-5, 3), (0, 0), (2**40, 1), (7, 2**64 - 1)]:
        assert 0 <= client.fresh_acks(newest, bits) < 2**32
