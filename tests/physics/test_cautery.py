"""Cautery: an energized hook tip heats the tissue around it (damage), then burns it away."""

import dataclasses

import numpy as np

from physics.cautery import heat
from physics.instruments import cautery_hook, quat_to_matrix
from physics.materials import LIVER
from physics.surface import boundary_triangles
from tests.physics.scenes import DOWN, Driver, block

SIZE, CELLS = (0.02, 0.008, 0.01), (8, 4, 4)
HOT = dataclasses.replace(LIVER, burn_rate=8.0)  # burns through in a fraction of a second


def hook_scene(material=LIVER, tip_depth=0.002, energy=True) -> Driver:
    """Hook pointing down, lowered over 10 frames until its tip is tip_depth under the top face."""
    model, state = block(size=SIZE, cells=CELLS, material=material)
    spec = cautery_hook()
    tip_offset = quat_to_matrix(DOWN) @ np.asarray(spec.energy_tip)
    target = np.array([0.001, SIZE[1] - tip_depth, 0.0]) - tip_offset
    d = Driver(model, state, spec, position=target + np.array([0, 0.01, 0]), energy=False)
    d.step()
    for _ in range(10):
        d.position = d.position - np.array([0, 0.001, 0])
        d.step()
    np.testing.assert_allclose(d.position, target, atol=1e-12)
    d.energy = energy
    return d


def tip(d: Driver) -> np.ndarray:
    return d.position + quat_to_matrix(d.orientation) @ np.asarray(d.spec.energy_tip)


def tet_centres(d: Driver) -> np.ndarray:
    return d.state.x[d.model.tets].mean(axis=1)


def test_energized_tip_damages_tissue_near_it_only():
    d = hook_scene()
    d.step(6)
    damage = d.state.damage
    assert damage.max() > 0.1
    dist = np.linalg.norm(tet_centres(d) - tip(d), axis=1)
    assert np.all(damage[dist > d.spec.energy_radius + 0.001] == 0)
    # Damage falls off with distance from the tip.
    hot, warm = damage[dist < 0.0015], damage[(dist > 0.002) & (dist < d.spec.energy_radius)]
    assert hot.size and warm.size and hot.mean() > warm.mean()
    assert d.state.counters["energy_frames"] == 6
    assert d.state.counters["energy_frames_without_tissue"] == 0
    assert not d.events("burn")  # not yet burned through


def test_long_enough_energy_burns_tissue_away():
    d = hook_scene(material=HOT)
    n0 = d.model.n_live_tets
    d.step(30)
    burns = d.events("burn")
    changes = [t for r in d.reports for t in r.topology]
    assert burns and len(changes) == len(burns)
    assert all(t.cause == "burn" and t.instrument == d.id for t in changes)
    removed = np.concatenate([t.removed_tets for t in changes])
    assert np.all(d.state.damage[removed] >= 1.0)
    assert np.all(d.state.damage[d.model.alive] < 1.0)
    assert d.model.n_live_tets == n0 - removed.size and d.model.epoch == len(changes)
    np.testing.assert_array_equal(d.model.surface, boundary_triangles(d.model.tets, d.model.alive))
    assert np.all(np.isfinite(d.state.x))


def test_damage_stiffens_tissue():
    model, state = block(size=SIZE, cells=CELLS)
    fresh = state.effective_alpha_dev(model).copy()
    state.damage[:5] = 0.5
    stiffer = state.effective_alpha_dev(model)
    assert np.all(stiffer[:5] < fresh[:5]) and np.array_equal(stiffer[5:], fresh[5:])


def test_energy_off_does_nothing():
    d = hook_scene(energy=False)
    d.step(30)
    assert np.all(d.state.damage == 0) and not d.events("burn") and d.model.epoch == 0
    assert d.state.counters["energy_frames"] == 0


def test_energy_away_from_tissue_is_counted_and_harmless():
    d = hook_scene(tip_depth=-0.02)  # tip 2 cm above the block
    d.step(5)
    assert np.all(d.state.damage == 0) and d.model.epoch == 0
    assert d.state.counters["energy_frames"] == 5
    assert d.state.counters["energy_frames_without_tissue"] == 5


def test_heat_ignores_dead_tets_and_scales_with_burn_rate():
    model, state = block(size=SIZE, cells=CELLS)
    centres = state.x[model.tets].mean(axis=1)
    target = centres[0]
    damage = np.zeros(model.n_tets)
    heated, burned = heat(model, state.x, damage, target, 0.003, 2.0, 0.1)
    assert 0 in heated and burned.size == 0
    assert damage[0] > 0 and damage[0] == damage.max()
    model.alive[0] = False
    again = np.zeros(model.n_tets)
    heated, _ = heat(model, state.x, again, target, 0.003, 2.0, 0.1)
    assert 0 not in heated and again[0] == 0
