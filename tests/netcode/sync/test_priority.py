"""Priority accumulators and the byte budget: respected to the byte, and nobody starves."""

import numpy as np
import pytest

from netcode.sync.priority import PriorityAccumulator, interest
from netcode.sync.snapshot import HEADER_SIZE
from netcode.sync.snapshot_codec import SnapshotServer, budget_for_rate
from tests.netcode.sync.snapshot_helpers import Scene, connect


def test_interest_grows_near_focus_points():
    pts = np.array([[0, 0, 0], [0.01, 0, 0], [0.1, 0, 0], [1, 0, 0]], float)
    near = interest(pts, np.array([[0, 0, 0]]), radius=0.03, gain=4)
    assert near[0] == pytest.approx(5.0) and np.all(np.diff(near) < 0) and near[-1] < 1.01
    assert np.array_equal(interest(pts, np.zeros((0, 3))), np.ones(4))
    two = interest(pts, np.array([[0, 0, 0], [1, 0, 0]]))
    assert two[-1] == pytest.approx(two[0])


def test_accumulator_order_reset_and_pending():
    acc = PriorityAccumulator(4)
    order = acc.update(np.array([1.0, 3.0, 0.0, 2.0]), np.array([True, True, True, True]))
    assert order.tolist() == [1, 3, 0]
    acc.acc[1] = 0.0  # sent (as the codec's record_sent resets it)
    order = acc.update(np.array([1.0, 0.5, 0.0, 0.0]), np.array([True, True, False, True]))
    assert order.tolist() == [0, 3, 1]  # 2.0, 2.0 (tie: lower index first... 0 then 3), 0.5
    assert acc.acc[2] == 0.0
    assert PriorityAccumulator(2).update(np.array([0.0, 1.0]), np.array([True, False])).tolist() == []


def test_accumulator_order_is_stable_among_many_ties():
    acc = PriorityAccumulator(200)
    weights = np.repeat([1.0, 2.0], 100)[np.random.default_rng(1).permutation(200)]
    order = acc.update(weights, np.ones(200, bool))
    expected = sorted(range(200), key=lambda i: (-weights[i], i))
    assert order.tolist() == expected


def test_budget_for_rate():
    assert budget_for_rate(1_000_000, 60) < 1_000_000 / 8 / 60
    assert budget_for_rate(256_000, 60) > 400
    assert budget_for_rate(10, 60) == HEADER_SIZE


def test_budget_respected_to_the_byte_over_many_frames_and_budgets():
    rng = np.random.default_rng(11)
    scene = Scene(seed=11)
    for trial in range(12):
        server = SnapshotServer(scene.layout)
        budget = int(rng.integers(HEADER_SIZE, 2500))
        dec = connect(server, 0, budget=budget, resend_after=3)
        pending = []
        for f in range(60):
            server.begin_frame(f / 60, scene.surface(f), scene.rigid(f))
            server.set_focus(0, scene.rigid(f).positions[:1])
            data = server.encode(0)
            assert len(data) <= budget, (trial, f, len(data), budget)
            for _due, seq in [a for a in pending if a[0] <= f]:
                server.on_ack(0, seq)
            pending = [a for a in pending if a[0] > f]
            if rng.random() < 0.1:
                continue
            snap = dec.decode(data)
            pending.append((f + 2, snap.sequence))
            q = server.client_grid(0)
            for obj in snap.objects:
                if obj.kind == "patch" and obj.id not in dec.approximate:  # (approximate: a lost optimistic base)
                    sl = server.layout.patch(obj.id)
                    assert np.array_equal(dec.surface_grid()[sl], q[sl])
                    assert np.abs(obj.positions - server.frame.positions[sl]).max() <= 1e-4
        assert server.clients[0].stats["bytes"] <= budget * 60


def test_every_changed_object_is_eventually_sent():
    """A tight budget and a hot region that changes every frame next to the focus: the far patches,
    changed once, still reach the client (their accumulators grow until they win)."""
    scene = Scene(seed=12)
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0, budget=None)
    still = scene.surface(0, move=False, jitter=0)
    for f in range(3):  # settle the client on the static surface
        server.begin_frame(f / 60, still, scene.rigid(0))
        server.on_ack(0, dec.decode(server.encode(0)).sequence)
    client = server.clients[0]
    client.budget_bytes = 260
    moved = still + np.array([0.0, 0.002, 0.0])  # every vertex changes once...
    hot = np.abs(moved[:, 0] - scene.centre[0]) < 0.01
    sent_far = set()
    for f in range(3, 400):
        surface = moved.copy()
        surface[hot, 1] += 0.0005 * np.sin(f)  # ...and the hot region keeps changing
        server.begin_frame(f / 60, surface, scene.rigid(0))
        server.set_focus(0, scene.centre[None, :])
        data = server.encode(0)
        assert len(data) <= 260
        snap = dec.decode(data)
        server.on_ack(0, snap.sequence)
        sent_far.update(o.id for o in snap.objects if o.kind == "patch")
        if client.complete and np.all(client.acked_seq > 3) and len(sent_far) == scene.layout.patch_count:
            break
    assert len(sent_far) == scene.layout.patch_count
    grid, q = dec.surface_grid(), server.client_grid(0)
    cold = ~hot[:]
    assert np.array_equal(grid[cold], q[cold])
    shown = server.config.positions.dequantize(grid)
    assert np.abs(shown[cold] - server.frame.positions[cold]).max() <= 1e-4
