"""Complications a mentor injects: a bleeding point until cauterized, stiffer tissue, an adhesion."""

from dataclasses import replace

import numpy as np
import pytest

from physics import new_state
from rehearsal.complications import COAGULATED, ComplicationError, Complications
from rehearsal.scenario import Box, Complication, build_world, load_scenario


@pytest.fixture(scope="module")
def scenario():
    adhesion = Complication(
        "adhesion", "Bound to the table", "adhesion", {"box": Box((0.02, 0.015, -0.02), (0.03, 0.021, 0.02))}
    )
    base = load_scenario("basic_skills")
    return replace(base, complications=(*base.complications, adhesion))


@pytest.fixture
def world(scenario):
    model = build_world(scenario)
    return model, new_state(model), Complications(scenario)


def test_a_bleeding_point_bleeds_until_the_tissue_there_is_coagulated(world):
    model, state, complications = world
    detail = complications.inject("bleeder", model, state)
    assert detail["kind"] == "bleeding_point" and detail["vertex"] in np.unique(model.surface)
    np.testing.assert_allclose(detail["position"], [0.01, 0.02, 0.0], atol=0.004)
    for k in range(60):
        assert complications.update(state, 1 / 60, k / 60) == []
    bleeding = complications.bleeding[0]
    assert bleeding.lost_ml == pytest.approx(0.5, rel=1e-9)  # 0.5 ml/s for one second
    state.damage[bleeding.tets[0]] = COAGULATED / 2  # warm, not sealed
    assert complications.update(state, 1 / 60, 1.0) == []
    state.damage[bleeding.tets[0]] = COAGULATED
    [stopped] = complications.update(state, 1 / 60, 1.1)
    assert stopped["complication"] == "bleeder" and stopped["lost_ml"] == pytest.approx(0.5 + 1 / 60, abs=1e-3)
    complications.update(state, 1.0, 2.0)
    assert complications.summary()["bleeding"] == [
        {"complication": "bleeder", "lost_ml": stopped["lost_ml"], "stopped": True}
    ]


def test_stiffer_tissue_scales_both_lame_parameters_once(world):
    model, state, complications = world
    dev, hyd = model.alpha_dev.copy(), model.alpha_hyd.copy()
    detail = complications.inject("stiff", model, state)
    assert detail["tets"] == model.n_tets
    np.testing.assert_allclose(model.alpha_dev, dev / 2)
    np.testing.assert_allclose(model.sweep_alpha_hyd, hyd[model.order] / 2)
    with pytest.raises(ComplicationError, match="already active"):
        complications.inject("stiff", model, state)
    with pytest.raises(ComplicationError, match="no complication 'zombie'"):
        complications.check("zombie")


def test_an_adhesion_ties_the_tissue_in_its_box_where_it_is_now(world):
    model, state, complications = world
    before = model.anchor_vertex.size
    state.x += [0.0, 0.001, 0.0]
    detail = complications.inject("adhesion", model, state)
    added = model.anchor_vertex[before:]
    assert detail["vertices"] == added.size > 0
    np.testing.assert_allclose(model.anchor_position[before:], state.x[added])
    assert np.all(model.rest_positions[added, 0] >= 0.02)
