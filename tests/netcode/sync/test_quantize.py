"""Quantization: the stated error bounds hold exactly, over random data and extremes."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netcode.sync.bitcode import BlockCoder, decode_block
from netcode.sync.quantize import (
    INT32_LIMIT,
    RIGID_BAD_QUATERNION,
    RIGID_NONFINITE,
    RIGID_OK,
    RIGID_RANGE,
    PositionQuantizer,
    ScalarQuantizer,
    TrendTracker,
    decode_rotations,
    dequantize_positions,
    encode_rotations,
    hysteresis_quantize,
    max_angular_error,
    quantize_positions,
    rigid_hysteresis,
    rotation_angle,
)
from netcode.sync.snapshot import NO_JAW
from tests.netcode.sync.snapshot_helpers import bits_of, eg0, to_bytes

EPS = 1e-12


@pytest.mark.parametrize("max_error", [1e-4, 5e-5, 1e-3, 0.37e-4])
@pytest.mark.parametrize("step_factor", [2.0, 1.0, 0.5])
def test_position_round_trip_within_bound(max_error, step_factor):
    rng = np.random.default_rng(1)
    origin = (0.3, -1.2, 7.0)
    pq = PositionQuantizer(max_error, origin, step=max_error * step_factor)
    span = pq.grid * (INT32_LIMIT - 10)
    x = np.concatenate(
        [
            rng.uniform(-1, 1, (20000, 3)),
            np.array(origin) + rng.uniform(-span, span, (1000, 3)),  # near the int32 limits
            np.array(origin) + (np.arange(-50, 50)[:, None] + 0.5) * pq.grid,  # exact half-way points
            np.array([origin]),
        ]
    )
    q = pq.quantize(x)
    assert q.dtype == np.int32
    err = np.abs(pq.dequantize(q) - x)
    assert err.max() <= max_error * (1 + 1e-9) + np.abs(x).max() * 1e-15


def test_position_range_and_finiteness_checked():
    pq = PositionQuantizer(1e-4)
    with pytest.raises(ValueError, match="int32"):
        pq.quantize(np.array([[1e6, 0, 0]]))
    with pytest.raises(ValueError, match="finite"):
        pq.quantize(np.array([[np.nan, 0, 0]]))
    with pytest.raises(ValueError):
        PositionQuantizer(1e-4, step=3e-4)
    with pytest.raises(ValueError):
        PositionQuantizer(0.0)


@pytest.mark.parametrize("step_factor", [2.0, 1.0])
@pytest.mark.parametrize("use_target", [False, True])
def test_hysteresis_keeps_the_bound_on_random_walks(step_factor, use_target):
    rng = np.random.default_rng(2)
    e = 1e-4
    pq = PositionQuantizer(e, step=e * step_factor)
    tracker = TrendTracker()
    x = rng.uniform(-0.1, 0.1, (3000, 3))
    q = None
    for _ in range(60):
        x = x + rng.normal(0, 1.5e-4, x.shape) * (rng.random((len(x), 1)) < 0.5)
        q = pq.update(x, q, tracker.update(x) if use_target else None)
        assert np.abs(pq.dequantize(q) - x).max() <= e + EPS


def test_hysteresis_settles_jitter_below_half_the_bound():
    """With step = bound and a target at the mean, jitter < bound/2 moves a coordinate at most once:
    after that it sits within bound/2 of its mean and the jitter can no longer push it out."""
    rng = np.random.default_rng(3)
    e = 1e-4
    mean = rng.uniform(-0.05, 0.05, (5000, 3))
    origin = np.zeros(3)
    q = PositionQuantizer(e, step=e).quantize(mean + rng.uniform(-4e-5, 4e-5, mean.shape))
    moved = np.zeros(q.shape, np.int64)
    for _ in range(200):
        x = mean + rng.uniform(-4e-5, 4e-5, mean.shape)
        new = hysteresis_quantize(x, q, origin, e, e, target=mean)
        moved += new != q
        assert np.abs(new * e - x).max() <= e + EPS
        q = new
    assert moved.sum() > 0 and moved.max() == 1


def test_trend_tracker_is_holts_smoothing():
    """Level and trend follow Holt's formulas exactly; rows new since a remap start from their position."""
    rng = np.random.default_rng(3)
    tracker = TrendTracker(alpha=0.3, beta=0.2, lead=2.0)
    x = rng.normal(size=(6, 3))
    np.testing.assert_array_equal(tracker.update(x), x)
    level, trend = x.copy(), np.zeros_like(x)
    for k in range(5):
        x = x + rng.normal(0, 1e-3, x.shape)
        if k == 2:
            tracker.remap(np.array([0, 1, 2, 0, 4, 5]), np.array([True, True, True, False, True, True]))
            level[3], trend[3] = x[3], 0.0
        previous = level
        level = 0.3 * x + (1 - 0.3) * (previous + trend)
        trend = 0.2 * (level - previous) + (1 - 0.2) * trend
        np.testing.assert_array_equal(tracker.update(x), level + 2.0 * trend)


