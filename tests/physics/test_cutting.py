"""Cutting: closing scissor blades across a block split it in two along tet faces, keeping every tet."""

import msgpack
import numpy as np
import pytest

from physics.checkpoint import capture, from_bytes, restore, to_bytes
from physics.cutting import blade_length, blades_collide, swept_tets, wound_gap, wound_pairs
from physics.instruments import look_rotation, quat_to_matrix, scissors
from physics.mesh import signed_volumes
from physics.model import add_anchors, inverted_tets, live_volume
from physics.surface import boundary_triangles, connected_components, tet_neighbours
from physics.topology import TopologyChange
from tests.physics.scenes import Driver, block

SIZE, CELLS = (0.02, 0.008, 0.01), (8, 4, 4)
# Pointing down with local y = world x: the blades close in the world y-z plane, across the block's length.
ACROSS = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))
HINGE = (0.0013, 0.0158, 0.0)  # mid-cell in x; the 16 mm blades reach the block's bottom


def scissor_scene(position=HINGE, on_table: bool = True) -> Driver:
    model, state = block(size=SIZE, cells=CELLS, on_table=on_table)
    if not on_table:
        model.gravity[:] = 0.0  # floating free: only the tissue and what pulls on it move it
    return Driver(model, state, scissors(), position=position, orientation=ACROSS.copy(), jaw=1.0)


def cut(d: Driver) -> None:
    d.step()  # open
    d.jaw = 0.5
    d.step()
    d.jaw = 0.0
    d.step()


def test_blade_plane_geometry():
    assert blade_length(scissors().capsules) == pytest.approx(0.016)
    r = quat_to_matrix(ACROSS)
    np.testing.assert_allclose(r[:, 1], [1, 0, 0], atol=1e-12)  # blade plane normal = world x
    np.testing.assert_allclose(r[:, 2], [0, -1, 0], atol=1e-12)


def test_closing_blades_across_the_block_split_it_in_two():
    d = scissor_scene()
    n_tets, epoch0, n0 = d.model.n_live_tets, d.model.epoch, d.model.n_vertices
    assert connected_components(d.model.tets, d.model.alive)[0] == 1
    d.step()
    assert d.model.epoch == epoch0 and not d.events("cut")  # open blades cut nothing
    cut(d)
    changes = [t for r in d.reports for t in r.topology]
    cuts = d.events("cut")
    assert cuts and len(changes) == len(cuts)
    assert all(t.cause == "cut" and t.instrument == d.id and t.removed_tets.size == 0 for t in changes)
    assert all(c.detail["tets"] > 0 and c.detail["faces"] > 0 and c.detail["vertices"] > 0 for c in cuts)
    assert d.model.n_live_tets == n_tets  # nothing removed: the tissue is split
    assert d.model.epoch == epoch0 + len(changes) == changes[-1].epoch
    # The new vertices are appended, each a copy of an older one (same rest position).
    at = n0
    for t in changes:
        assert t.first_new == at
        assert np.all(t.new_vertices < at)
        at += t.new_vertices.size
    assert d.model.n_vertices == d.state.x.shape[0] == d.state.v.shape[0] == at > n0
    pieces, labels = connected_components(d.model.tets, d.model.alive)
    assert pieces == 2
    # One piece on each side of the blade plane (x = 1.3 mm), of similar size.
    centres = d.model.rest_positions[d.model.tets].mean(axis=1)[:, 0]
    for p in range(2):
        side = np.sign(centres[labels == p] - HINGE[0])
        assert abs(side.sum()) == side.size
    assert 0.4 < (labels == 0).mean() < 0.6
    # The surface is re-extracted: exactly the boundary of the live tets, the neighbours are the mesh's.
    np.testing.assert_array_equal(d.model.surface, boundary_triangles(d.model.tets, d.model.alive))
    neighbour, face = tet_neighbours(d.model.tets)
    np.testing.assert_array_equal(d.model.neighbour, neighbour)
    np.testing.assert_array_equal(d.model.neighbour_face, face)
    assert all(t.added_triangles.shape[0] > 0 for t in changes)


