"""Snapshot codec: exact reconstruction, deltas against acked baselines, epochs, joiners, malformed input."""

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netcode.messaging.messages import MessageError
from netcode.sync.patches import MAX_PATCH_SIZE, PatchLayout, make_patches
from netcode.sync.quantize import max_angular_error, rotation_angle
from netcode.sync.snapshot import (
    HEADER_SIZE,
    RECORD_PATCH,
    RECORD_RIGID,
    RigidSet,
    SnapshotError,
    pack_header,
    parse_header,
    read_header,
    write_varint,
)
from netcode.sync.snapshot_codec import OPTIMISM_ALL, SnapshotServer
from netcode.sync.snapshot_decode import EpochMismatchError, SnapshotDecoder
from netcode.sync.snapshot_messages import (
    SNAPSHOT_REGISTRY,
    TopologyUpdate,
    decode_message,
    snapshot_message,
    topology_message,
)
from tests.netcode.sync.snapshot_helpers import Scene, bits_of, connect, eg0, state_of, to_bytes

E = 1e-4


def frame(server: SnapshotServer, scene: Scene, f: int, **kw):
    return server.begin_frame(f / 60, scene.surface(f, **kw), scene.rigid(f))


def assert_exact(decoder: SnapshotDecoder, server: SnapshotServer, client_id: object, patches=None):
    """The decoder shows exactly the versions the server sent it (the encoder's and decoder's choice of
    grid values agree), and they are within the error bound of this frame's truth (given patches, or all)."""
    grid = decoder.surface_grid()
    sent = server.client_grid(client_id)
    shown = server.config.positions.dequantize(grid)
    for p in range(server.layout.patch_count) if patches is None else patches:
        sl = server.layout.patch(p)
        assert np.array_equal(grid[sl], sent[sl]), f"patch {p} differs"
        assert np.abs(shown[sl] - server.frame.positions[sl]).max() <= E, f"patch {p} beyond the bound"


# ------------------------------------------------------------------------------------------ patches


def test_make_patches_covers_every_vertex_once_in_coherent_groups():
    scene = Scene(n=40)
    layout = make_patches(scene.ids, scene.rest, 100)
    layout.validate()
    assert sorted(layout.vertex_ids.tolist()) == scene.ids.tolist()
    assert layout.sizes.max() <= 100 and layout.patch_count == 16
    for p in range(layout.patch_count):
        pts = scene.rest[layout.vertex_ids[layout.patch(p)]]
        assert np.linalg.norm(pts.max(0) - pts.min(0)) < 0.025  # a 5 cm square split in 16 pieces
    with pytest.raises(ValueError):
        PatchLayout(np.array([1, 1]), np.array([0, 2])).validate()
    with pytest.raises(ValueError):
        PatchLayout(np.arange(5), np.array([0, 5, 5])).validate()
    with pytest.raises(ValueError):
        make_patches(scene.ids, scene.rest, MAX_PATCH_SIZE + 1)


# ------------------------------------------------------------------------------------------ round trips


def test_full_then_delta_round_trip_is_exact_and_within_bounds():
    scene = Scene()
    server = SnapshotServer(scene.layout)
    dec = connect(server, "a")
    for f in range(12):
        fr = frame(server, scene, f)
        snap = dec.decode(server.encode("a"))
        server.on_ack("a", snap.sequence)
        assert_exact(dec, server, "a")
        shown, received = dec.surface()
        assert received.all()
        assert np.abs(shown - fr.positions).max() <= E
        rigid = scene.rigid(f)
        decoded = dec.rigid()
        for j, oid in enumerate(rigid.ids.tolist()):
            assert np.abs(decoded[oid].positions - rigid.positions[j]).max() <= E + 1e-12
            angle = rotation_angle(decoded[oid].orientation, rigid.orientations[j])[0]
            assert angle <= max_angular_error(server.config.rotation_bits)
            if np.isnan(rigid.jaws[j]):
                assert decoded[oid].jaw is None
            else:
                assert abs(decoded[oid].jaw - rigid.jaws[j]) <= server.config.jaw.max_error + 1e-12
        if f == 0:
            assert all(o.full for o in snap.objects) and len(snap.objects) == scene.layout.patch_count + 3
        else:
            assert not any(o.full for o in snap.objects)


