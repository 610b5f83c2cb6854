"""Motion predictors: exact integer prediction, drive fitting, fewer bytes within the bound, holding, cuts,
late joiners and malformed predictors or drive records."""

import numpy as np
import pytest

from netcode.sync.motion_predictor import (
    FINE,
    IDLE_FRAMES,
    MAX_PREDICTORS,
    Predictor,
    fine_offsets,
    fit_drive,
    pack_gains,
    unpack_gains,
)
from netcode.sync.patches import make_patches
from netcode.sync.snapshot import RECORD_DRIVE, SnapshotError, drive_record, pack_header, read_drive_record
from netcode.sync.snapshot_codec import SnapshotServer
from netcode.sync.snapshot_decode import MissingPredictorError
from netcode.sync.snapshot_messages import SNAPSHOT_REGISTRY, decode_message, pack_ids
from tests.netcode.sync.snapshot_helpers import Scene, connect, state_of

E = 1e-4
STEP = 1e-4


def bump_response(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """The scene's bump is w * offset: its response per metre of offset is w * I (ids, matrices)."""
    w = np.exp(-np.sum((scene.rest - scene.centre) ** 2, axis=1) / (2 * 0.008**2))
    keep = np.flatnonzero(w >= 0.005)
    return scene.ids[keep], w[keep, None, None] * np.eye(3)[None]


def run(scene: Scene, frames: int, predictor: bool, deliver: bool = True):
    """Frames of the moving scene, acked at once; (bytes per frame, decoder, server, predictor message)."""
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0)
    sizes, message = [], None
    for f in range(frames):
        if predictor and f == 2:
            message = server.add_predictor(*bump_response(scene))
            if deliver:
                dec.on_message(message)
        server.begin_frame(f / 60, scene.surface(f), scene.rigid(f))
        data = server.encode(0)
        sizes.append(len(data))
        server.on_ack(0, dec.decode(data).sequence)
        shown, received = dec.surface()
        assert received.all() and np.abs(shown - server.frame.positions).max() <= E, f"frame {f} beyond the bound"
        assert np.array_equal(dec.surface_grid(), server.client_grid(0))
    return sizes, dec, server, message


def test_integer_prediction_rounds_half_up_with_an_arithmetic_shift():
    gains = np.array([[[4096, 0, 0], [2048, 0, 0], [-2048, 0, 0]]])
    assert fine_offsets(gains, np.array([16, 0, 0])).tolist() == [[16, 8, -8]]
    assert fine_offsets(gains, np.array([3, 0, 0])).tolist() == [[3, 2, -1]]  # 1.5 -> 2, -1.5 -> -1


def test_from_response_sorts_ids_and_quantizes_gains():
    p = Predictor.from_response(3, np.array([9, 2]), np.array([np.eye(3) * 0.5, np.eye(3) * 0.25]))
    assert p.vertex_ids.tolist() == [2, 9] and p.gains[0, 0, 0] == 1024 and p.gains[1, 2, 2] == 2048
    assert np.array_equal(unpack_gains(pack_gains(p.gains), 2), p.gains)


def test_fit_drive_recovers_the_motion_it_explains():
    rng = np.random.default_rng(1)
    m = rng.uniform(0.1, 1.0, (50, 3, 3))
    p = Predictor.from_response(1, np.arange(50), m)
    o = np.array([0.004, -0.012, 0.0305])
    g = p.gains / 4096.0
    drive = fit_drive(g, np.einsum("kab,b->ka", g, o), STEP)
    assert np.array_equal(drive, np.rint(o / (STEP / FINE)).astype(np.int64))
    assert not fit_drive(g, np.zeros((50, 3)), STEP).any()


def test_predicted_motion_costs_far_fewer_bytes_within_the_bound():
    plain, *_ = run(Scene(seed=3), 24, predictor=False)
    predicted, _, server, message = run(Scene(seed=3), 24, predictor=True)
    assert sum(predicted[8:]) < 0.5 * sum(plain[8:]), (plain, predicted)
    assert server.frame.drives and decode_message(message)[0] == "snap_predictor"


def test_snapshot_needing_a_missing_predictor_is_held_until_it_arrives():
    scene = Scene()
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0)
    server.begin_frame(0.0, scene.surface(0), scene.rigid(0))
    server.on_ack(0, dec.decode(server.encode(0)).sequence)
    message = server.add_predictor(*bump_response(scene))
    server.begin_frame(1 / 60, scene.surface(4), scene.rigid(1))
    data = server.encode(0)
    before = state_of(dec)
    with pytest.raises(MissingPredictorError, match="held") as info:
        dec.decode(data)
    assert info.value.held and state_of(dec) == before and dec.rejected == 0
    applied = dec.on_message(message)
    assert [s.sequence for s in applied] == [server.frame.sequence]
    shown, _ = dec.surface()
    assert np.abs(shown - server.frame.positions).max() <= E