def test_a_split_cut_keeps_every_tet_its_volume_and_the_mass():
    d = scissor_scene()
    d.step()
    mass0, volume0 = d.model.mass.sum(), live_volume(d.model, d.state.x)
    rest0, dm0 = d.model.rest_volume.copy(), d.model.dm_inv.copy()
    quality0 = signed_volumes(d.state.x, d.model.tets).min()
    d.jaw = 0.0
    d.step()  # a frame that cuts, then its volume is measured on the positions the cut left
    assert d.events("cut")
    model = d.model
    np.testing.assert_array_equal(model.rest_volume, rest0)  # tets keep their rest shapes
    np.testing.assert_array_equal(model.dm_inv, dm0)
    np.testing.assert_allclose(model.mass.sum(), mass0, rtol=1e-13)
    per_tet = 0.25 * model.per_tet("density") * model.rest_volume
    lumped = np.bincount(model.tets.ravel(), weights=np.repeat(per_tet, 4), minlength=model.n_vertices)
    np.testing.assert_array_equal(model.mass, lumped)  # lumped again from the tets, copies included
    assert np.all(model.mass[model.wound_pairs] > 0)
    # No tet is degenerate or inverted: the rest shapes are the mesh's and the copies sit where their sources do.
    assert signed_volumes(model.rest_positions, model.tets).min() > 0
    assert inverted_tets(model, d.state.x) == 0
    assert signed_volumes(d.state.x, model.tets).min() > 0.5 * quality0
    assert live_volume(model, d.state.x) == pytest.approx(volume0, rel=0.05)  # one frame of squeezing at most
    a, b = model.wound_pairs.T
    np.testing.assert_array_equal(model.rest_positions[a], model.rest_positions[b])


def test_the_cut_halves_separate_and_a_distance_constraint_closes_the_wound():
    d = scissor_scene(on_table=False)
    cut(d)
    pairs = wound_pairs(d.model)
    assert pairs.shape[1] == 2 and pairs.shape[0] == d.model.n_vertices - 225  # every copy, with its original
    _, labels = connected_components(d.model.tets, d.model.alive)
    piece = np.zeros(d.model.n_vertices, np.int64)
    piece[d.model.tets.ravel()] = np.repeat(labels, 4)
    assert np.all(piece[pairs[:, 0]] != piece[pairs[:, 1]])  # each pair straddles the cut
    d.jaw = 1.0
    d.position = d.position + np.array([0, 0.03, 0])  # withdraw
    d.step()
    # Open the wound: move the +x half 2 mm further along x, and let it settle.
    plus = piece == labels[np.argmax(d.model.rest_positions[d.model.tets].mean(axis=1)[:, 0])]
    d.state.x[plus, 0] += 0.002
    d.step(5)
    assert wound_gap(d.model, d.state.x) > 0.0015
    # A suture's pull as the simplest distance constraint the solver has: both vertices of each pair tied (by
    # the model's ligament springs, solved in every substep) to the pair's midpoint, followed frame by frame.
    a, b = pairs.T
    midpoint = 0.5 * (d.state.x[a] + d.state.x[b])
    assert add_anchors(d.model, pairs.ravel(), np.repeat(midpoint, 2, axis=0)) == np.unique(pairs).size
    rows = {int(v): i for i, v in enumerate(d.model.anchor_vertex)}
    ra, rb = [rows[int(v)] for v in a], [rows[int(v)] for v in b]
    for _ in range(40):
        midpoint = 0.5 * (d.state.x[a] + d.state.x[b])
        d.model.anchor_position[ra] = d.model.anchor_position[rb] = midpoint
        d.step()
    assert wound_gap(d.model, d.state.x) < 2e-4 and wound_gap(d.model, d.state.x, pairs[:0]) == 0.0
    assert np.all(np.isfinite(d.state.x)) and inverted_tets(d.model, d.state.x) == 0