def test_rigid_changes_are_exact_in_both_modes():
    """Rigid orientations and jaws travel as changes of their codes when that is shorter, else absolute
    (a flip of the largest component, a big jump): the client holds exactly the server's codes."""
    scene = Scene()
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0)
    for f in range(30):
        rigid = scene.rigid(f)
        ang = 0.002 * f if f < 20 else 3.0 + 0.5 * f  # slow turn, then jumps (largest component changes)
        quats = rigid.orientations.copy()
        quats[0] = [0.0, np.sin(ang / 2), 0.0, np.cos(ang / 2)]
        jaws = rigid.jaws.copy()
        jaws[0] = 0.3 + (0.001 * f if f < 20 else 0.4 * (f % 2))
        rigid = RigidSet(rigid.ids, rigid.kinds, rigid.positions, quats, jaws)
        fr = server.begin_frame(f / 60, scene.surface(f), rigid)
        data = server.encode(0)
        snap = dec.decode(data)
        server.on_ack(0, snap.sequence)
        sent = {o.id for o in snap.objects if o.kind != "patch"}
        for j, oid in enumerate(fr.rigid_ids.tolist()):
            if oid in sent:
                held = dec._rigid_versions[oid][snap.sequence]
                assert held.rot == int(fr.rigid_rot[j]) and held.jaw == int(fr.rigid_jaw[j])
                assert tuple(held.pos.tolist()) == tuple(fr.rigid_pos[j].tolist())
    assert dec.rejected == 0


def test_positions_within_error_of_truth():
    scene = Scene(seed=4)
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0)
    for f in range(8):
        truth = scene.surface(f)
        server.begin_frame(f / 60, truth, scene.rigid(f))
        snap = dec.decode(server.encode(0))
        server.on_ack(0, snap.sequence)
        for obj in snap.objects:
            if obj.kind == "patch":
                assert np.abs(obj.positions - truth[scene.layout.patch(obj.id)]).max() <= E + 1e-12
                assert np.array_equal(obj.vertex_ids, scene.layout.vertex_ids[scene.layout.patch(obj.id)])
                assert obj.server_time == pytest.approx(f / 60)


def test_unchanged_objects_cost_nothing():
    scene = Scene()
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0)
    rigid = scene.rigid(0)
    static = scene.surface(0, move=False, jitter=0)
    sizes = []
    for f in range(20):
        server.begin_frame(f / 60, static, rigid)
        data = server.encode(0)
        sizes.append(len(data))
        server.on_ack(0, dec.decode(data).sequence)
    assert sizes[0] > 1000 and sizes[-1] == len(pack_header(server.sequence, 0.0, server.epoch, 0)) < HEADER_SIZE


def test_delta_against_acked_baseline_after_loss():
    """Snapshots are lost and acks arrive late; deltas always name a version the client holds."""
    rng = np.random.default_rng(5)
    scene = Scene(seed=5)
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0, resend_after=4)
    pending = []
    ages = []
    for f in range(120):
        frame(server, scene, f, move=f < 90)
        data = server.encode(0)
        for _due, seq in [a for a in pending if a[0] <= f]:
            server.on_ack(0, seq)
        pending = [a for a in pending if a[0] > f]
        if rng.random() < 0.3:  # lost
            continue
        snap = dec.decode(data)
        pending.append((f + 3, snap.sequence))
        sent = [o.id for o in snap.objects if o.kind == "patch" and o.id not in dec.approximate]
        assert_exact(dec, server, 0, sent)  # (a patch whose optimistic base was lost is shown approximately)
        ages.extend(f + 1 - s for s in [server.clients[0].acked_seq.max()] if s >= 0)
    assert dec.missing_baselines == 0 and dec.rejected == 0
    assert max(ages) > 3  # some deltas were against old baselines
    for _ in range(120, 140):  # quiet frames, no loss: the client converges exactly
        frame(server, scene, 89, move=True, jitter=0)
        snap = dec.decode(server.encode(0))
        server.on_ack(0, snap.sequence)
    assert_exact(dec, server, 0)


def test_server_baselines_are_exactly_the_versions_the_client_holds():
    """Deltas are chosen per client within the bound, so the client's versions are its own: under loss,
    late acks and a budget, every baseline the server keeps for a patch is bit-for-bit the version the
    decoder holds for that snapshot, and every decoded version is within the bound of its frame's truth."""
    rng = np.random.default_rng(21)
    scene = Scene(seed=21)
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0, budget=900, resend_after=4)
    pending, truths = [], {}
    for f in range(90):
        fr = frame(server, scene, f, move=f < 70)
        truths[fr.sequence] = fr.positions
        data = server.encode(0)
        for _due, seq in [a for a in pending if a[0] <= f]:
            server.on_ack(0, seq)
        pending = [a for a in pending if a[0] > f]
        if rng.random() < 0.2:
            continue
        snap = dec.decode(data)
        pending.append((f + int(rng.integers(1, 5)), snap.sequence))
        for obj in snap.objects:
            if obj.kind == "patch" and obj.id not in dec.approximate:  # (a lost optimistic base: approximate)
                sl = server.layout.patch(obj.id)
                assert np.abs(obj.positions - truths[snap.sequence][sl]).max() <= E
        client = server.clients[0]
        for p in np.flatnonzero(client.acked_seq >= 0):
            held = dec._patch_versions[p][int(client.acked_seq[p])]
            assert np.array_equal(held, client.acked_q[server.layout.patch(p)]), (f, p)
    assert dec.missing_baselines == 0 and dec.rejected == 0


