"""The JavaScript thread decoder (rehearsal/web/static/js/thread_decoder.js) in real Chromium against Python's.

The Python encoder (``netcode.sync.thread_polyline.ThreadStream``) streams a thread being pulled, whose point
count changes, to a client that loses 25% of the messages and gets some out of order, and acks what it got;
the same bytes go through Python's ThreadDecoder and the JS one in the page: every message's outcome (applied,
stale, rejected), the ack, the grid values and the float64 points must be identical. Truncated, bit-flipped and
extended messages get the same verdict in both and leave the JS decoder's state as it was.
"""

from __future__ import annotations

import base64
import contextlib

import numpy as np
import pytest

from netcode.sync.snapshot import DEFAULT_CONFIG
from netcode.sync.thread_polyline import ThreadDecoder, ThreadError, ThreadSet, ThreadStream

MODULE = "/static/js/thread_decoder.js"


def b64(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode()


def curve(n: int, frame: int) -> np.ndarray:
    t = np.linspace(0.0, 0.003 * (n - 1), n)
    phase = 0.03 * frame
    return np.stack(
        [t + 0.0003 * frame, 0.01 * np.sin(t * 20 + phase), 0.02 * np.cos(t * 7 + phase) + 0.0002 * frame], axis=1
    )


@pytest.fixture(scope="module")
def stream_bytes() -> list[bytes]:
    return record_stream()


def record_stream() -> list[bytes]:
    """The messages one lossy client receives, in arrival order: a fifth lost, a tenth a frame late (after the
    next one); the client applies each on arrival and acks most of them."""
    rng = np.random.default_rng(17)
    stream, client = ThreadStream(DEFAULT_CONFIG), ThreadDecoder(DEFAULT_CONFIG)
    stream.add_client(1, resend_after=3)
    received: list[bytes] = []
    late: list[bytes] = []
    counts = [201] * 30 + [180] * 15 + [230] * 15 + [1] * 3 + [0] * 3 + [201] * 14
    for frame, n in enumerate(counts, start=1):
        stream.begin_frame(frame, frame / 60, curve(n, frame))
        data = stream.encode(1)
        arriving, delayed = late, []  # last frame's late one arrives after this frame's
        if data is not None:
            roll = rng.random()
            if roll < 0.1:
                delayed.append(data)
            elif roll >= 0.3:
                arriving = [data, *late]
        late = delayed
        for message in arriving:
            received.append(message)
            client.apply(message)
        if arriving and rng.random() < 0.8:
            stream.on_ack_fields(1, **client.ack_fields())
    return received


def python_replay(messages: list[bytes]) -> list[dict]:
    dec = ThreadDecoder(DEFAULT_CONFIG)
    out = []
    for data in messages:
        try:
            outcome = "applied" if dec.apply(data) else "stale"
        except ThreadError:
            outcome = "rejected"
        try:
            ack = dec.ack_fields()
        except ThreadError:  # nothing applied yet (JS: null)
            ack = None
        out.append(
            {
                "outcome": outcome,
                "sequence": dec.sequence,
                "ack": ack,
                "grid": b64(dec.grid.astype("<i4").tobytes()),
                "points": b64(dec.points().astype("<f8").tobytes()),
                "rejected": dec.rejected,
            }
        )
    return out


JS_REPLAY = """async (arg) => {
  const m = await import(arg.module);
  const unb64 = (t) => Uint8Array.from(atob(t), (c) => c.charCodeAt(0));
  const b64 = (a) => { const b = new Uint8Array(a.buffer, a.byteOffset, a.byteLength); let s = "";
    for (const x of b) s += String.fromCharCode(x); return btoa(s); };
  const config = { origin: arg.origin, step: arg.step };
  const run = (messages, fresh) => {
    let dec = new m.ThreadDecoder(config);
    for (const t of arg.prefix || []) dec.apply(unb64(t));
    return messages.map((text) => {
      let outcome;
      const before = fresh ? b64(dec.points()) + dec.sequence : null;
      try { outcome = dec.apply(unb64(text)) ? "applied" : "stale"; }
      catch (exc) { if (!(exc instanceof m.ThreadError)) throw exc; outcome = "rejected"; }
      const state = { outcome, sequence: dec.sequence, ack: dec.ackFields(), grid: b64(dec.grid()),
        points: b64(dec.points()), rejected: dec.rejected };
      if (fresh) {
        state.unchanged = b64(dec.points()) + dec.sequence === before;
        if (outcome !== "rejected") {
          dec = new m.ThreadDecoder(config);
          for (const t of arg.prefix) dec.apply(unb64(t));
        }
      }
      return state;
    });
  };
  return run(arg.messages, arg.fresh);
}"""


def js_replay(page, messages: list[bytes], prefix: list[bytes] | None = None, fresh: bool = False) -> list[dict]:
    arg = {
        "module": MODULE,
        "origin": list(DEFAULT_CONFIG.positions.origin),
        "step": DEFAULT_CONFIG.positions.grid,
        "messages": [b64(m) for m in messages],
        "prefix": [b64(m) for m in prefix or []],
        "fresh": fresh,
    }
    return page.evaluate(JS_REPLAY, arg)


def test_the_stream_covers_deltas_fulls_count_changes_and_reordering(stream_bytes):
    ages = [m[10] for m in stream_bytes]  # the age varint after version, 1-byte sequence and f64 time
    outcomes = [r["outcome"] for r in python_replay(stream_bytes)]
    assert ages.count(0) >= 2 and sum(a > 0 for a in ages) > 30
    assert "stale" in outcomes and outcomes.count("applied") > 40 and "rejected" not in outcomes
    counts = {r["grid"] for r in python_replay(stream_bytes)}
    assert len(counts) > 30


def test_js_thread_decoder_matches_python_on_the_encoders_stream(harness, stream_bytes):
    py = python_replay(stream_bytes)
    js = js_replay(harness, stream_bytes)
    assert len(js) == len(py)
    for i, (a, b) in enumerate(zip(js, py, strict=True)):
        for key in ("outcome", "sequence", "ack", "grid", "points", "rejected"):
            assert a[key] == b[key], f"message {i}: {key}: JS {a[key]!r} != Python {b[key]!r}"
    assert not harness.js_errors, harness.js_errors


def mutations(data: bytes, rng: np.random.Generator) -> list[bytes]:
    out = [data[:k] for k in sorted({1, 2, 5, 9, 10, 11, 12, len(data) - 1, *rng.integers(1, len(data), 5).tolist()})]
    for bit in rng.integers(0, 8 * len(data), 16).tolist():
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        out.append(bytes(flipped))
    out += [data + b"\x00", data + b"\x01\x02", bytes([2]) + data[1:], b""]
    head = bytearray(data[:11])  # a huge point count
    out.append(bytes(head) + b"\xff\xff\xff\xff\x0f" + data[12:])
    return [m for m in out if m != data]


def test_malformed_thread_messages_get_the_same_verdict_and_leave_the_state(harness, stream_bytes):
    rng = np.random.default_rng(3)
    cut = len(stream_bytes) // 2
    prefix, upcoming = stream_bytes[:cut], stream_bytes[cut : cut + 3]
    candidates = [m for u in upcoming for m in mutations(u, rng)]
    expected = []
    for candidate in candidates:
        dec = ThreadDecoder(DEFAULT_CONFIG)
        for m in prefix:
            with contextlib.suppress(ThreadError):
                dec.apply(m)
        try:
            expected.append("applied" if dec.apply(candidate) else "stale")
        except ThreadError:
            expected.append("rejected")
    got = js_replay(harness, candidates, prefix, fresh=True)
    for i, (js, py) in enumerate(zip(got, expected, strict=True)):
        assert js["outcome"] == py, f"candidate {i}: JS {js['outcome']} != Python {py}"
        if py == "rejected":
            assert js["unchanged"], f"candidate {i}: a rejected message changed the JS state"
    assert expected.count("rejected") > len(candidates) // 2
    assert not harness.js_errors, harness.js_errors


JS_SET = """async (arg) => {
  const m = await import(arg.module);
  const unb64 = (t) => Uint8Array.from(atob(t), (c) => c.charCodeAt(0));
  const set = new m.ThreadSet({ origin: arg.origin, step: arg.step });
  for (const [id, text] of arg.messages) set.apply(id, unb64(text));
  const out = {};
  for (const [id, p] of set.points()) out[id] = Array.from(p);
  const refused = [];
  for (const bad of [-1, 16, 1.5, '2']) {
    try { set.decoder(bad); refused.push(false); } catch (exc) { refused.push(exc instanceof m.ThreadError); }
  }
  return { points: out, ids: [...set.decoders.keys()], refused, absent: set.decoder(undefined) === set.decoder(0) };
}"""


def test_js_thread_set_keeps_threads_by_id_as_python_does(harness):
    """Several threads (the live one, 0 or absent, and tied pieces cut off it): each id its own decoder; ids out of
    range refused, as netcode.sync.thread_polyline.ThreadSet."""
    messages = []
    for tid, n in ((None, 30), (2, 8), (5, 12)):
        stream = ThreadStream(DEFAULT_CONFIG)
        stream.add_client(1)
        stream.begin_frame(1, 1 / 60, curve(n, tid or 0))
        messages.append((tid, stream.encode(1)))
    py = ThreadSet(DEFAULT_CONFIG)
    for tid, data in messages:
        py.apply(tid, data)
    arg = {
        "module": MODULE,
        "origin": list(DEFAULT_CONFIG.positions.origin),
        "step": DEFAULT_CONFIG.positions.grid,
        "messages": [(tid, b64(data)) for tid, data in messages],
    }
    got = harness.evaluate(JS_SET, arg)
    expected = py.points()
    assert sorted(int(k) for k in got["points"]) == sorted(expected) == [0, 2, 5]
    for k, pts in expected.items():
        assert np.array_equal(np.asarray(got["points"][str(k)]).reshape(-1, 3), pts)  # float64, bit for bit
    assert got["refused"] == [True, True, True, True] and got["absent"]
    assert sorted(got["ids"]) == [0, 2, 5]
    assert not harness.js_errors, harness.js_errors