def test_trend_tracker_remap_keeps_survivors():
    t = TrendTracker()
    t.update(np.zeros((3, 3)))
    t.update(np.ones((3, 3)))
    t.remap(np.array([2, 0, 0]), np.array([True, False, True]))
    out = t.update(np.full((3, 3), 5.0))
    assert np.isfinite(out).all() and out.shape == (3, 3)


def _random_quats(rng, n):
    q = rng.normal(size=(n, 4))
    extremes = np.array(
        [
            [0, 0, 0, 1],
            [0, 0, 0, -1],
            [1, 0, 0, 0],
            [0.5, 0.5, 0.5, 0.5],
            [-0.5, 0.5, -0.5, 0.5],
            [math.sqrt(0.5), math.sqrt(0.5), 0, 0],
            [math.sqrt(0.5), -math.sqrt(0.5), 0, 0],
            [1e-9, 0, 0, 1],
            [0.5 + 1e-9, 0.5, 0.5, 0.5 - 1e-9],
        ]
    )
    return np.concatenate([q, extremes])


@pytest.mark.parametrize("bits", [6, 9, 10, 12, 14, 16])
def test_rotation_error_within_stated_bound(bits):
    rng = np.random.default_rng(bits)
    q = _random_quats(rng, 100_000)
    codes = encode_rotations(q, bits)
    assert int(codes.max()) < 1 << (2 + 3 * bits)
    back = decode_rotations(codes, bits)
    q = q / np.linalg.norm(q, axis=1)[:, None]
    angle = rotation_angle(q, back)
    assert angle.max() <= max_angular_error(bits)
    assert np.allclose(np.linalg.norm(back, axis=1), 1.0)


def test_default_rotation_bound_is_what_the_docs_say():
    assert max_angular_error(14) <= 3.3e-4
    assert max_angular_error(14) * 0.2 <= 0.066e-3  # 20 cm instrument tip


def test_rotation_rejects_bad_input():
    with pytest.raises(ValueError):
        encode_rotations(np.zeros((1, 4)))
    with pytest.raises(ValueError):
        decode_rotations(np.array([1 << 50], np.uint64), 14)


def test_scalar_quantizer_bound_and_clamp():
    sq = ScalarQuantizer(0.0, math.pi / 2, 12)
    v = np.concatenate([np.linspace(0, math.pi / 2, 10001), [0.0, math.pi / 2]])
    codes = sq.quantize(v)
    assert codes.max() == 4095 and codes.min() == 0
    assert np.abs(sq.dequantize(codes) - v).max() <= sq.max_error + EPS
    assert sq.quantize(np.array([-1.0, 9.0])).tolist() == [0, 4095]
    with pytest.raises(ValueError):
        sq.quantize(np.array([np.nan]))


# ------------------------------------------------------------------------------------------ block coder

