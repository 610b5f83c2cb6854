"""The fidelity measurements: with enough substeps a soft block matches the converged solution in each of them."""

import numba
import pytest

from physics import fidelity


@pytest.fixture(autouse=True)
def one_thread():
    """Small meshes run serially (parallel launches on a tiny mesh only wait for each other)."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


@pytest.mark.parametrize("measure", ["bending", "stretching", "volume", "grasp"])
def test_soft_block_at_many_substeps_matches_the_converged_reference(measure):
    size, young, substeps = 300, 5.0e3, 100
    if measure == "bending":
        r = fidelity.bending(size, young, substeps, 400)
        assert r["effective_stiffness"] == pytest.approx(1.0, abs=0.03)
    elif measure == "stretching":
        r = fidelity.axial(size, young, 0.45, fidelity.STRETCH, substeps, 400)
        assert r["effective_stiffness"] == pytest.approx(1.0, abs=0.03)
    elif measure == "volume":
        r = fidelity.axial(size, young, 0.49, -fidelity.VOLUME_STRAIN, substeps, 400)
        assert r["converged_volume_change_pct"] < 0 and abs(r["volume_error_pp"]) < 0.5
    else:
        r = fidelity.grasp(size, young, substeps, 400)
        assert r["points"] >= 1 and r["force_error"] < 0.1
    assert r["at_rest"] and r["newton_converged"] and r["inverted_tets_max"] == 0


def test_a_stiff_block_at_few_substeps_measures_softer_than_converged():
    """The measurement sees the small-step error: 1 MPa at 5 substeps is far softer than its energy."""
    r = fidelity.bending(300, 1.0e6, 5, 400)
    assert r["at_rest"] and r["effective_stiffness"] < 0.8


def test_the_yank_takes_every_grasp_at_hard_speed_and_ends_at_rest_uninverted():
    r = fidelity.yank(300, 3.0e4, 20, cycles=2)
    assert r["grasps_taken"] == 3 and r["yank_speed_m_s"] > 1.0 and r["nonfinite_resets"] == 0
    assert r["inverted_tets_at_rest"] == 0 and 0.0 <= r["inverted_fraction_max"] <= 1.0