def test_late_joiner_gets_the_predictors_and_a_cut_keeps_them():
    scene = Scene(seed=5)
    server = SnapshotServer(scene.layout)
    connect(server, 0)
    server.begin_frame(0.0, scene.surface(0), scene.rigid(0))
    server.add_predictor(*bump_response(scene))
    late = connect(server, 1)  # its join messages carry the predictor
    for f in range(1, 6):
        server.begin_frame(f / 60, scene.surface(f), scene.rigid(f))
        server.on_ack(1, late.decode(server.encode(1)).sequence)
    assert np.abs(late.surface()[0] - server.frame.positions).max() <= E
    # a cut: the predictor is keyed by vertex id and keeps predicting the survivors
    keep = scene.layout.vertex_ids[scene.layout.vertex_ids % 7 != 0]
    layout = make_patches(keep, scene.rest[keep], 40)
    late.on_message(server.change_topology(layout, removed_vertices=scene.ids[scene.ids % 7 == 0]))
    for f in range(6, 12):
        truth = scene.surface(f)
        by_id = dict(zip(scene.layout.vertex_ids.tolist(), truth, strict=True))
        server.begin_frame(f / 60, np.array([by_id[v] for v in layout.vertex_ids.tolist()]), scene.rigid(f))
        server.on_ack(1, late.decode(server.encode(1)).sequence)
    shown, received = late.surface()
    assert received.all() and np.abs(shown - server.frame.positions).max() <= E
    drives, _ = read_drive_record(server.frame.drives, 1, len(server.frame.drives), 1 << 24)
    assert np.any(drives[1]), "the bump moved: the predictor's drive is not zero"


def test_the_oldest_predictor_is_retired_beyond_the_limit():
    scene = Scene()
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0)
    server.begin_frame(0.0, scene.surface(0), scene.rigid(0))
    for _ in range(MAX_PREDICTORS + 2):
        dec.on_message(server.add_predictor(*bump_response(scene)))
    server.begin_frame(1 / 60, scene.surface(3), scene.rigid(1))
    drives, _ = read_drive_record(server.frame.drives, 1, len(server.frame.drives), 1 << 24)
    assert sorted(drives) == list(range(3, MAX_PREDICTORS + 3))
    server.on_ack(0, dec.decode(server.encode(0)).sequence)
    assert np.abs(dec.surface()[0] - server.frame.positions).max() <= E


def test_a_predictor_idle_at_rest_is_retired_and_a_moving_one_is_kept():
    scene = Scene()
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0)
    server.begin_frame(0.0, scene.surface(0, move=False), scene.rigid(0))
    dec.on_message(server.add_predictor(*bump_response(scene)))
    for f in range(1, IDLE_FRAMES + 2):
        server.begin_frame(f / 60, scene.surface(0, move=False), scene.rigid(f))
        if f == IDLE_FRAMES - 1:
            assert server.frame.drives, "not idle long enough yet"
        server.on_ack(0, dec.decode(server.encode(0)).sequence)
    assert not server.frame.drives and dec.rejected == 0
    assert np.abs(dec.surface()[0] - server.frame.positions).max() <= E
    dec.on_message(server.add_predictor(*bump_response(scene)))
    for f in range(IDLE_FRAMES + 2, 2 * IDLE_FRAMES + 4):
        server.begin_frame(f / 60, scene.surface(f - IDLE_FRAMES - 2), scene.rigid(f))
        server.on_ack(0, dec.decode(server.encode(0)).sequence)
    assert server.frame.drives, "a predictor that keeps moving is not retired"


def _predictor_fields(**override) -> dict:
    fields = {"id": 1, "vertex_ids": pack_ids(np.array([1, 2])), "gains": pack_gains(np.zeros((2, 3, 3), np.int64))}
    return {**fields, **override}


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"vertex_ids": pack_ids(np.array([2, 1]))}, "sorted"),
        ({"vertex_ids": pack_ids(np.array([1, 1]))}, "sorted"),
        ({"gains": pack_gains(np.zeros((3, 3, 3), np.int64))}, "expected"),
        ({"gains": pack_gains(np.full((2, 3, 3), 40000))}, "beyond"),
        ({"gains": b"not zlib"}, "bad compressed"),
        ({"id": -1}, "out of"),
        ({"vertex_ids": pack_ids(np.zeros(0, np.int64)), "gains": pack_gains(np.zeros((0, 3, 3)))}, "vertices"),
    ],
)
def test_malformed_predictor_messages_are_rejected(override, reason):
    data = SNAPSHOT_REGISTRY.encode("snap_predictor", _predictor_fields(**override))
    with pytest.raises(SnapshotError, match=reason):
        decode_message(data)


def test_malformed_drive_records_are_rejected_without_state_change():
    scene = Scene()
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0)
    server.begin_frame(0.0, scene.surface(0), scene.rigid(0))
    dec.on_message(server.add_predictor(*bump_response(scene)))
    server.on_ack(0, dec.decode(server.encode(0)).sequence)
    before = state_of(dec)
    twice = bytes((RECORD_DRIVE, 2, 1, 0, 0, 0, 1, 0, 0, 0))
    huge = drive_record([(1, np.array([1 << 30, 0, 0]))])
    truncated = drive_record([(1, np.array([5, 6, 7]))])[:-1]
    for body, count, reason in (
        (twice, 1, "twice"),
        (huge, 1, "beyond"),
        (truncated, 1, "truncated"),
        (bytes((RECORD_DRIVE, 99)), 1, "at most"),
        (drive_record([]) * 2, 2, "first"),
    ):
        with pytest.raises(SnapshotError, match=reason):
            dec.decode(pack_header(50, 1.0, 1, count) + body)
        assert state_of(dec) == before