def _run_acked_late(server, scene, dec, frames, lose=(), delay=6, start=0):
    """Frames ``start ..`` of a moving scene, snapshots ``lose`` (frame numbers) lost, the others acked ``delay``
    frames later in order; returns the snapshot sizes."""
    pending, sizes = [], []
    for f in range(start, start + frames):
        frame(server, scene, f)
        data = server.encode(0)
        sizes.append(len(data))
        for seq in [s for due, s in pending if due <= f]:
            server.on_ack(0, seq)
        pending = [a for a in pending if a[0] > f]
        if f not in lose:
            pending.append((f + delay, dec.decode(data).sequence))
    return sizes


def test_optimistic_deltas_go_against_the_version_last_sent():
    """With acks a round trip late, every other delta of a moving patch goes against the version sent the frame
    before (optimistic, SNAPSHOT.md 2.2): exact without loss, and smaller than deltas against acked versions."""
    sizes = {}
    for anchor in (1, 2):
        scene = Scene(seed=3)
        server = SnapshotServer(scene.layout, anchor_every=anchor, optimism=OPTIMISM_ALL)
        dec = connect(server, 0)
        sizes[anchor] = _run_acked_late(server, scene, dec, 40)[10:]
        optimistic = sum(int((r.bases >= 0).sum()) for r in server.clients[0].history.values())
        assert (optimistic > 0) == (anchor > 1)
        assert not dec.approximate and dec.skipped_entries == 0 and dec.rejected == 0
        assert_exact(dec, server, 0)
    assert sum(sizes[2]) < 0.95 * sum(sizes[1])


def test_only_a_client_whose_budget_binds_gets_optimistic_deltas():
    """The default encoder (``optimism="bound"``): a client without a budget, or with one that never binds, gets
    deltas against acknowledged versions only (fallback 0, never shown approximately after a loss); a client
    whose budget left a wanted patch out gets optimistic ones, and only within ``bound_window`` frames of such
    a snapshot."""
    scene = Scene(seed=3)
    server = SnapshotServer(scene.layout, anchor_every=3, bound_window=4)
    budgets = {"free": None, "ample": 60_000, "bound": 400}
    decoders = {c: connect(server, c, budget) for c, budget in budgets.items()}
    pending, skipped_at, optimistic_at = [], [], []
    for f in range(40):
        frame(server, scene, f)
        for c, dec in decoders.items():
            skipped = server.clients[c].stats["skipped_patches"]
            data = server.encode(c)
            if c == "bound":
                if server.clients[c].stats["skipped_patches"] > skipped:
                    skipped_at.append(server.sequence)
                if (server.clients[c].history[server.sequence].bases >= 0).any():
                    optimistic_at.append(server.sequence)
            if f % 7 != 5:  # every seventh snapshot lost
                pending.append((f + 6, c, dec.decode(data).sequence))
        for _, c, seq in [a for a in pending if a[0] <= f]:
            server.on_ack(c, seq)
        pending = [a for a in pending if a[0] > f]
    for c in ("free", "ample"):
        assert server.clients[c].stats["skipped_patches"] == 0
        assert all((r.bases == -1).all() for r in server.clients[c].history.values()), c
        assert not decoders[c].approximate and decoders[c].skipped_entries == 0
        assert_exact(decoders[c], server, c)
    assert optimistic_at and skipped_at
    for seq in optimistic_at:  # only after a snapshot that left a wanted patch out, within the window
        assert any(0 < seq - s <= 4 for s in skipped_at), seq
    assert decoders["bound"].rejected == 0 and decoders["bound"].missing_baselines == 0


def test_a_snapshot_that_spends_saved_credit_counts_as_bound():
    """A client that wanted more than its budget and got it from saved credit (nothing left out) is bound too:
    its next frames may go optimistic; one that stays within its budget is not."""
    scene = Scene(seed=5)
    server = SnapshotServer(scene.layout, anchor_every=3, bound_window=4)
    dec = connect(server, 0, 300, burst_bytes=50_000)
    f = 0
    client = server.clients[0]
    while not client.complete or server.sequence - client.bound_at < 8:  # the join (it binds), rest, credit saved
        frame(server, scene, f, move=f < 3)
        server.on_ack(0, dec.decode(server.encode(0)).sequence)
        f += 1
        assert f < 400
    quiet = server.sequence
    frame(server, scene, f, move=False)
    server.on_ack(0, dec.decode(server.encode(0)).sequence)
    assert client.bound_at < quiet and server._anchor_every(client, server.sequence + 1) == 1
    skipped = client.stats["skipped_patches"]
    frame(server, scene, f + 40)  # a jump: every patch moved, more than 300 bytes, within the credit
    data = server.encode(0)
    assert len(data) > 300 and client.stats["skipped_patches"] == skipped
    assert client.bound_at == server.sequence and server._anchor_every(client, server.sequence + 1) == 3


