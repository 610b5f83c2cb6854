"""Grasp response models measured by the physics engine: they predict held tissue under latency."""

import numpy as np
import pytest

from netcode.protocol.response_model import MAX_RESPONSE_VERTICES
from netcode.sync.patches import make_patches
from rehearsal.response_bench import codec_bytes, prediction_errors, run_trace
from rehearsal.response_model import CODEC_MIN_RESPONSE, MIN_RESPONSE, Response, probe_response


@pytest.fixture(scope="module")
def trace():
    return run_trace()


def test_the_held_tissue_follows_the_jaws_and_the_far_tissue_does_not_move(trace):
    room, xs, _, grasp_frame, grasped, (_, response) = trace
    assert grasp_frame is not None and response is not None
    nearest = response.vertex_ids[0]  # strongest first
    assert np.min(np.linalg.norm(xs[grasp_frame][nearest] - grasped, axis=1)) < 0.006
    lift = response.matrices[0][:, 1]  # how the held vertex moves per metre of jaw motion up
    assert 0.5 < lift[1] <= 1.2 and abs(lift[0]) < 0.3 and abs(lift[2]) < 0.3
    strength = np.abs(response.matrices).max(axis=(1, 2))
    assert np.all(strength >= CODEC_MIN_RESPONSE) and np.all(np.diff(strength) <= 1e-12)
    held = response.strongest()  # the holder's model: the strongest part
    assert 0 < len(held.vertex_ids) <= MAX_RESPONSE_VERTICES and held.vertex_ids[0] == nearest
    assert np.all(np.abs(held.matrices).max(axis=(1, 2)) >= MIN_RESPONSE)
    pinned = np.flatnonzero(room.model.fixed)
    assert pinned.size and not np.isin(pinned, response.vertex_ids).any()  # the pinned base does not respond


def test_the_probe_leaves_the_room_untouched_and_needs_a_grasp(trace):
    room = trace[0]
    before = room.physics.x.copy()
    key = next(iter(room.physics.instruments))
    surface = np.unique(room.model.surface)
    probe_response(room.model, room.physics, key, surface, 1 / 60, 20)
    np.testing.assert_array_equal(room.physics.x, before)
    assert probe_response(room.model, room.physics, 12345, surface, 1 / 60, 20) is None


def test_a_response_maps_onto_a_layout_and_skips_vertices_it_lacks():
    layout = make_patches(np.array([10, 11, 12, 13]), np.random.default_rng(1).normal(size=(4, 3)))
    matrices = np.stack([np.eye(3) * k for k in (1.0, 2.0, 3.0)])
    objects, vertices, kept = Response(np.array([12, 99, 10]), matrices).on_layout(layout)
    rows = layout.offsets[objects] + vertices
    assert layout.vertex_ids[rows].tolist() == [12, 10]
    np.testing.assert_array_equal(kept, matrices[[0, 2]])


def test_prediction_beats_no_prediction_under_a_100_ms_round_trip(trace):
    room, xs, jaws, grasp_frame, grasped, probed = trace
    errors = prediction_errors(room, xs, jaws, grasp_frame, grasped, 6, probed)
    assert errors["grasp_without_m"] > 0.0005  # the pull is fast enough for latency to show
    assert errors["grasp_ratio"] < 0.3 and errors["around_ratio"] < 0.5


def test_as_a_codec_predictor_it_saves_bytes_on_real_tissue_within_the_bound(trace):
    _, xs, _, grasp_frame, _, probed = trace
    plain, predicted = (codec_bytes(xs, grasp_frame, probed, 6, p) for p in (False, True))
    assert predicted["bytes_per_frame"] < 0.7 * plain["bytes_per_frame"], (plain, predicted)
    assert predicted["max_error_received_mm"] <= 0.1 + 1e-9 and plain["max_error_received_mm"] <= 0.1 + 1e-9