_coder = BlockCoder(1024)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 300),
    st.sampled_from(["small", "sparse", "huge", "walk"]),
    st.integers(0, 2**32 - 1),
)
def test_block_round_trip(n, kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "small":
        d = rng.integers(-3, 4, (n, 3))
    elif kind == "sparse":
        d = np.zeros((n, 3), np.int64)
        d[rng.integers(0, n, 3)] = rng.integers(-2, 3, (3, 3))
    elif kind == "huge":
        d = rng.integers(-(2**31), 2**31, (n, 3)) * 2  # int32 deltas of int32 values: up to 2^32
    else:
        d = np.cumsum(rng.integers(-5, 6, (n, 3)), axis=0) + int(rng.integers(-(10**6), 10**6))
    data = _coder.encode(d)
    out, end = decode_block(data + b"\x00\xff", n)
    assert end == len(data)
    assert np.array_equal(out, d)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            out2, _end2 = decode_block(data[:cut], n)
            assert np.array_equal(out2, d)  # a prefix can only "decode" if it decodes to the same thing
            raise ValueError("prefix decoded")


def test_block_zero_and_malformed_headers():
    assert len(_coder.encode(np.zeros((100, 3), np.int64))) <= 16
    with pytest.raises(ValueError, match="prefix"):
        decode_block(b"\x00\x00" + b"\x00" * 40, 4)  # dense, k = 0, then only zero bits
    with pytest.raises(ValueError, match="no layout"):
        decode_block(b"\x03\x00" + b"\xff" * 40, 4)  # layout 3 does not exist
    one = to_bytes(bits_of(1, 14) + "1" + "0" * 9)  # sparse, k = 0, mask 1000: vertex 0 coded...
    with pytest.raises(ValueError, match="past the end"):
        decode_block(one, 4)  # ...but its values are missing
    padded = to_bytes(bits_of(2, 14) + eg0(4) * 3 + "1" * 3)  # runs of 4 zeros, then non-zero padding
    with pytest.raises(ValueError, match="padding"):
        decode_block(padded, 4)
    out, end = decode_block(to_bytes(bits_of(2, 14) + eg0(4) * 3 + "0" * 3), 4)
    assert end == 4 and not out.any()


def test_block_runs_layout_for_runs_of_equal_deltas():
    """A smooth motion chosen as runs of equal deltas costs a few bits per run, not per vertex."""
    d = np.zeros((100, 3), np.int64)
    d[20:60, 0] = 5
    d[40:, 1] = -3
    d[70:75, 2] = 1
    data = _coder.encode(d)
    assert data[0] & 3 == 2 and len(data) <= 14
    out, end = decode_block(data, 100)
    assert end == len(data) and np.array_equal(out, d)
    too_long = to_bytes(bits_of(2, 14) + eg0(101) + "0" * 7)  # runs layout, k = 0: a run of 101 of 100
    with pytest.raises(ValueError, match="run past the end"):
        decode_block(too_long, 100)


def _rigid_reference(positions, quats, jaws, prev, origin, step, max_error, bits, tolerance, jq):
    """The vectorized numpy path (public functions) that ``rigid_hysteresis`` fuses into one call."""
    pos = quantize_positions(positions, origin, step)
    rot = encode_rotations(quats, bits)
    has_jaw = ~np.isnan(jaws)
    jaw = np.full(len(jaws), NO_JAW, np.int64)
    jaw[has_jaw] = jq.quantize(jaws[has_jaw])
    for i, p in enumerate(prev):
        if p is None:
            continue
        p_pos, p_rot, p_jaw = p
        keep = np.abs(positions[i] - dequantize_positions(np.asarray(p_pos), origin, step)) <= max_error
        pos[i] = np.where(keep, p_pos, pos[i])
        if rotation_angle(decode_rotations(np.array([p_rot], np.uint64), bits), quats[i])[0] <= tolerance:
            rot[i] = p_rot
        if p_jaw != NO_JAW and has_jaw[i] and abs(jaws[i] - jq.dequantize(np.array([p_jaw]))[0]) <= jq.max_error:
            jaw[i] = p_jaw
    return pos, rot, jaw


def _rigid_fused(positions, quats, jaws, prev, origin, step, max_error, bits, tolerance, jq):
    n = len(positions)
    blank = ((0, 0, 0), 0, NO_JAW)
    out = np.empty((n, 3), np.int32), np.empty(n, np.uint64), np.empty(n, np.int64)
    status = rigid_hysteresis(
        positions, quats, jaws,
        np.array([(p or blank)[0] for p in prev], np.int32).reshape(n, 3),
        np.array([(p or blank)[1] for p in prev], np.uint64),
        np.array([(p or blank)[2] for p in prev], np.int64),
        np.array([p is not None for p in prev], bool),
        origin, step, max_error, bits, tolerance, jq.lo, jq.hi, jq.bits, jq.max_error, NO_JAW, *out,
    )  # fmt: skip
    return status, out


@pytest.mark.parametrize("seed", range(5))
def test_fused_rigid_hysteresis_matches_the_numpy_path_exactly(seed):
    """Rigid objects drift, turn and open their jaws frame after frame; the fused kernel gives exactly the
    codes of the numpy functions (so the two stay interchangeable for a decoder's arithmetic)."""
    rng = np.random.default_rng(seed)
    n, bits, step, max_error = 9, 12, 2e-4, 1e-4
    origin = np.array([0.01, -0.02, 0.03])
    jq = ScalarQuantizer()
    tolerance = max_angular_error(bits)
    positions = rng.uniform(-0.3, 0.3, (n, 3))
    quats = rng.normal(size=(n, 4))
    quats /= np.linalg.norm(quats, axis=1)[:, None]
    jaws = rng.uniform(-0.2, 1.8, n)
    jaws[::4] = np.nan
    prev = [None] * n
    for _ in range(40):
        expected = _rigid_reference(positions, quats, jaws, prev, origin, step, max_error, bits, tolerance, jq)
        status, got = _rigid_fused(positions, quats, jaws, prev, origin, step, max_error, bits, tolerance, jq)
        assert status == RIGID_OK
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_array_equal(e, g)
        prev = [(tuple(p), r, w) for p, r, w in zip(got[0].tolist(), got[1].tolist(), got[2].tolist(), strict=True)]
        prev[rng.integers(n)] = None  # an object appears afresh
        positions = positions + rng.normal(0, 1e-4, (n, 3))
        quats = quats + rng.normal(0, 2e-4, (n, 4)) * (rng.random(n) < 0.5)[:, None]
        jaws = np.where(np.isnan(jaws), np.nan, jaws + rng.normal(0, 3e-4, n))


def test_fused_rigid_hysteresis_reports_bad_input():
    jq = ScalarQuantizer()
    args = (np.zeros(1, float), [None], np.zeros(3), 2e-4, 1e-4, 12, 1e-3, jq)
    q = np.array([[0.0, 0.0, 0.0, 1.0]])
    assert _rigid_fused(np.array([[np.nan, 0.0, 0.0]]), q, *args)[0] == RIGID_NONFINITE
    assert _rigid_fused(np.array([[1e9, 0.0, 0.0]]), q, *args)[0] == RIGID_RANGE
    assert _rigid_fused(np.zeros((1, 3)), np.zeros((1, 4)), *args)[0] == RIGID_BAD_QUATERNION
    assert _rigid_fused(np.zeros((1, 3)), np.full((1, 4), np.inf), *args)[0] == RIGID_BAD_QUATERNION


@pytest.mark.parametrize("moving_error", [None, 5e-4])
def test_quantize_frame_is_the_trend_hysteresis_and_bounds_of_the_parts(moving_error):
    """The fused frame kernel gives exactly what the separate parts gave, frame after frame (their state too)."""
    from netcode.sync.motion_bound import MotionBound
    from netcode.sync.quantize import FRAME_OK, TrendTracker, quantize_frame

    rng = np.random.default_rng(7)
    offsets = np.array([0, 5, 6, 14, 20], np.int64)
    base = rng.uniform(-0.1, 0.1, (20, 3))
    pq = PositionQuantizer(1e-4, step=1e-4)
    origin = np.asarray(pq.origin, np.float64)
    ref_trend, ref_motion = TrendTracker(), MotionBound(1e-4, moving_error)
    trend, motion = TrendTracker(), MotionBound(1e-4, moving_error)
    x = base.copy()
    ref_q = pq.update(x, None, ref_trend.update(x))
    ref_motion.update(x, offsets)
    trend.update(x)
    motion.update(x, offsets)
    q_prev = ref_q.copy()
    for f in range(30):
        x = base + 3e-5 * rng.standard_normal(base.shape) + (0.002 * f if f < 15 else 0.03)
        target = ref_trend.update(x)
        ref_q = pq.update(x, ref_q, target)
        ref_bounds = ref_motion.update(x, offsets) * (1 - 1e-9)
        q, bounds = np.empty((20, 3), np.int32), np.empty(4)
        ring, at = motion.take_slot(x.shape) if moving_error else (np.zeros((1, 0, 3)), 0)
        status = quantize_frame(
            x, trend.level, trend.trend, trend.alpha, trend.beta, trend.lead, np.empty_like(x), q_prev, origin,
            pq.grid, pq.max_error, q, ring, at, offsets, moving_error or 0.0, 1e-9, bounds,
        )  # fmt: skip
        assert status == FRAME_OK
        assert np.array_equal(q, ref_q)
        assert np.array_equal(bounds, ref_bounds)
        assert np.array_equal(trend.level, ref_trend.level) and np.array_equal(trend.trend, ref_trend.trend)
        q_prev = q


def test_quantize_frame_refuses_a_position_that_is_not_finite():
    from netcode.sync.quantize import FRAME_NONFINITE, quantize_frame

    x = np.zeros((2, 3))
    x[1, 2] = np.nan
    offsets = np.array([0, 2], np.int64)
    args = (x, np.zeros((2, 3)), np.zeros((2, 3)), 0.3, 0.2, 2.0, np.empty((2, 3)), np.zeros((2, 3), np.int32))
    status = quantize_frame(
        *args, np.zeros(3), 1e-4, 1e-4, np.empty((2, 3), np.int32), np.zeros((1, 0, 3)), 0, offsets, 0.0, 0.0,
        np.empty(1),
    )  # fmt: skip
    assert status == FRAME_NONFINITE