def test_a_lost_optimistic_base_is_shown_approximately_until_an_anchor():
    """A lost snapshot: the next one's optimistic entries are shown on what the client shows (not stored, not
    rejected) for less than ``anchor_every`` frames, after which the client shows exactly what was sent; the
    server never takes a version the client does not hold for a baseline."""
    scene = Scene(seed=4)
    server = SnapshotServer(scene.layout, anchor_every=3, optimism=OPTIMISM_ALL)
    dec = connect(server, 0)
    _run_acked_late(server, scene, dec, 30, lose={20})
    assert dec.skipped_entries > 0 and dec.rejected == 0 and dec.missing_baselines == 0
    assert not dec.approximate
    assert_exact(dec, server, 0)
    client = server.clients[0]
    for p in np.flatnonzero(client.acked_seq >= 0):
        held = dec._patch_versions[p][int(client.acked_seq[p])]
        assert np.array_equal(held, client.acked_q[server.layout.patch(p)])


def test_an_ack_that_shows_a_loss_sends_the_lost_patches_against_acked_versions():
    """``snap_ack`` fields that skip a snapshot mark the patches it carried broken: their next deltas go
    against the acked version (an anchor) at once, not after ``anchor_every`` frames."""
    scene = Scene(seed=8)
    server = SnapshotServer(scene.layout, anchor_every=16, optimism=OPTIMISM_ALL)
    dec = connect(server, 0)
    _run_acked_late(server, scene, dec, 8, delay=1)
    frame(server, scene, 8)
    server.encode(0)  # lost
    lost = server.clients[0].history[server.sequence].patches
    assert len(lost)
    frame(server, scene, 9)
    dec.decode(server.encode(0))
    server.on_ack_fields(0, **dec.ack_fields())  # newest 10, bit for 9 clear
    client = server.clients[0]
    assert client.broken[lost].all()
    frame(server, scene, 10)
    snap = dec.decode(server.encode(0))
    sent = client.history[snap.sequence]
    assert np.isin(lost, sent.patches).all() and (sent.bases[np.isin(sent.patches, lost)] == -1).all()
    assert not client.broken[lost].any() and not set(lost.tolist()) & set(dec.approximate)


def test_a_late_snapshot_a_later_one_needed_as_base_is_dropped():
    """Snapshot s arrives after s + 1, whose optimistic entries needed it: s is never applied (nor acked), so
    that an ack says exactly which versions the client holds."""
    from netcode.sync.snapshot_decode import LateBaseError

    scene = Scene(seed=6)
    server = SnapshotServer(scene.layout, anchor_every=4, optimism=OPTIMISM_ALL)
    dec = connect(server, 0)
    _run_acked_late(server, scene, dec, 12)
    frame(server, scene, 12)
    late = server.encode(0)
    frame(server, scene, 13)
    dec.decode(server.encode(0))
    assert dec.approximate
    with pytest.raises(LateBaseError):
        dec.decode(late)
    assert dec.late_dropped == 1 and dec.newest_sequence == server.sequence


def test_late_joiner_and_reconnect_get_full_state_then_deltas():
    scene = Scene()
    server = SnapshotServer(scene.layout)
    early = connect(server, "early")
    for f in range(10):
        frame(server, scene, f)
        server.on_ack("early", early.decode(server.encode("early")).sequence)
    late = connect(server, "late")
    frame(server, scene, 10)
    server.on_ack("early", early.decode(server.encode("early")).sequence)
    snap = late.decode(server.encode("late"))
    server.on_ack("late", snap.sequence)
    assert all(o.full for o in snap.objects)
    assert_exact(late, server, "late")
    assert server.clients["late"].complete
    frame(server, scene, 11)
    snap = late.decode(server.encode("late"))
    assert snap.objects and not any(o.full for o in snap.objects)
    # reconnect: baselines forgotten, everything full again
    server.reset_client("late")
    fresh = SnapshotDecoder()
    for message in server.join_messages():
        fresh.on_message(message)
    frame(server, scene, 12)
    snap = fresh.decode(server.encode("late"))
    assert all(o.full for o in snap.objects) and len(snap.objects) == scene.layout.patch_count + 3
    assert_exact(fresh, server, "late")


def test_late_joiner_under_budget_is_complete_after_a_few_frames():
    scene = Scene()
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0, budget=600)
    for _f in range(60):
        frame(server, scene, 5, move=False, jitter=0)
        data = server.encode(0)
        assert len(data) <= 600
        server.on_ack(0, dec.decode(data).sequence)
        if server.clients[0].complete:
            break
    assert server.clients[0].complete and dec.surface()[1].all()
    assert_exact(dec, server, 0)


