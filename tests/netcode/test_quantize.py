"""Quantization: the stated error bounds hold exactly, over random data and extremes."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netcode.bitcode import BlockCoder, decode_block
from netcode.quantize import (
    INT32_LIMIT,
    PositionQuantizer,
    ScalarQuantizer,
    TrendTracker,
    decode_rotations,
    encode_rotations,
    hysteresis_quantize,
    max_angular_error,
    rotation_angle,
)
from tests.netcode.snapshot_helpers import bits_of, eg0, to_bytes

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
