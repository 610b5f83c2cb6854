"""The error bound that follows motion: coarse while a patch moves, fine once it settled; unchanged decoders."""

import numpy as np
import pytest

from netcode.sync.motion_bound import DEFAULT_MOVING_ERROR, MotionBound
from netcode.sync.snapshot_codec import SnapshotServer
from tests.netcode.sync.snapshot_helpers import Scene, connect

E = 1e-4
OFFSETS = np.array([0, 4, 8])


def test_jitter_below_the_bound_keeps_every_patch_fine():
    bound = MotionBound(E, 5e-4, window=3)
    rng = np.random.default_rng(1)
    rest = rng.uniform(0, 0.05, (8, 3))
    for _ in range(10):
        bounds = bound.update(rest + rng.uniform(-4e-5, 4e-5, rest.shape), OFFSETS)
        assert bounds.tolist() == [E, E]


def test_a_moving_patch_is_coarse_until_window_frames_after_it_stopped():
    bound = MotionBound(E, 5e-4, window=3)
    x = np.zeros((8, 3))
    seen = []
    for f in range(12):
        if f < 5:
            x[:4, 1] = 3e-4 * f  # patch 0 moves 0.3 mm a frame for 5 frames, patch 1 is still
        seen.append(bound.update(x.copy(), OFFSETS).tolist())
    assert seen[0] == [E, E]  # no history yet
    assert all(b == [5e-4, E] for b in seen[1:7])  # moving, then within 0.1 mm of its last 3 frames after 3
    assert all(b == [E, E] for b in seen[7:])


def test_remap_keeps_the_history_of_surviving_vertices():
    bound = MotionBound(E, 5e-4, window=2)
    x = np.zeros((8, 3))
    bound.update(x, OFFSETS)
    # the new layout: old rows 4..7 first (patch 0), then four new vertices (patch 1)
    bound.remap(np.array([4, 5, 6, 7, 0, 0, 0, 0]), np.array([True] * 4 + [False] * 4))
    y = np.zeros((8, 3))
    y[:4, 0] = 1e-3  # the survivors moved 1 mm; the new vertices have no history: still
    assert bound.update(y, OFFSETS).tolist() == [5e-4, E]


def test_without_a_moving_error_the_bound_is_fixed_and_bad_settings_are_refused():
    assert MotionBound(E, None).update(np.ones((8, 3)), OFFSETS).tolist() == [E, E]
    assert MotionBound(E, None).coarsest == E and MotionBound(E).coarsest == DEFAULT_MOVING_ERROR
    with pytest.raises(ValueError, match="moving_error"):
        MotionBound(E, 5e-5)
    with pytest.raises(ValueError, match="window"):
        MotionBound(E, 5e-4, window=0)


def _replay(moving_error):
    """A bump that moves 0.45 mm a frame for 15 frames, then holds still; one lossless client acking at once.
    Returns (bytes sent after the first frame's full records, per frame: the largest error shown, and that of
    the patches at the fine bound)."""
    scene = Scene(seed=3)
    server = SnapshotServer(scene.layout, moving_error=moving_error)
    dec = connect(server, "a")
    sent, shown_max, fine_max = 0, [], []
    for f in range(30):
        fr = server.begin_frame(f / 60, scene.surface(min(f, 15), jitter=2e-5), scene.rigid(f))
        data = server.encode("a")
        sent += len(data) if f else 0
        server.on_ack("a", dec.decode(data).sequence)
        shown, received = dec.surface()
        assert received.all()
        err = np.abs(shown - fr.positions).max(axis=1)
        fine = np.repeat(fr.bounds < 2 * E, scene.layout.sizes)
        shown_max.append(float(err.max()))
        fine_max.append(float(err[fine].max()) if fine.any() else 0.0)
    assert dec.rejected == 0
    return sent, shown_max, fine_max


def test_moving_patches_are_sent_coarse_and_refined_once_they_settle():
    """The bound follows motion: moving patches within 0.5 mm, fine ones within 0.1 mm on every frame, and
    everything within 0.1 mm a few frames after the motion stopped, for fewer bytes than one fine bound;
    the unchanged decoder reads it all."""
    fixed, fixed_shown, _ = _replay(None)
    sent, shown, fine = _replay(5e-4)
    assert max(fixed_shown) <= E
    assert max(shown) <= 5e-4 and max(fine) <= E
    assert max(shown[1:15]) > 2 * E  # moving patches were coarse
    assert max(shown[15 + 3 + 1 :]) <= E  # settled: refined to the fine bound
    assert sent < 0.9 * fixed  # 2,468 against 2,949 bytes (the rigid objects move too; the bump 0.4 mm a frame)