def test_a_full_patch_larger_than_the_budget_is_sent_on_saved_credit():
    """A budget below one patch's full record: without credit no patch ever goes; with one frame's budget of
    credit every patch arrives, and over any k frames the snapshots stay within k budgets plus the credit."""
    budget = 70
    for burst in (0, budget):
        scene = Scene()
        server = SnapshotServer(scene.layout)
        dec = connect(server, 0, budget=budget, burst_bytes=burst)
        sizes = []
        for _f in range(60):
            frame(server, scene, 5, move=False, jitter=0)
            data = server.encode(0)
            sizes.append(len(data))
            server.on_ack(0, dec.decode(data).sequence)
        over = np.cumsum(np.array(sizes) - budget)
        worst = max(float(np.max(over[j:] - (over[j - 1] if j else 0))) for j in range(len(over)))
        assert worst <= burst and max(sizes) <= budget + burst
        assert server.clients[0].credit <= burst
        if burst == 0:
            assert not dec.surface()[1].any()  # a full record (~75 bytes here) never fits
        else:
            assert server.clients[0].complete and dec.surface()[1].all()
            assert_exact(dec, server, 0)
    with pytest.raises(ValueError, match="burst_bytes"):
        server.add_client(1, budget_bytes=budget, burst_bytes=-1)


# ------------------------------------------------------------------------------------------ epochs


def cut_layout(scene: Scene, layout: PatchLayout):
    removed = layout.vertex_ids[layout.vertex_ids % 7 == 3]
    alive = np.setdiff1d(layout.vertex_ids, removed)
    return removed, make_patches(alive, scene.rest[alive], 40)


def test_epoch_change_across_a_cut():
    scene = Scene()
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0)
    for f in range(5):
        frame(server, scene, f)
        server.on_ack(0, dec.decode(server.encode(0)).sequence)
    old_snapshot = server.encode(0)  # epoch 1, not yet delivered
    removed, layout = cut_layout(scene, scene.layout)
    topo = server.change_topology(layout, removed_vertices=removed, instrument=1)
    pos = scene.surface(5)
    full_by_id = dict(zip(scene.layout.vertex_ids.tolist(), pos, strict=True))
    truth = np.array([full_by_id[v] for v in layout.vertex_ids.tolist()])
    server.begin_frame(6 / 60, truth, scene.rigid(5))
    new_snapshot = server.encode(0)
    before = state_of(dec)
    with pytest.raises(EpochMismatchError, match="held") as info:
        dec.decode(new_snapshot)  # topology not there yet: held, not applied
    assert info.value.held and state_of(dec) == before
    applied = dec.on_message(topo)
    assert dec.epoch == 2 and len(applied) == 1
    snap = applied[0]
    patches = [o for o in snap.objects if o.kind == "patch"]
    assert {o.id for o in patches} == set(range(layout.patch_count))
    # the surviving vertices' acked versions are carried over the cut: deltas, not full records
    assert not any(o.full for o in patches)
    assert all(o.full for o in snap.objects if o.kind != "patch")
    server.on_ack(0, snap.sequence)
    assert_exact(dec, server, 0)
    shown, received = dec.surface()
    assert received.all() and np.abs(shown - truth).max() <= E + 1e-12
    with pytest.raises(EpochMismatchError, match="older") as info:
        dec.decode(old_snapshot)
    assert not info.value.held
    with pytest.raises(SnapshotError, match="older"):
        dec.apply_topology(TopologyUpdate(1, "cut", None, scene.layout))
    server.on_ack(0, 5)  # a late ack of the old epoch is ignored
    assert server.clients[0].acked_seq.max() == snap.sequence


