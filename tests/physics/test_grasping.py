"""Grasping: closing jaws take hold of the tissue between them, pulling drags it along, opening lets go,
overload tears it free."""

import dataclasses

import numpy as np
import pytest

from physics.grasping import CLOSED_BELOW, OPEN_ABOVE
from physics.instruments import grasper
from physics.materials import LIVER
from tests.physics.scenes import Driver, block

TOP = 0.012  # block height
PULL = 0.0005  # m per frame (3 cm/s)


def grasp_scene(material=LIVER, on_table=False, pinned_bottom=True, height_above=0.010) -> Driver:
    """Grasper pointing down, hinge `height_above` over the top face, jaws around the top layer's centre."""
    model, state = block(material=material, on_table=on_table, pinned_bottom=pinned_bottom)
    d = Driver(model, state, grasper(), position=[0.0, TOP + height_above, 0.0], jaw=0.8)
    d.step()  # open
    d.jaw = 0.0
    d.step()  # close
    return d


def pull(d: Driver, frames: int, per_frame: float = PULL) -> list[np.ndarray]:
    forces = []
    for _ in range(frames):
        d.position = d.position + np.array([0.0, per_frame, 0.0])
        forces.append(d.step().grasp_forces.get(d.id))
    return forces


@pytest.mark.parametrize("support", ["pinned", "table"])
def test_closing_jaws_grasp_and_pulling_lifts_the_held_tissue(support):
    d = grasp_scene(on_table=support == "table", pinned_bottom=support == "pinned")
    assert len(d.events("grasp")) == 1
    g = d.inst.grasp
    assert g is not None and g.vertices.shape[0] >= 1
    held = np.unique(g.vertices)
    y0 = d.state.x[held, 1].copy()
    lift = 12 * PULL
    pull(d, 12)
    assert d.inst.grasp is not None
    # The held tissue follows the jaws (within a millimetre), the rest of the block stays lower.
    rise = d.state.x[held, 1] - y0
    assert np.all(rise > lift - 0.001), rise
    others = np.setdiff1d(np.arange(d.model.n_vertices), held)
    assert d.state.x[others, 1].max() < d.state.x[held, 1].max()
    assert np.all(np.isfinite(d.state.x))


def test_grasp_force_grows_with_pull_distance_and_the_tissue_pulls_back():
    d = grasp_scene()
    forces = pull(d, 8)
    up = np.array([f[1] for f in forces])
    assert np.all(np.diff(up) > 0), up  # monotone in the pull distance
    assert up[-1] > 0.05  # N: a few millimetres of liver pulled by a grasp is tenths of a newton
    # The tissue pulls the instrument back down with the same force.
    reaction = d.reports[-1].instrument_forces[d.id]
    assert reaction[1] < 0
    np.testing.assert_allclose(reaction, -forces[-1], atol=1e-9)
    assert np.allclose(d.inst.grasp.force, forces[-1])


def test_opening_the_jaws_releases_and_tissue_springs_back():
    d = grasp_scene()
    held = np.unique(d.inst.grasp.vertices)
    rest_y = d.model.rest_positions[held, 1]
    pull(d, 8)
    lifted = d.state.x[held, 1] - rest_y
    assert lifted.min() > 0.003
    d.jaw = 0.25  # below OPEN_ABOVE: the grasp survives a trembling hand
    assert OPEN_ABOVE > 0.25 > CLOSED_BELOW
    d.step()
    assert d.inst.grasp is not None and not d.events("release")
    d.jaw = 0.6
    d.step()
    assert d.inst.grasp is None
    assert [e.detail["reason"] for e in d.events("release")] == ["opened"]
    assert d.reports[-1].grasp_forces == {}
    d.step(40)
    assert np.all(np.abs(d.state.x[held, 1] - rest_y) < 0.3 * lifted)


def test_closing_on_nothing_grasps_nothing():
    d = grasp_scene(height_above=0.05)
    assert d.inst.grasp is None and not d.events("grasp")
    d.jaw = 0.8
    d.step()
    assert not d.events("release")


def test_weak_tissue_tears_free_where_strong_tissue_holds():
    weak = dataclasses.replace(LIVER, strength=2.0e3)  # tears at 2e3 Pa x 72 mm^2 = 0.14 N
    strong = dataclasses.replace(LIVER, strength=1.0e6)
    dw, ds = grasp_scene(material=weak), grasp_scene(material=strong)
    assert dw.inst.grasp.tear_force == pytest.approx(2.0e3 * dw.spec.jaw_area)
    pull(dw, 20)
    pull(ds, 20)
    tears = dw.events("tear")
    assert len(tears) == 1 and dw.inst.grasp is None
    assert dw.state.counters["grasp_torn"] == 1
    assert tears[0].detail["force"] > tears[0].detail["limit"] == pytest.approx(dw.spec.jaw_area * 2.0e3)
    assert not ds.events("tear") and ds.inst.grasp is not None
    assert ds.state.counters["grasp_torn"] == 0
    assert np.linalg.norm(ds.inst.grasp.force) > tears[0].detail["limit"]  # the same pull, held


def test_coarse_mesh_grasps_the_nearest_surface_point_between_vertices():
    # 10 mm cells: no vertex lies within the jaws' 4 mm radius of (5 mm, 5 mm), so the grasp holds the
    # top-face point under the jaws through its triangle's barycentric weights.
    model, state = block(cells=(4, 3, 2), on_table=False, pinned_bottom=True)
    d = Driver(model, state, grasper(), position=[0.005, TOP + 0.010, 0.005], jaw=0.8)
    d.step()
    d.jaw = 0.0
    d.step()
    g = d.inst.grasp
    assert g is not None and g.vertices.shape == (1, 3)
    assert len(set(g.vertices[0])) == 3 and g.weights.sum() == pytest.approx(1.0) and g.weights.min() >= 0
    np.testing.assert_allclose(model.rest_positions[g.vertices[0], 1], TOP)  # a top-face triangle

    def held_point():
        return (g.weights[0][:, None] * d.state.x[g.vertices[0]]).sum(axis=0)

    np.testing.assert_allclose(held_point(), [0.005, TOP, 0.005], atol=3e-4)
    pull(d, 8)
    np.testing.assert_allclose(held_point(), [0.005, TOP + 8 * PULL, 0.005], atol=3e-4)
    assert d.reports[-1].grasp_forces[d.id][1] > 0.05
