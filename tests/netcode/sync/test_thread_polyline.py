"""The thread's quantized polyline: round trips within the bound, deltas, changing counts, loss, bad input."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from netcode.sync.bitcode import BlockCoder
from netcode.sync.snapshot import DEFAULT_CONFIG, write_varint, zigzag
from netcode.sync.thread_polyline import (
    MAX_DEFER,
    MAX_POINTS,
    MAX_THREADS,
    THREAD_VERSION,
    ThreadBaselineMissingError,
    ThreadDecoder,
    ThreadError,
    ThreadSet,
    ThreadStream,
    pack_thread,
    thread_id,
)

BOUND = DEFAULT_CONFIG.positions.max_error


def thread(n: int = 201, phase: float = 0.0) -> np.ndarray:
    """A smooth 3D curve of n points about 3 mm apart (a thread lying in loops)."""
    t = np.linspace(0.0, 0.003 * (n - 1), n)
    return np.stack([t, 0.01 * np.sin(t * 20 + phase), 0.02 * np.cos(t * 7 + phase) + 0.05], axis=1)


def pull(frame: int, n: int = 201) -> np.ndarray:
    """The thread pulled along itself and swaying, frame by frame."""
    return thread(n, 0.02 * frame) + np.array([0.0004 * frame, 0.0, 0.0001 * np.sin(frame / 5)])


def run(frames, stream: ThreadStream, decoder: ThreadDecoder, lose=lambda f: False, key=1):
    """Frames of points through stream and decoder, losing messages where ``lose``; acks every frame."""
    sizes = []
    for f, pts in enumerate(frames, start=1):
        stream.begin_frame(f, f / 60, pts)
        data = stream.encode(key)
        if data is not None:
            sizes.append(len(data))
            if not lose(f):
                decoder.apply(data)
        if decoder.sequence is not None and not lose(f):
            stream.on_ack_fields(key, **decoder.ack_fields())
    return sizes


def test_round_trip_within_the_surface_error_bound_every_frame():
    stream, dec = ThreadStream(), ThreadDecoder(DEFAULT_CONFIG)
    stream.add_client(1)
    for f in range(1, 40):
        pts = pull(f)
        stream.begin_frame(f, f / 60, pts)
        data = stream.encode(1)
        assert data is not None
        assert dec.apply(data)
        stream.on_ack_fields(1, **dec.ack_fields())
        assert np.abs(dec.points() - pts).max() <= BOUND
        assert dec.sequence == f and dec.time == pytest.approx(f / 60)


def test_deltas_are_much_smaller_than_keyframes():
    stream, dec = ThreadStream(), ThreadDecoder(DEFAULT_CONFIG)
    stream.add_client(1)
    sizes = run([pull(f) for f in range(1, 30)], stream, dec)
    full, deltas = sizes[0], sizes[1:]
    assert stream.clients[1].stats["full"] == 1
    assert max(deltas) < 0.6 * full
    assert np.mean(deltas) < full / 2


def test_a_still_thread_costs_nothing_after_it_is_acked():
    stream, dec = ThreadStream(), ThreadDecoder(DEFAULT_CONFIG)
    stream.add_client(1)
    still = thread()
    sizes = run([still + 1e-6 * np.sin(f) for f in range(10)], stream, dec)
    assert len(sizes) == 1  # the full record, then nothing


@pytest.mark.parametrize("counts", [(201, 150, 201), (50, 120, 3), (10, 0, 10), (1, 2, 1)])
def test_the_point_count_may_change_between_frames(counts):
    stream, dec = ThreadStream(), ThreadDecoder(DEFAULT_CONFIG)
    stream.add_client(1)
    f = 0
    for n in counts:
        for _ in range(4):
            f += 1
            pts = pull(f, n)
            stream.begin_frame(f, f / 60, pts)
            data = stream.encode(1)
            if data is not None:
                dec.apply(data)
                stream.on_ack_fields(1, **dec.ack_fields())
            assert dec.points().shape == (n, 3)
            if n:
                assert np.abs(dec.points() - pts).max() <= BOUND
    assert stream.clients[1].stats["full"] < f  # the count changes went as deltas (or not at all)


def test_a_count_change_is_sent_as_a_delta_against_the_extended_baseline():
    stream, dec = ThreadStream(), ThreadDecoder(DEFAULT_CONFIG)
    stream.add_client(1)
    run([thread(201)], stream, dec)
    longer = np.concatenate([thread(201), thread(201)[-1] + np.arange(1, 11)[:, None] * np.array([0.003, 0, 0])])
    stream.begin_frame(2, 2 / 60, longer)
    data = stream.encode(1)
    dec.apply(data)
    assert stream.clients[1].stats["full"] == 1 and len(data) < 40
    assert np.abs(dec.points() - longer).max() <= BOUND


def test_losses_only_delay_the_thread_and_deltas_use_acknowledged_baselines():
    rng = np.random.default_rng(4)
    lost = set(np.flatnonzero(rng.random(200) < 0.3).tolist()) - {1}
    stream, dec = ThreadStream(), ThreadDecoder(DEFAULT_CONFIG)
    stream.add_client(1, resend_after=4)
    frames = [pull(f) for f in range(1, 120)]
    run(frames, stream, dec, lose=lambda f: f in lost)
    assert dec.missing_baselines == 0 and dec.rejected == 0  # never a delta against a version it lacks
    assert np.abs(dec.points() - frames[-1]).max() <= BOUND or dec.sequence < len(frames)
    # a last frame with no loss brings it up to date
    stream.begin_frame(200, 200 / 60, frames[-1])
    data = stream.encode(1)
    if data is not None:
        dec.apply(data)
    assert np.abs(dec.points() - frames[-1]).max() <= BOUND


def test_a_lost_ack_keeps_the_old_baseline_and_the_decoder_still_holds_it():
    stream, dec = ThreadStream(), ThreadDecoder(DEFAULT_CONFIG)
    stream.add_client(1)
    run([pull(1)], stream, dec)  # frame 1 acked
    for f in range(2, 6):  # deltas whose acks are all lost: each names frame 1
        stream.begin_frame(f, f / 60, pull(f))
        data = stream.encode(1)
        dec.apply(data)
        assert data[1 + 1 + 8] == f - 1  # the age varint: against frame 1
    assert np.abs(dec.points() - pull(5)).max() <= BOUND


def test_a_decoder_that_lost_its_baseline_says_so_and_a_reset_recovers():
    stream, dec = ThreadStream(), ThreadDecoder(DEFAULT_CONFIG)
    stream.add_client(1)
    run([pull(1)], stream, dec)
    fresh = ThreadDecoder(DEFAULT_CONFIG)  # a client that restarted
    stream.begin_frame(2, 2 / 60, pull(2))
    with pytest.raises(ThreadBaselineMissingError):
        fresh.apply(stream.encode(1))
    assert fresh.sequence is None and fresh.missing_baselines == 1
    stream.reset_client(1)  # its snap_resync
    stream.begin_frame(3, 3 / 60, pull(3))
    assert fresh.apply(stream.encode(1))
    assert np.abs(fresh.points() - pull(3)).max() <= BOUND


def test_priority_defers_the_thread_to_a_higher_accumulator_and_to_a_small_room():
    stream = ThreadStream()
    stream.add_client(1)
    stream.begin_frame(1, 0.0, pull(1))
    assert stream.encode(1, room=50) is None  # a full thread does not fit 50 bytes: it waits
    assert stream.encode(1, rival=1e9) is None  # a patch ranks higher
    acc = stream.clients[1].priority.acc[0]
    assert acc > 0  # it kept accumulating
    stream.begin_frame(2, 0.0, pull(2))
    assert stream.encode(1, rival=acc + 1) is not None  # its accumulator grew past the rival's
    assert stream.clients[1].priority.acc[0] == 0


def test_a_patch_that_never_fits_cannot_starve_the_thread():
    stream = ThreadStream()
    stream.add_client(1)
    sent = []
    for f in range(1, 12):
        stream.begin_frame(f, f / 60, pull(f))
        sent.append(stream.encode(1, rival=1e12) is not None)  # a rival that only grows
    assert sent[:MAX_DEFER] == [False] * MAX_DEFER and sent[MAX_DEFER]
    assert sum(sent) >= 2


def test_interest_raises_the_thread_near_the_focus():
    near, far = ThreadStream(), ThreadStream()
    for s in (near, far):
        s.add_client(1)
        s.begin_frame(1, 0.0, pull(1))
    near.encode(1, rival=1e9, focus=pull(1)[:1])
    far.encode(1, rival=1e9, focus=np.array([[5.0, 5.0, 5.0]]))
    assert near.clients[1].priority.acc[0] > 2 * far.clients[1].priority.acc[0]


# ------------------------------------------------------------------------------------------ bad input


def _message(q=None, age=0, seq=5, count=None) -> bytes:
    q = np.asarray(pull(1, 20) / 1e-4, np.int64) if q is None else q
    data = pack_thread(seq, 1.0, age, q, None if age == 0 else q, BlockCoder(MAX_POINTS))
    if count is None:
        return data
    head = bytearray((THREAD_VERSION,))
    write_varint(head, seq)
    head += data[2:10]
    write_varint(head, age)
    write_varint(head, count)
    return bytes(head) + data[len(head) :]


def test_every_truncation_is_a_clear_error_and_leaves_the_decoder_unchanged():
    dec = ThreadDecoder(DEFAULT_CONFIG)
    good = _message()
    for cut in range(len(good)):
        with pytest.raises(ThreadError):
            dec.apply(good[:cut])
    assert dec.sequence is None and dec.rejected == len(good)
    assert dec.apply(good)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (bytes((9,)) + bytes(20), "version"),
        (_message(count=MAX_POINTS + 1), "at most"),
        (_message(count=2**34), "at most"),
        (_message(count=25), "truncated|past the end|block"),
        (_message(count=10), "after the thread|block"),
        (_message() + b"\x00", "after the thread"),
        (_message(seq=3, age=4), "beyond its sequence"),
        (bytes((THREAD_VERSION,)) + b"\xff" * 6, "longer than 5 bytes"),
        (bytes((THREAD_VERSION, 1)) + b"\x00\x00\x00\x00\x00\x00\xf8\x7f" + b"\x00\x00", "not finite"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(data, why):
    dec = ThreadDecoder(DEFAULT_CONFIG)
    with pytest.raises(ThreadError, match=why):
        dec.apply(data)
    assert dec.sequence is None


def test_random_garbage_never_raises_anything_but_thread_errors():
    rng = np.random.default_rng(1)
    dec = ThreadDecoder(DEFAULT_CONFIG)
    good = _message()
    for _ in range(400):
        data = bytearray(good)
        for i in rng.integers(0, len(data), size=int(rng.integers(1, 4))):
            data[i] = int(rng.integers(0, 256))
        with contextlib.suppress(ThreadError):
            dec.apply(bytes(data))
        dec.reset()
    for n in range(60):
        with contextlib.suppress(ThreadError):
            dec.apply(bytes((THREAD_VERSION,)) + rng.bytes(n))


def test_the_encoder_refuses_bad_threads():
    stream = ThreadStream()
    with pytest.raises(ValueError, match="finite"):
        stream.begin_frame(1, 0.0, np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="at most"):
        stream.begin_frame(1, 0.0, np.zeros((MAX_POINTS + 1, 3)))
    assert zigzag(-1) == 1


def test_a_thread_set_keeps_each_thread_apart_by_id_and_refuses_ids_beyond_the_limit():
    """Several threads (a tied stitch's piece cut off stays drawn): one stream and one decoder per id."""
    streams = {0: ThreadStream(), 3: ThreadStream()}
    threads = ThreadSet(DEFAULT_CONFIG)
    truth = {0: thread(40), 3: thread(12) + np.array([0.0, 0.0, 0.01])}
    for tid, stream in streams.items():
        stream.add_client(1)
        stream.begin_frame(1, 1 / 60, truth[tid])
        assert threads.apply(tid, stream.encode(1))
    got = threads.points()
    assert set(got) == {0, 3} and all(np.abs(got[k] - truth[k]).max() <= BOUND for k in got)
    assert threads.decoder(None) is threads.decoders[0]  # an absent id is thread 0
    assert thread_id(None) == 0 and thread_id(MAX_THREADS - 1) == MAX_THREADS - 1
    for bad in (-1, MAX_THREADS, 2.0, True, "1"):
        with pytest.raises(ThreadError, match="thread id"):
            threads.decoder(bad)
    assert set(threads.decoders) == {0, 3}  # a refused id made no decoder
    empty = ThreadStream()
    empty.add_client(1)
    empty.begin_frame(2, 2 / 60, np.zeros((0, 3)))  # a thread that is gone: 0 points
    threads.apply(3, empty.encode(1))
    assert set(threads.points()) == {0}
    threads.reset()
    assert threads.points() == {}