def test_baselines_carried_over_cuts_under_loss_and_late_topology():
    """Two cuts while the surface moves, snapshots are lost, acks come late and the topology message
    arrives after snapshots of the new epoch: the surviving vertices' acked versions serve as baselines
    (carried entries), every patch the client applies is exactly what the server sent, nothing is
    rejected; a topology change with cause "full" (a reset) sends full records again."""
    rng = np.random.default_rng(11)
    scene = Scene(seed=11)
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0, resend_after=4)
    acks, topo_due, held = [], [], []
    layout = scene.layout
    alive = layout.vertex_ids
    carried = full = 0
    for f in range(90):
        if f in (30, 55):
            drop = alive[alive % 11 == f % 11]
            alive = np.setdiff1d(alive, drop)
            layout = make_patches(alive, scene.rest[alive], 30 + f // 10)
            topo_due.append((f + 2, server.change_topology(layout, removed_vertices=drop)))
        pos = scene.surface(f, move=f < 70)
        by_id = dict(zip(scene.layout.vertex_ids.tolist(), pos, strict=True))
        server.begin_frame(f / 60, np.array([by_id[v] for v in layout.vertex_ids.tolist()]), scene.rigid(f))
        data = server.encode(0)
        for _due, seq in [a for a in acks if a[0] <= f]:
            server.on_ack(0, seq)
        acks = [a for a in acks if a[0] > f]
        snaps = []
        for _due, msg in [t for t in topo_due if t[0] <= f]:
            snaps += dec.on_message(msg)
        topo_due = [t for t in topo_due if t[0] > f]
        if rng.random() >= 0.25:
            try:
                snaps.append(dec.decode(data))
            except EpochMismatchError as exc:
                assert exc.held
                held.append(f)
        for snap in snaps:
            acks.append((f + 3, snap.sequence))
            patches = [o for o in snap.objects if o.kind == "patch"]
            if snap.sequence == server.sequence:  # the newest: what the client shows is what was sent
                assert_exact(dec, server, 0, [o.id for o in patches if o.id not in dec.approximate])
            if snap.epoch > 1:
                carried += sum(not o.full for o in patches)
                full += sum(o.full for o in patches)
    assert held and dec.missing_baselines == 0 and dec.rejected == 0
    assert carried > 2 * full  # after a cut, deltas (carried, then acked) rather than full records
    for _due, seq in acks:
        server.on_ack(0, seq)
    for f in range(90, 100):  # quiet, no loss: the acked versions are what the client shows, within the bound
        server.begin_frame(f / 60, server.frame.positions, scene.rigid(f))
        server.on_ack(0, dec.decode(server.encode(0)).sequence)
    assert np.array_equal(dec.surface_grid(), server.clients[0].acked_q)
    assert np.abs(dec.surface()[0] - server.frame.positions).max() <= E
    # a reset (cause "full"): no carried baselines, full records
    dec.on_message(server.change_topology(layout, cause="full"))
    server.begin_frame(2.0, server.frame.positions, scene.rigid(100))
    snap = dec.decode(server.encode(0))
    assert all(o.full for o in snap.objects) and dec._carry is None


def test_carried_baseline_not_held_is_rejected_and_counted():
    scene = Scene()
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0)
    for f in range(3):
        frame(server, scene, f)
        server.on_ack(0, dec.decode(server.encode(0)).sequence)
    removed, layout = cut_layout(scene, scene.layout)
    dec.on_message(server.change_topology(layout, removed_vertices=removed))
    by_id = dict(zip(scene.layout.vertex_ids.tolist(), scene.surface(3), strict=True))
    server.begin_frame(4 / 60, np.array([by_id[v] for v in layout.vertex_ids.tolist()]), scene.rigid(3))
    data = server.encode(0)
    probe = copy.deepcopy(dec)
    for versions in probe._carry[1]:
        versions.clear()  # the client lost the previous epoch's versions
    before = state_of(probe)
    with pytest.raises(SnapshotError, match=r"carried baseline .* not held"):
        probe.decode(data)
    assert probe.missing_baselines == 1 and state_of(probe) == before
    assert not any(o.full for o in dec.decode(data).objects if o.kind == "patch")


def test_topology_message_round_trip_and_validation():
    scene = Scene()
    tris = np.array([[0, 1, 2], [2, 3, 4]])
    message = topology_message(
        TopologyUpdate(3, "cut", 2, scene.layout, removed_vertices=np.array([5, 9]), removed_triangles=tris)
    )
    kind, update = decode_message(message)
    assert kind == "snap_topology" and update.epoch == 3 and update.instrument == 2
    assert update.layout == scene.layout
    assert update.removed_triangles.tolist() == tris.tolist() and update.added_triangles.shape == (0, 3)
    fields = SNAPSHOT_REGISTRY.decode(message).fields
    for key, value in [
        ("patch_offsets", b"junk"),
        ("removed_triangles", topology_message.__globals__["pack_ids"](np.arange(4))),
        ("cause", "melt"),
        ("epoch", -1),
    ]:
        bad = SNAPSHOT_REGISTRY.encode("snap_topology", {**fields, key: value})
        with pytest.raises(SnapshotError):
            decode_message(bad)
    with pytest.raises(SnapshotError):
        decode_message(b"\x81\xa1v\x02")


# ------------------------------------------------------------------------------------------ malformed


def one_decoder_and_snapshots():
    """A decoder that has applied two snapshots, and the next (delta) snapshot for it."""
    scene = Scene(seed=9)
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0)
    for f in range(2):
        frame(server, scene, f)
        server.on_ack(0, dec.decode(server.encode(0)).sequence)
    frame(server, scene, 2)
    return server, dec, server.encode(0)


def test_truncations_and_trailing_bytes_are_rejected_without_state_change():
    _server, dec, data = one_decoder_and_snapshots()
    before = state_of(dec)
    for cut in range(len(data)):
        with pytest.raises(SnapshotError):
            dec.decode(data[:cut])
        assert state_of(dec) == before
    with pytest.raises(SnapshotError, match="after the last"):
        dec.decode(data + b"\x00")
    assert state_of(dec) == before
    dec.decode(data)  # the intact snapshot still applies