def test_a_cut_past_the_vertex_cap_is_refused_and_changes_nothing():
    d = scissor_scene()
    d.model.vertex_cap = d.model.n_vertices + 3
    before = (d.model.epoch, d.model.tets.copy(), d.model.surface.copy(), d.model.n_vertices)
    cut(d)
    refused = d.events("cut_refused")
    assert refused and not d.events("cut")
    assert "cap" in refused[0].detail["reason"] and refused[0].detail["tets"] > 0
    assert d.state.counters["cut_refused"] == len(refused)
    assert d.model.epoch == before[0] and d.model.n_vertices == before[3] == d.state.x.shape[0]
    np.testing.assert_array_equal(d.model.tets, before[1])
    np.testing.assert_array_equal(d.model.surface, before[2])


def test_a_restored_split_world_steps_bit_for_bit():
    d = scissor_scene()
    cut(d)
    assert d.model.wound_pairs.size
    model, state = restore(from_bytes(to_bytes(capture(d.model, d.state))))
    np.testing.assert_array_equal(model.wound_pairs, d.model.wound_pairs, strict=True)
    assert model.vertex_cap == d.model.vertex_cap
    d.jaw = 1.0
    twin = Driver(model, state, d.spec, position=d.position.copy(), orientation=d.orientation.copy(), jaw=1.0)
    for _ in range(10):
        d.position = d.position + np.array([0.0, 0.002, 0.0])
        twin.position = d.position.copy()
        d.step()
        twin.step()
    assert d.state.x.tobytes() == twin.state.x.tobytes() and d.state.v.tobytes() == twin.state.v.tobytes()


def test_blades_beside_the_block_cut_nothing():
    d = scissor_scene(position=(0.03, 0.0158, 0.0))
    cut(d)
    assert not d.events("cut") and d.model.epoch == 0 and d.model.n_live_tets == d.model.n_tets


def test_the_solver_keeps_running_after_two_cuts():
    d = scissor_scene()
    cut(d)
    # A second snip one cell over splits off the column of cells between the two blade planes.
    d.position = d.position - np.array([0.0026, 0.0, 0.0])
    d.jaw = 1.0
    d.step()
    cut(d)
    assert len(d.events("cut")) >= 3
    assert d.model.vertex_used().all()  # splitting orphans no vertex
    assert connected_components(d.model.tets, d.model.alive)[0] == 3
    np.testing.assert_array_equal(d.model.surface, boundary_triangles(d.model.tets, d.model.alive))
    assert d.model.block_slot.shape[0] == d.model.sweep_alpha_dev.shape[0] == d.model.n_live_tets == d.model.n_tets
    d.jaw = 1.0
    d.position = d.position + np.array([0, 0.02, 0])  # withdraw upward
    d.step(20)
    assert np.all(np.isfinite(d.state.x)) and np.all(np.isfinite(d.state.v))
    assert d.state.counters["nonfinite_resets"] == 0
    # The three pieces rest on the table, undisturbed.
    assert d.state.x[:, 1].min() > -1e-4
    assert np.abs(d.state.x - d.model.rest_positions).max() < 0.002


def test_swept_tets_only_while_closing():
    d = scissor_scene()
    r = quat_to_matrix(ACROSS)
    x, p = d.state.x, np.asarray(HINGE)
    assert swept_tets(d.model, x, p, r, 0.0, 1.0, 0.016).size == 0  # opening
    assert swept_tets(d.model, x, p, r, 0.5, 0.5, 0.016).size == 0
    half = swept_tets(d.model, x, p, r, 1.0, 0.5, 0.016)
    rest = swept_tets(d.model, x, p, r, 0.5, 0.0, 0.016)
    full = swept_tets(d.model, x, p, r, 1.0, 0.0, 0.016)
    # Closing in two steps sweeps exactly what closing at once does; each step sweeps only part of it.
    assert half.size and rest.size
    np.testing.assert_array_equal(np.union1d(half, rest), full)
    assert half.size < full.size and rest.size < full.size
    short = swept_tets(d.model, x, p, r, 1.0, 0.0, 0.012)
    assert 0 < short.size < full.size


