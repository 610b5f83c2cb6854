"""The sweep plan: slabs of a phase share no vertex, chunks hold independent tets, removal keeps it valid."""

import numpy as np
import pytest

from physics.materials import Material
from physics.model import build_model, remove_tets
from physics.neo_hookean import CHUNK, LANES
from physics.partitioning import MAX_COLOURS, OVERFLOW, chunk_plan, greedy_colours, sweep_plan
from physics.procedural import tissue_block


def _check_plan(tets, order, chunks, slab_chunks):
    # Every chunk's tets share no vertex (they are solved together).
    for c in range(chunks.size - 1):
        corners = tets[order[chunks[c] : chunks[c + 1]]].ravel()
        assert np.unique(corners).size == corners.size, f"chunk {c} has tets sharing a vertex"
    # Slabs swept in parallel (same phase: all even or all odd) touch disjoint vertex sets.
    n_slabs = slab_chunks.size - 1
    verts = [set(tets[order[chunks[slab_chunks[s]] : chunks[slab_chunks[s + 1]]]].ravel()) for s in range(n_slabs)]
    for a in range(n_slabs):
        for b in range(a + 2, n_slabs, 2):
            assert not verts[a] & verts[b], f"slabs {a} and {b} share vertices"
    assert slab_chunks[-1] == chunks.size - 1


@pytest.mark.parametrize("n_parts", [1, 2, 3])
def test_plan_covers_every_live_tet_once_without_conflicts(n_parts):
    mesh = tissue_block(size=(0.08, 0.01, 0.02), cells=(16, 2, 4))
    alive = np.ones(mesh.n_tets, dtype=bool)
    alive[::7] = False
    order, keys, n_slabs = sweep_plan(mesh.vertices, mesh.tets, alive, n_parts)
    assert n_slabs == 2 * n_parts
    np.testing.assert_array_equal(np.sort(order), np.flatnonzero(alive))
    chunks, slab_chunks = chunk_plan(keys, n_slabs, 8)
    assert np.diff(chunks).max() <= 8
    assert np.all(np.diff(slab_chunks) > 0), "every slab has work"
    _check_plan(mesh.tets, order, chunks, slab_chunks)


def test_thin_mesh_falls_back_to_fewer_tasks():
    mesh = tissue_block(size=(0.02, 0.01, 0.01), cells=(4, 2, 2))  # too short for 8 slabs
    order, keys, n_slabs = sweep_plan(mesh.vertices, mesh.tets, np.ones(mesh.n_tets, bool), 4)
    assert n_slabs < 8
    _check_plan(mesh.tets, order, *chunk_plan(keys, n_slabs, 32))


def test_greedy_colours_are_proper():
    mesh = tissue_block(size=(0.02, 0.01, 0.01), cells=(4, 2, 2))
    colour = greedy_colours(mesh.tets, mesh.n_vertices)
    for c in np.unique(colour):
        corners = mesh.tets[colour == c].ravel()
        assert np.unique(corners).size == corners.size


def test_overflow_colour_is_swept_one_tet_at_a_time():
    keys = np.array([0, 0, 0, OVERFLOW, OVERFLOW, OVERFLOW, MAX_COLOURS + 1], dtype=np.int64)
    chunks, slab_chunks = chunk_plan(keys, 2, 32)
    np.testing.assert_array_equal(chunks, [0, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(slab_chunks, [0, 4, 5])


def test_model_plan_stays_valid_after_removing_tets():
    mesh = tissue_block(size=(0.08, 0.01, 0.02), cells=(16, 2, 4))
    model = build_model(mesh, [Material("m", young=1e4, poisson=0.45, density=1000)], n_parts=2)
    assert model.n_slabs == 4
    remove_tets(model, np.arange(0, mesh.n_tets, 5))
    assert set(model.order) == set(np.flatnonzero(model.alive))
    _check_plan(model.tets, model.order, model.chunks, model.slab_chunks)
    assert np.diff(model.chunks).max() <= CHUNK
    slot = model.block_slot
    np.testing.assert_array_equal(model.block_corners[:, slot], model.tets[model.order].T)
    np.testing.assert_array_equal(model.block_inv_mass[:, slot], model.inv_mass[model.tets[model.order]].T)
    np.testing.assert_array_equal(model.block_dm_inv[:, slot], model.dm_inv[model.order].T)
    np.testing.assert_array_equal(model.block_alpha_dev[slot], model.sweep_alpha_dev)
    _check_blocks(model)


def _check_blocks(model) -> None:
    """Each chunk starts at a whole SIMD block, its tets in order; the rest of the block is inert padding."""
    slots, chunks = model.chunk_slots, model.chunks
    assert np.all(slots % LANES == 0) and slots[-1] == model.block_corners.shape[1]
    counts = np.diff(chunks)
    assert np.all(np.diff(slots) >= counts) and np.all(np.diff(slots) < counts + LANES)
    for c in range(counts.size):
        np.testing.assert_array_equal(model.block_slot[chunks[c] : chunks[c + 1]], slots[c] + np.arange(counts[c]))
    pad = np.ones(model.block_corners.shape[1], bool)
    pad[model.block_slot] = False
    assert np.all(model.block_inv_mass[:, pad] == 0) and np.all(model.block_dm_inv[:, pad] == 0)
    assert np.all(model.block_alpha_dev[pad] > 0) and np.all(model.block_alpha_hyd[pad] > 0)
