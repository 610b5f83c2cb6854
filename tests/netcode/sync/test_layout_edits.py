"""Topology changes as layout edits (SNAPSHOT.md 1, ``kept_patches``): untouched patches keep their ids,
vertices and baselines across epochs, and the message lists only the other patches' vertices."""

from __future__ import annotations

import numpy as np
import pytest

from netcode.sync.patches import PatchLayout, edit_layout, kept_patches, make_patches
from netcode.sync.snapshot import SnapshotError
from netcode.sync.snapshot_codec import SnapshotServer
from netcode.sync.snapshot_messages import SNAPSHOT_REGISTRY, parse_topology
from tests.netcode.sync.snapshot_helpers import Scene, connect

E = 1e-4


def grid_layout(n: int = 20, size: int = 25) -> tuple[np.ndarray, PatchLayout]:
    u = np.linspace(0, 0.05, n)
    x, z = np.meshgrid(u, u, indexing="ij")
    pos = np.stack([x.ravel(), np.zeros(n * n), z.ravel()], 1)
    return pos, make_patches(np.arange(n * n), pos, size)


def test_edit_keeps_untouched_patches_and_appends_new_vertices():
    pos, old = grid_layout()
    removed = old.vertex_ids[old.patch(3)][:5]  # five vertices of patch 3 go
    new_ids = np.arange(400, 430)  # thirty vertices join (cut faces)
    new_pos = np.random.default_rng(0).uniform(0, 0.01, (30, 3))
    ids = np.concatenate([np.setdiff1d(old.vertex_ids, removed), new_ids])
    positions = np.concatenate([pos[np.setdiff1d(old.vertex_ids, removed)], new_pos])
    new = edit_layout(old, ids, positions, 25)
    new.validate()
    assert sorted(new.vertex_ids.tolist()) == sorted(ids.tolist())
    kept = kept_patches(old, new)
    assert kept.tolist() == [p for p in range(old.patch_count) if p != 3]
    survivors = old.vertex_ids[old.patch(3)][5:]
    assert np.array_equal(new.vertex_ids[new.patch(3)], survivors)  # same order, minus the removed
    assert new.patch_count == old.patch_count + 2 and set(new.vertex_ids[new.offsets[old.patch_count] :]) == set(
        new_ids
    )


def test_an_emptied_patch_takes_a_new_patch_and_too_many_lay_out_afresh():
    pos, old = grid_layout()
    gone = old.vertex_ids[old.patch(2)]
    ids = np.concatenate([np.setdiff1d(old.vertex_ids, gone), [500, 501]])
    positions = np.concatenate([pos[np.setdiff1d(old.vertex_ids, gone)], np.zeros((2, 3))])
    new = edit_layout(old, ids, positions, 25)
    assert new.patch_count == old.patch_count and sorted(new.vertex_ids[new.patch(2)].tolist()) == [500, 501]
    assert 2 not in kept_patches(old, new).tolist() and len(kept_patches(old, new)) == old.patch_count - 1
    gone = np.concatenate([old.vertex_ids[old.patch(1)], old.vertex_ids[old.patch(2)]])
    ids = np.setdiff1d(old.vertex_ids, gone)  # two patches emptied, nothing new: a fresh layout
    assert edit_layout(old, ids, pos[ids], 25) == make_patches(ids, pos[ids], 25)


def test_edit_message_lists_only_the_changed_patches():
    scene = Scene()
    server = SnapshotServer(scene.layout)
    whole = SnapshotServer(scene.layout, layout_edits=False)
    alive = np.setdiff1d(scene.layout.vertex_ids, scene.layout.vertex_ids[scene.layout.patch(1)][:3])
    layout = server.edit_layout(alive, scene.rest[alive], 40)
    edit = server.change_topology(layout, removed_vertices=scene.layout.vertex_ids[scene.layout.patch(1)][:3])
    full = whole.change_topology(layout)
    listed = [len(SNAPSHOT_REGISTRY.decode(m).fields["patch_vertices"]) for m in (edit, full)]
    assert listed[0] < listed[1] / 3 and len(edit) < len(full)
    update = parse_topology(SNAPSHOT_REGISTRY.decode(edit).fields)
    assert update.kept_patches is not None and 1 not in update.kept_patches.tolist()
    assert update.resolve_layout(scene.layout) == layout
    assert parse_topology(SNAPSHOT_REGISTRY.decode(full).fields).kept_patches is None
    with pytest.raises(SnapshotError, match="previous layout"):
        update.resolve_layout(None)
    with pytest.raises(SnapshotError, match="changed size"):
        update.resolve_layout(make_patches(scene.ids, scene.rest, 17))


@pytest.mark.parametrize("edits", [True, False])
def test_cuts_faster_than_the_round_trip_keep_the_untouched_baselines(edits):
    """Three cuts two frames apart with a six-frame round trip: with layout edits the untouched patches
    stay deltas against versions acked in earlier epochs (including acks that arrive after a cut), within
    the bound, and the client shows exactly what the server sent; without, every cut before an ack costs
    full records."""
    scene = Scene(seed=3)
    server = SnapshotServer(scene.layout, layout_edits=edits)
    dec = connect(server, 0)
    layout, alive = scene.layout, scene.layout.vertex_ids
    acks: list[tuple[int, int]] = []
    full_after = 0
    for f in range(40):
        if f in (20, 22, 24):
            p = (f - 20) // 2
            drop = layout.vertex_ids[layout.patch(p)][:2]
            alive = np.setdiff1d(alive, drop)
            layout = (
                server.edit_layout(alive, scene.rest[alive], 40) if edits else make_patches(alive, scene.rest[alive])
            )
            dec.on_message(server.change_topology(layout, removed_vertices=drop))
        pos = scene.surface(f)
        by_id = dict(zip(scene.layout.vertex_ids.tolist(), pos, strict=True))
        server.begin_frame(f / 60, np.array([by_id[v] for v in layout.vertex_ids.tolist()]), scene.rigid(f))
        snap = dec.decode(server.encode(0))
        for _, seq in [a for a in acks if a[0] == f]:
            server.on_ack(0, seq)
        acks = [a for a in acks if a[0] != f]
        acks.append((f + 6, snap.sequence))
        if f >= 20:
            full_after += sum(o.full for o in snap.objects if o.kind == "patch")
        grid, sent = dec.surface_grid(), server.client_grid(0)
        assert np.array_equal(grid, sent)
        shown, received = dec.surface()
        if edits and f >= 8:  # the untouched patches (3 on) stay within the bound through the cuts
            rows = slice(int(layout.offsets[3]), None)
            assert received.all() and np.abs(shown[rows] - server.frame.positions[rows]).max() <= E + 1e-12
    assert dec.rejected == 0 and dec.missing_baselines == 0
    if edits:  # at most the cut patches (one cut again before its carried entry was acked)
        assert full_after <= 2
    else:
        assert full_after >= layout.patch_count
