"""Cutting: closing scissor blades across a block remove the tets they sweep and split it in two."""

import msgpack
import numpy as np
import pytest

from physics.cutting import blade_length, swept_tets
from physics.instruments import look_rotation, quat_to_matrix, scissors
from physics.surface import boundary_triangles, connected_components
from physics.topology import TopologyChange
from tests.physics.scenes import Driver, block

SIZE, CELLS = (0.02, 0.008, 0.01), (8, 4, 4)
# Pointing down with local y = world x: the blades close in the world y-z plane, across the block's length.
ACROSS = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))
HINGE = (0.0013, 0.0158, 0.0)  # mid-cell in x; the 16 mm blades reach the block's bottom


def scissor_scene(position=HINGE) -> Driver:
    model, state = block(size=SIZE, cells=CELLS)
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


def test_closing_blades_across_the_block_cut_it_in_two():
    d = scissor_scene()
    n_tets, epoch0 = d.model.n_live_tets, d.model.epoch
    assert connected_components(d.model.tets, d.model.alive)[0] == 1
    d.step()
    assert d.model.epoch == epoch0 and not d.events("cut")  # open blades cut nothing
    cut(d)
    changes = [t for r in d.reports for t in r.topology]
    cuts = d.events("cut")
    assert cuts and len(changes) == len(cuts)
    assert all(t.cause == "cut" and t.instrument == d.id and t.removed_tets.size > 0 for t in changes)
    removed = np.concatenate([t.removed_tets for t in changes])
    assert np.unique(removed).size == removed.size
    assert not d.model.alive[removed].any()
    assert d.model.n_live_tets == n_tets - removed.size
    assert d.model.epoch == epoch0 + len(changes) == changes[-1].epoch
    pieces, labels = connected_components(d.model.tets, d.model.alive)
    assert pieces == 2
    # One piece on each side of the blade plane (x = 1.3 mm), of similar size.
    centres = d.model.rest_positions[d.model.tets].mean(axis=1)[:, 0]
    for p in range(2):
        side = np.sign(centres[labels == p] - HINGE[0])
        assert abs(side.sum()) == side.size
    # The surface is re-extracted: exactly the boundary of the live tets, and the diff is consistent.
    np.testing.assert_array_equal(d.model.surface, boundary_triangles(d.model.tets, d.model.alive))
    assert all(t.added_triangles.shape[0] > 0 for t in changes)


def test_blades_beside_the_block_cut_nothing():
    d = scissor_scene(position=(0.03, 0.0158, 0.0))
    cut(d)
    assert not d.events("cut") and d.model.epoch == 0 and d.model.n_live_tets == d.model.n_tets


def test_the_solver_keeps_running_after_a_cut():
    d = scissor_scene()
    cut(d)
    assert d.model.vertex_used().all()  # a mid-cell snip removes one column of cells: no vertex orphaned
    # A second snip one cell over removes the other column around the vertex layer x = 0: those vertices
    # no longer belong to any tet.
    d.position = d.position - np.array([0.0026, 0.0, 0.0])
    d.jaw = 1.0
    d.step()
    cut(d)
    assert len(d.events("cut")) >= 3
    orphans = ~d.model.vertex_used()
    assert orphans.any()
    np.testing.assert_allclose(d.model.rest_positions[orphans, 0], 0.0, atol=1e-12)
    assert np.all(d.model.inv_mass[orphans] == 0) and np.all(d.model.mass[orphans] == 0)
    assert d.model.block_slot.shape[0] == d.model.sweep_alpha_dev.shape[0] == d.model.n_live_tets
    assert d.model.alive[d.model.order].all()
    d.jaw = 1.0
    d.position = d.position + np.array([0, 0.02, 0])  # withdraw upward
    d.step(20)
    assert np.all(np.isfinite(d.state.x)) and np.all(np.isfinite(d.state.v))
    assert np.all(d.state.v[orphans] == 0)
    assert d.state.counters["nonfinite_resets"] == 0
    # Both halves rest on the table, undisturbed.
    used = d.model.vertex_used()
    assert d.state.x[used, 1].min() > -1e-4
    assert np.abs(d.state.x[used] - d.model.rest_positions[used]).max() < 0.002


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