def test_topology_change_round_trips_through_msgpack():
    d = scissor_scene()
    cut(d)
    change = next(t for r in d.reports for t in r.topology)
    wire = msgpack.packb(change.to_message(), use_bin_type=True)
    back = TopologyChange.from_message(msgpack.unpackb(wire, raw=False))
    assert (back.epoch, back.cause, back.instrument) == (change.epoch, change.cause, change.instrument)
    np.testing.assert_array_equal(back.removed_tets, change.removed_tets)
    np.testing.assert_array_equal(back.removed_triangles, change.removed_triangles)
    np.testing.assert_array_equal(back.added_triangles, change.added_triangles)
    assert back.removed_tets.ndim == 1 and back.added_triangles.shape[1] == 3


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.update(removed_tets=b"\x01\x02\x03"),  # not whole int32s
        lambda m: m.update(added_triangles=np.arange(4, dtype="<i4").tobytes()),  # not whole triangles
        lambda m: m.update(removed_triangles="abc"),  # not bytes
        lambda m: m.update(removed_tets=np.array([-1], "<i4").tobytes()),  # negative id
        lambda m: m.pop("removed_tets"),  # missing field
        lambda m: m.update(epoch="soon"),
        lambda m: m.update(epoch=None),
        lambda m: m.update(instrument=[1]),
    ],
)
def test_from_message_rejects_malformed_input(tamper):
    change = TopologyChange(
        3, "cut", 1, np.array([4, 5], np.int32), np.zeros((1, 3), np.int32), np.ones((2, 3), np.int32)
    )
    msg = change.to_message()
    tamper(msg)
    with pytest.raises(ValueError):
        TopologyChange.from_message(msg)


def test_from_message_rejects_non_dicts():
    with pytest.raises(ValueError):
        TopologyChange.from_message([1, 2, 3])


def test_blades_collide_only_closed_and_not_closing():
    assert blades_collide(0.0, 0.0) and blades_collide(0.05, 0.1)  # closed, staying closed or opening a little
    assert not blades_collide(0.1, 0.0)  # closing: the blades cut
    assert not blades_collide(1.0, 1.0) and not blades_collide(0.0, 0.5)  # open (or opening wide): they pass


@pytest.mark.parametrize("jaw", [0.0, 1.0])
def test_closed_blades_push_the_tissue_open_ones_pass_through(jaw):
    # Pointing down right above a vertex of the block's top (y = 8 mm; a 1.6 mm blade can slip between the
    # vertices of this 2.5 mm mesh elsewhere: contact samples vertices and triangle centres); the tips descend
    # 3 mm into it over 12 frames.
    d = scissor_scene(position=(0.0, 0.008 + 0.016 + 0.002, 0.0))
    d.jaw = jaw
    rest = d.model.rest_positions
    top = rest[:, 1].max()
    under = (np.abs(rest[:, 0]) < 1e-9) & (np.abs(rest[:, 2]) < 1e-9) & (rest[:, 1] > top - 1e-9)
    assert under.sum() == 1
    contacts = 0
    for _ in range(12):
        d.position = d.position - np.array([0.0, 0.005 / 12, 0.0])
        contacts += d.step().counts["instrument_contacts"]
    assert not d.events("cut")  # the jaws never closed: nothing is cut
    force = np.linalg.norm(d.reports[-1].instrument_forces[d.id])
    if jaw == 0.0:  # closed: the blades press the top down and the tissue pushes back
        assert contacts > 0 and force > 0.0 and d.reports[-1].instrument_forces[d.id][1] > 0.0
        assert d.state.x[under, 1].min() < top - 0.0002
        # and no vertex is inside the closed blades (a 0.8 mm capsule along the hinge's -y) beyond round-off
        tip = d.position - np.array([0.0, 0.016, 0.0])
        below = np.clip(d.state.x[:, 1], tip[1], d.position[1])
        dist = np.hypot(np.hypot(d.state.x[:, 0] - tip[0], d.state.x[:, 2] - tip[2]), d.state.x[:, 1] - below)
        assert dist.min() > 0.0008 - 1e-4
    else:  # open: the blades pass into the tissue (the shaft stays above it)
        assert contacts == 0 and force == 0.0
        assert d.state.x[under, 1].min() > top - 0.0005