def test_bad_header_counts_ids_and_baselines():
    server, dec, data = one_decoder_and_snapshots()
    seq, t, epoch, count, head = read_header(data)
    before = state_of(dec)

    def rejected(blob, match):
        with pytest.raises(SnapshotError, match=match):
            dec.decode(blob)
        assert state_of(dec) == before

    rejected(b"\x01" + data[1:], "version")  # version 1 had no runs layout
    assert parse_header(data) == (seq, t, epoch, count) and data[:head] == pack_header(seq, t, epoch, count)
    rejected(pack_header(seq, t, epoch, count + 1) + data[head:], "ends after")
    rejected(pack_header(seq, t, epoch, count - 1) + data[head:], "after the last")
    rejected(pack_header(seq, float("nan"), epoch, count) + data[head:], "time")
    rejected(pack_header(seq, t, epoch, 0x10000) + data[head:], "out of range")
    rejected(data[:1] + b"\xff" * 5 + data[2:], "longer than 5 bytes")
    rejected(data[: head - 1] + b"\x80", "truncated varint")

    def record(tag, oid, age, body=b""):
        out = bytearray((tag,))
        write_varint(out, oid)
        write_varint(out, age)
        return bytes(out) + body

    n_patches = server.layout.patch_count
    n0 = int(server.layout.sizes[0])

    def patch_record(entries, count=None, pad="0"):
        """A patch record of (id, age or None for "same as the previous", block bit string[, fallback]) entries;
        the age is written as its code: 0 full, age + 1 for a delta ("carried" for code 1), a delta's fallback
        (0: the base is the acked version itself) after it."""
        bits = ""
        prev = -1
        for pid, age, block, *fallback in entries:
            code = None if age is None else (1 if age == "carried" else age + 1 if age else 0)
            ages = "1" if code is None else "0" + eg0(code) + (eg0(fallback[0] if fallback else 0) if code >= 2 else "")
            bits += eg0(pid - prev - 1) + ages + block
            prev = pid
        bits += pad * (-len(bits) % 8)
        n = len(entries) if count is None else count
        return bytes((RECORD_PATCH, n & 0xFF, n >> 8)) + to_bytes(bits)

    # block headers in a patch record are relative to the previous entry's, the first to [runs, k = 0, 0, 0]:
    # "1" = same layout, or "0" and 2 layout bits; then per axis Exp-Golomb(0) of zigzag(k change)
    k0 = eg0(0) * 3  # k unchanged (0) on every axis
    zero_block = "0" + bits_of(1, 2) + k0 + "0" * n0  # sparse layout, k = 0, nothing coded
    ok = patch_record([(0, 0, zero_block)])
    probe = copy.deepcopy(dec)  # the helper writes valid records
    assert probe.decode(pack_header(seq, t, epoch, 1) + ok).objects[0].id == 0
    rejected(pack_header(seq, t, epoch, 1) + patch_record([(n_patches, 0, zero_block)]), "out of range")
    rejected(pack_header(seq, t, epoch, 1) + patch_record([(0, 1000, zero_block)]), "before sequence 0")
    rejected(pack_header(seq, t, epoch, 1) + patch_record([(0, seq, zero_block)]), "not held")
    rejected(pack_header(seq, t, epoch, 1) + patch_record([(0, 1, zero_block, seq)]), "fallback age reaches before")
    rejected(pack_header(seq, t, epoch, 1) + patch_record([(0, 1, zero_block, 2)]), "baseline 0 is not held")
    rejected(pack_header(seq, t, epoch, 2) + patch_record([(0, 0, zero_block)]) * 2, "twice")
    rejected(pack_header(seq, t, epoch, 1) + patch_record([(0, None, zero_block)]), "no age to repeat")
    rejected(pack_header(seq, t, epoch, 1) + patch_record([(0, "carried", zero_block)]), "carried baseline")
    rejected(pack_header(seq, t, epoch, 1) + patch_record([]), "no patches")
    rejected(pack_header(seq, t, epoch, 1) + patch_record([(0, 0, zero_block)], count=2), "past the end")
    runs_zero = "1" + k0 + eg0(n0) * 3  # runs layout, k = 0: one zero run per axis
    padded = next(b for b in (zero_block, runs_zero) if (3 + len(b)) % 8)  # id gap 0, age 0: 3 bits
    rejected(pack_header(seq, t, epoch, 1) + patch_record([(0, 0, padded)], pad="1"), "padding")
    rejected(pack_header(seq, t, epoch, 1) + patch_record([(0, 0, "0" + bits_of(3, 2) + k0)]), "no layout")
    negative_k = "1" + eg0(1) + eg0(0) * 2 + "1" * 40  # k of x = 0 + unzigzag(1) = -1
    rejected(pack_header(seq, t, epoch, 1) + patch_record([(0, 0, negative_k)]), "k out of range")
    runs_too_long = "1" + k0 + eg0(n0 + 1)  # runs layout, k = 0: a zero run longer than the patch
    rejected(pack_header(seq, t, epoch, 1) + patch_record([(0, 0, runs_too_long)]), "run past the end")
    rejected(pack_header(seq, t, epoch, 1) + record(0x3F, 0, 0), "unknown record tag")

    def rigid_record(*entries, count=None, pad="0"):
        """A rigid record of entry bit strings (SNAPSHOT.md 2.1)."""
        bits = "".join(entries)
        bits += pad * (-len(bits) % 8)
        return bytes((RECORD_RIGID, len(entries) if count is None else count)) + to_bytes(bits)

    def head(oid, age, gap=None):  # id gap, then "0" and the age
        return eg0(oid if gap is None else gap) + "0" + eg0(age)

    rot0 = "1" + "0" + "0" * 44  # orientation present, absolute, code 0 (b = 14)
    pos0 = "1" + bits_of(0, 4) + eg0(0) * 3  # position present, k = 0, three zeros
    full = head(3, 0) + bits_of(0, 3) + pos0 + rot0 + "0"
    assert copy.deepcopy(dec).decode(pack_header(seq, t, epoch, 1) + rigid_record(full)).objects[0].id == 3
    rigid = pack_header(seq, t, epoch, 1)
    rejected(rigid + rigid_record(head(3, 0) + bits_of(0, 3) + "0" + rot0 + "0"), "without position")
    rejected(rigid + rigid_record(head(3, 0) + bits_of(7, 3) + pos0 + rot0 + "0"), "unknown rigid kind")
    rejected(rigid + rigid_record(head(99, 1) + "000"), "not held")
    rejected(rigid + rigid_record(head(0, 1) + "00" + "11" + bits_of(0, 4) + eg0(1 << 20)), "jaw code")
    rejected(rigid + rigid_record(head(0, 1) + "0" + "11" + bits_of(0, 4) + eg0(1 << 30) * 3 + "0"), "orientation")
    rejected(rigid + rigid_record(head(3, 0) + bits_of(0, 3) + pos0 + "11" + bits_of(0, 4) + eg0(0) * 3 + "0"), "full")
    rejected(rigid + rigid_record(eg0(0) + "1" + "000"), "no age to repeat")
    rejected(rigid + rigid_record(head(70000, 1) + "000"), "above")
    rejected(rigid + rigid_record("0" * 41 + "1"), "prefix")
    rejected(rigid + rigid_record(full, count=0), "no objects")
    rejected(rigid + rigid_record(full, count=2), "truncated")
    rejected(rigid + rigid_record(head(1, 1) + "000", pad="1"), "padding")
    rejected(pack_header(seq, t, epoch, 2) + rigid_record(head(0, 1) + "000") * 2, "twice")
    rejected(pack_header(seq, t, epoch, 1) + b"\x02" + b"\xff" * 6, "varint")
    applied = dec._applied[-1]
    rejected(pack_header(applied, t, epoch, 0), "already applied")
    assert dec.rejected >= 15
    dec.decode(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_escape_as_anything_but_snapshot_error(blob):
    _server, dec, data = _shared
    before = state_of(dec)
    for candidate in (blob, data[:HEADER_SIZE] + blob):
        try:
            dec.decode(candidate)
        except SnapshotError:
            assert state_of(dec) == before
        else:  # a valid (e.g. empty) snapshot: fine, but then state legitimately changed
            return


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**9), st.integers(1, 8))
def test_mutated_snapshots_are_rejected_or_decode_consistently(seed, flips):
    server, dec, data = _shared
    rng = np.random.default_rng(seed)
    blob = bytearray(data)
    for _ in range(flips):
        blob[int(rng.integers(0, len(blob)))] ^= 1 << int(rng.integers(0, 8))
    fresh_state = state_of(dec)
    try:
        snap = dec.decode(bytes(blob))
    except SnapshotError:
        assert state_of(dec) == fresh_state
        return
    # it parsed: every object is within the layout and the state is self-consistent
    for obj in snap.objects:
        if obj.kind == "patch":
            assert obj.positions.shape == (int(server.layout.sizes[obj.id]), 3)
    dec._applied.remove(snap.sequence)  # let the next example reuse the same decoder state shape


_shared = one_decoder_and_snapshots()


def test_snapshot_fits_a_message():
    _server, _dec, data = one_decoder_and_snapshots()
    assert decode_message(snapshot_message(data)) == ("snapshot", data)
    assert snapshot_message(data) == SNAPSHOT_REGISTRY.encode("snapshot", {"data": data})  # packed directly
    with pytest.raises(MessageError):
        snapshot_message(bytearray(data))


def test_ack_fields_name_recent_snapshots():
    server, dec, data = one_decoder_and_snapshots()
    dec.decode(data)
    ack = dec.ack_fields()
    assert ack["newest"] == 3 and ack["bits"] & 0b11 == 0b11
    assert SNAPSHOT_REGISTRY.decode(SNAPSHOT_REGISTRY.encode("snap_ack", ack)).fields == ack
    server.on_ack_fields(0, **ack)
    assert server.clients[0].acked_seq.max() == 3 and server.clients[0].acked_seq.min() >= 1
