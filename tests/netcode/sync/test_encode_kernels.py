"""The encoder's kernels write exactly the bytes the encoder wrote before them (the wire format is fixed)."""

import json
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netcode.sync.encode_kernels import RigidTracks, best_k, client_arrays, client_row, write_entry
from netcode.sync.snapshot import NO_JAW, rigid_entry_body
from netcode.sync.snapshot import best_k as reference_best_k
from tests.netcode.sync.encoder_sequence import GOLDEN, snapshots


@pytest.mark.parametrize("batch", [False, True], ids=["one_by_one", "encode_many"])
def test_recorded_sequence_bytes_are_unchanged(batch):
    """Five clients (budgets from unlimited to a rigid record that does not fit, losses, late and out-of-order
    acks), rigid objects with jaws and heads coming and going, a predictor, a cut, a layout edit and a reset:
    every snapshot is byte for byte the one recorded before the encoder moved to kernels, whether each client is
    encoded alone or a frame's clients in one ``encode_many`` call."""
    golden = json.loads(GOLDEN.read_text())
    rows = golden["snapshots"]
    seen = 0
    for (f, cid, data), (gf, gcid, length, crc) in zip(snapshots(batch), rows, strict=True):
        assert (f, cid) == (gf, gcid)
        assert (len(data), zlib.crc32(data)) == (length, crc), f"frame {f}, client {cid}: bytes differ"
        seen += 1
    assert seen == len(rows) > 300


values = st.integers(-(1 << 20), 1 << 20)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 1 << 34), min_size=1, max_size=3))
def test_best_k_is_the_reference_order(vals):
    assert best_k(np.array(vals, np.int64), len(vals)) == reference_best_k(vals)


@settings(max_examples=400, deadline=None)
@given(
    st.tuples(values, values, values),
    st.tuples(values, values, values),
    st.integers(0, 3),
    st.lists(st.integers(0, (1 << 12) - 1), min_size=6, max_size=6),
    st.integers(-1, 255),
    st.integers(-1, 255),
    st.booleans(),
    st.integers(0, 7),
    st.sampled_from([(12, 8), (4, 6), (20, 12), (1, 1)]),
)
def test_rigid_entry_is_the_reference_body(now_pos, base_pos, largest, comps, jaw, base_jaw, full, kind, bits):
    """Full and delta entries (small and large moves, same and other largest rotation component, jaws that
    appear, change and vanish) are bit for bit ``snapshot.rigid_entry_body``."""
    rotation_bits, jaw_bits = bits
    mask = (1 << rotation_bits) - 1
    c = [v & mask for v in comps]
    rot = largest << (3 * rotation_bits) | c[0] << (2 * rotation_bits) | c[1] << rotation_bits | c[2]
    base_largest = largest if comps[0] % 2 else (largest + 1) % 4
    base_rot = base_largest << (3 * rotation_bits) | c[3] << (2 * rotation_bits) | c[4] << rotation_bits | c[5]
    jaw = NO_JAW if jaw < 0 else jaw & ((1 << jaw_bits) - 1)
    base_jaw = NO_JAW if base_jaw < 0 else base_jaw & ((1 << jaw_bits) - 1)
    if comps[1] % 3 == 0:
        base_pos, base_rot = now_pos, rot  # unchanged position and rotation
    now = np.array([*now_pos, rot, jaw], np.int64)
    base = np.array([*base_pos, base_rot, base_jaw], np.int64)

    def opt(v):
        return None if v == NO_JAW else v

    if full:
        ref = rigid_entry_body(kind, now_pos, rot, None, opt(jaw), None, rotation_bits, jaw_bits)
    else:
        dpos = tuple(a - b for a, b in zip(now_pos, base_pos, strict=True))
        ref = rigid_entry_body(
            None,
            dpos if any(dpos) else None,
            rot if rot != base_rot else None,
            base_rot,
            opt(jaw) if jaw != base_jaw else None,
            base_jaw,
            rotation_bits,
            jaw_bits,
        )
    out = np.zeros(64, np.uint8)
    n = write_entry(out, now, base, kind, full, rotation_bits, jaw_bits)
    assert n == ref.n
    assert out[: (n + 7) // 8].tobytes() == ref.to_bytes()


def test_tracks_grow_keeping_their_state():
    tracks = RigidTracks(2)
    tracks.exists[1] = True
    tracks.acked[1] = [1, 2, 3, 4, 5]
    tracks.acc[1] = 2.5
    tracks.ensure(9)
    assert tracks.capacity >= 9 and tracks.exists[1] and not tracks.exists[2:].any()
    assert tracks.acked[1].tolist() == [1, 2, 3, 4, 5] and tracks.acc[1] == 2.5
    assert tracks.last_sent[5] < 0 and tracks.acked_seq[5] == -1


def _arrays(n_vertices=6, n_patches=2, cap=4):
    return client_arrays(
        RigidTracks(cap),
        np.zeros((n_vertices, 3), np.int32),
        np.zeros((n_vertices, 3), np.int32),
        np.full(n_patches, -1, np.int64),
        np.zeros(n_patches, bool),
        np.zeros(n_patches, np.int64),
        np.zeros(n_patches, bool),
        np.zeros(n_patches),
        np.zeros(n_patches, bool),
        np.zeros(0, np.int64),
        np.full(n_patches, -1, np.int64),
        np.zeros(n_patches, bool),
    )


def test_client_row_gives_each_arrays_address_and_the_dims():
    arrays = _arrays()
    addresses, dims = client_row(arrays, 6, 2)
    assert addresses.tolist() == [a.ctypes.data for a in arrays]
    assert dims.tolist() == [4, 0]


@pytest.mark.parametrize(
    "index, bad",
    [
        (8, np.zeros((6, 3), np.int64)),  # acked_q of the wrong dtype
        (9, np.zeros((5, 3), np.int32)),  # sent_q of another layout
        (10, np.zeros((2, 2), np.int64)[:, 0]),  # not contiguous
        (3, np.zeros((4, 4), np.int64)),  # a rigid version row of the wrong width
        (14, [0.0, 0.0]),  # not an array
    ],
)
def test_client_row_refuses_arrays_the_kernel_cannot_read(index, bad):
    """The batch kernel reads raw memory: an array of another dtype, shape or layout never reaches it."""
    arrays = list(_arrays())
    arrays[index] = bad
    with pytest.raises(ValueError, match=f"client array {index} "):
        client_row(tuple(arrays), 6, 2)


def test_client_row_refuses_a_read_only_array():
    arrays = list(_arrays())
    arrays[12] = arrays[12].copy()
    arrays[12].flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        client_row(tuple(arrays), 6, 2)
