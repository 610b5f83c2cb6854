"""The JavaScript snapshot decoder (rehearsal/web/static/js/snapshot_decoder.js) in real Chromium against Python's.

The same recorded message bytes (rehearsal.web.sync_trace: the real SnapshotServer on a grasp, pull, cut and
burn, with 2% loss, reordering, out-of-order acks, a late joiner and a reconnect) go through Python's
SnapshotDecoder and through the JS decoder in the page: every message's outcome and ack must agree, and at
each checkpoint the surface (float32 positions exactly as Python's float64 rounded to float32, the float64
values and the grid), the rigid objects, the counters and the triangles (the server's triangle list of
that epoch). Malformed, truncated and mutated snapshots, topology and predictor messages get the same
verdict in both, and a rejected one leaves the JS decoder's state exactly as it was.
"""

from __future__ import annotations

import base64
import copy
import json
import struct

import numpy as np
import pytest

from netcode.sync.motion_predictor import Predictor
from netcode.sync.snapshot import SNAPSHOT_VERSION, drive_record, read_header, write_varint, zigzag
from netcode.sync.snapshot_messages import SNAPSHOT_REGISTRY, pack_ids, predictor_message, snapshot_message, unpack_ids
from rehearsal.web.sync_trace import b64, decoder_state, feed, record_trace, trace_json
from tests.netcode.sync.snapshot_helpers import bits_of, eg0, to_bytes

HARNESS = "/tests/decoder_harness.js"


@pytest.fixture(scope="module")
def trace():
    return record_trace()


def run(page, expression: str, arg):
    """Evaluate ``async (h, arg) => ...`` with the harness module imported in the page."""
    return page.evaluate(
        f"async (arg) => {{ const h = await import('{HARNESS}'); return ({expression})(h, arg); }}", arg
    )


def verdict(outcome: list) -> list:
    """An outcome without the JS side's reason text (["rejected", why] -> ["rejected"])."""
    return outcome[:1] if outcome[0] == "rejected" else outcome


def unb64(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype)


def assert_same_state(js: dict, py: dict, where: str, triangles: np.ndarray | None = None) -> None:
    """Field-by-field equality of a JS decoder state and a Python one (decoder_state)."""
    for key in ("epoch", "ack", "newest", "predictors", "missing_baselines", "rejected", "held"):
        assert js[key] == py[key], f"{where}: {key}: JS {js[key]!r} != Python {py[key]!r}"
    for key, dtype in (("ids", "<i4"), ("grid", "<i4"), ("received", "u1"), ("positions32", "<f4")):
        a, b = unb64(js[key], dtype), unb64(py[key], dtype)
        assert a.shape == b.shape, f"{where}: {key}: {a.shape} != {b.shape}"
        bad = np.flatnonzero(a != b)
        assert bad.size == 0, f"{where}: {key}: {bad.size} values differ, first at {bad[0]}: {a[bad[0]]} != {b[bad[0]]}"
    assert js["positions32"] == py["positions32"], f"{where}: float32 positions differ"
    assert js["positions64"] == py["positions64"], f"{where}: float64 positions differ"
    assert sorted(js["rigid"]) == sorted(py["rigid"]), (
        f"{where}: rigid ids {sorted(js['rigid'])} != {sorted(py['rigid'])}"
    )
    for oid, obj in py["rigid"].items():
        other = js["rigid"][oid]
        assert (other["kind"], other["sequence"]) == (obj["kind"], obj["sequence"]), f"{where}: rigid {oid}"
        a, b = unb64(other["values"], "<f8"), unb64(obj["values"], "<f8")
        assert np.array_equal(a, b, equal_nan=True), f"{where}: rigid {oid}: JS {a} != Python {b}"
    if triangles is not None:
        got = unb64(js["triangles"], "<i4").reshape(-1, 3)
        assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, np.asarray(triangles).tolist())), (
            f"{where}: triangles differ from the server's ({len(got)} vs {len(triangles)})"
        )
        rows = unb64(js["triangle_rows"], "<i4").reshape(-1, 3)
        ids = unb64(js["ids"], "<i4")
        assert np.array_equal(ids[rows], got), f"{where}: triangle rows do not index the triangles' vertices"


def test_trace_covers_what_it_claims(trace):
    """The recorded session has loss, reordering, held snapshots, rejections (missing baselines after
    reordering, then a resync), optimistic deltas whose base was lost (shown approximately), four epochs (join,
    cut, burn, reset), a late joiner and two motion predictors driven together."""
    by = {c.name: c for c in trace.clients}
    assert sum(c.lost for c in trace.clients) >= 3 and sum(c.reordered for c in trace.clients) >= 3
    assert any(o == ["held"] for c in trace.clients for o in c.outcomes)
    assert any(o == ["rejected"] for c in trace.clients for o in c.outcomes)
    assert sum(d.skipped_entries for d in trace.decoders.values()) > 0, "no optimistic base was lost"
    assert sorted(trace.triangles) == [1, 2, 3, 4]
    assert all(trace.decoders[name].epoch == 4 for name in by)
    assert trace.decoders["C"].predictors == [1, 2] and len(by["C"].messages) < len(by["B"].messages)
    decoded = [SNAPSHOT_REGISTRY.decode(m) for m in by["B"].messages]
    topology = [m.fields for m in decoded if m.type == "snap_topology"]
    assert [t["cause"] for t in topology] == ["full", "cut", "burn", "full"]
    assert len(unpack_ids(topology[1]["kept_patches"], "kept")) > 0, "the cut is not a layout edit"
    assert "kept_patches" not in topology[0] and "kept_patches" not in topology[3]
    drive_counts = []
    for m in decoded:
        if m.type == "snapshot":
            data = m.fields["data"]
            start = read_header(data)[4]
            if data[start] == 3:  # a drive record: its count follows the tag
                drive_counts.append(data[start + 1])
    assert max(drive_counts) == 2, "no snapshot drives both predictors"


def test_js_decoder_matches_python_on_recorded_trace(harness, trace):
    """Every message's outcome and ack, and every checkpoint's state, are identical in JS and Python."""
    data = trace_json(trace)
    results = run(harness, "(h, clients) => Promise.all(clients.map((c) => h.replay(c)))", data["clients"])
    compared = 0
    for log, result in zip(trace.clients, results, strict=True):
        assert len(result["outcomes"]) == len(log.messages)
        for i, (js, py) in enumerate(zip(result["outcomes"], log.outcomes, strict=True)):
            assert verdict(js) == py, f"client {log.name}, message {i}: JS {js} != Python {py}"
        assert result["acks"] == log.acks, f"client {log.name}: acks differ"
        for i, (js, py) in enumerate(zip(result["digests"], log.digests, strict=True)):
            assert js == py, f"client {log.name}: decoder state differs after message {i} ({log.outcomes[i]})"
        for index, state in log.checkpoints.items():
            js_state = result["checkpoints"][str(index)]
            triangles = trace.triangles.get(state["epoch"], np.zeros((0, 3), np.int64))
            assert_same_state(js_state, state, f"client {log.name}, after message {index}", triangles)
            compared += 1
    assert compared >= 30
    assert not harness.js_errors, harness.js_errors


def _prefix_and_next(trace, name: str, fraction: float) -> tuple[list[bytes], list[bytes], int]:
    """A client's messages up to a point in the session, and the snapshot messages right after it."""
    log = next(c for c in trace.clients if c.name == name)
    cut = int(len(log.messages) * fraction)
    upcoming = [m for m in log.messages[cut:] if SNAPSHOT_REGISTRY.decode(m).type == "snapshot"][:6]
    return log.messages[:cut], upcoming, cut


def _python_at(messages: list[bytes]):
    from netcode.sync.snapshot_decode import SnapshotDecoder

    decoder = SnapshotDecoder()
    for m in messages:
        feed(decoder, m)
    return decoder


def _core(state: dict) -> str:
    """A state without the counters a rejection moves (as the harness's core())."""
    return json.dumps({k: v for k, v in state.items() if k not in ("rejected", "missing_baselines")})


def probe_python(prefix: list[bytes], candidates: list[bytes]) -> list[tuple[list, dict, bool]]:
    """What the harness's probe() does, with Python's decoder: (outcome, state after, state unchanged)."""
    base = _python_at(prefix)
    decoder = copy.deepcopy(base)
    before = _core(decoder_state(decoder))
    out = []
    for candidate in candidates:
        outcome = feed(decoder, candidate)
        state = decoder_state(decoder)
        unchanged = _core(state) == before
        out.append((outcome, state, unchanged))
        if not unchanged:
            decoder = copy.deepcopy(base)
    return out


def probe_js(page, prefix: list[bytes], candidates: list[bytes]) -> list[dict]:
    arg = {"prefix": [b64(m) for m in prefix], "candidates": [b64(m) for m in candidates]}
    return run(page, "(h, a) => h.probe(a.prefix, a.candidates)", arg)


def _mutations(snapshots: list[bytes], rng: np.random.Generator) -> list[bytes]:
    """Truncated, bit-flipped, extended and edited versions of snapshot messages (re-enveloped)."""
    out = []
    for message in snapshots:
        data = SNAPSHOT_REGISTRY.decode(message).fields["data"]
        cuts = sorted({1, 2, 5, 10, 13, 14, len(data) - 1, *rng.integers(1, len(data), 6).tolist()})
        out += [snapshot_message(data[:k]) for k in cuts if 0 < k < len(data)]
        for bit in rng.integers(0, 8 * len(data), 10).tolist():
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            out.append(snapshot_message(bytes(flipped)))
        out.append(snapshot_message(data + b"\x00"))
        out.append(snapshot_message(data + b"\x01\x02"))
        out.append(snapshot_message(bytes([2]) + data[1:]))  # another format version
        out.append(snapshot_message(b""))
    return out


@pytest.mark.parametrize(("name", "fraction"), [("A", 0.3), ("A", 0.62), ("B", 0.85), ("C", 0.7)])
def test_malformed_and_mutated_snapshots_get_the_same_verdict(harness, trace, name, fraction):
    """Mutated snapshots: JS and Python agree on applied / held / dropped / rejected and on the state after;
    a rejected one leaves the JS decoder exactly as it was (SnapshotError, state unchanged)."""
    prefix, upcoming, _ = _prefix_and_next(trace, name, fraction)
    rng = np.random.default_rng(int(fraction * 1000))
    candidates = _mutations(upcoming[:3], rng) + upcoming  # the genuine ones last: they apply
    expected = probe_python(prefix, candidates)
    results = probe_js(harness, prefix, candidates)
    rejected = 0
    for i, ((outcome, state, unchanged), js) in enumerate(zip(expected, results, strict=True)):
        assert verdict(js["outcome"]) == outcome, f"candidate {i}: JS {js['outcome']} != Python {outcome}"
        if outcome == ["rejected"]:
            rejected += 1
            assert unchanged, f"candidate {i}: the Python decoder's state changed on a rejected snapshot"
            assert js["unchanged"], f"candidate {i}: the JS decoder's state changed on a rejected snapshot"
        assert_same_state(js["state"], state, f"candidate {i} ({outcome[0]})")
    assert rejected >= len(candidates) // 2
    assert sum(o[0] == "applied" for o, _, _ in expected) >= 1  # the genuine snapshots (and maybe a lucky flip)


def _topology_fields(trace, name: str) -> dict:
    log = next(c for c in trace.clients if c.name == name)
    message = next(
        SNAPSHOT_REGISTRY.decode(m) for m in log.messages if SNAPSHOT_REGISTRY.decode(m).type == "snap_topology"
    )
    return dict(message.fields)


def _bad_reliable_messages(trace) -> list[bytes]:
    """snap_topology and snap_predictor messages that every decoder must refuse."""
    import zlib

    full = _topology_fields(trace, "B")
    predictor = next(
        SNAPSHOT_REGISTRY.decode(m).fields
        for m in next(c for c in trace.clients if c.name == "B").messages
        if SNAPSHOT_REGISTRY.decode(m).type == "snap_predictor"
    )
    vertices = zlib.decompress(full["patch_vertices"])
    bad_topology = [
        {"patch_vertices": full["patch_vertices"][:-3]},  # truncated zlib stream
        {"patch_vertices": full["patch_vertices"] + b"junk"},  # bytes after the stream
        {"patch_vertices": full["patch_vertices"][:-1] + bytes([full["patch_vertices"][-1] ^ 1])},  # bad check value
        {"patch_vertices": zlib.compress(vertices[:-2])},  # not whole int32
        {"patch_vertices": zlib.compress(np.array([-5], "<i4").tobytes() + vertices[4:])},  # a negative id
        {"patch_vertices": pack_ids(np.arange(10))},  # offsets no longer end at the vertex count
        {"patch_offsets": pack_ids([0, 5, 5, 9])},  # an empty patch
        {"patch_vertices": pack_ids(np.zeros(3, np.int64)), "patch_offsets": pack_ids([0, 3])},  # repeated ids
        {"added_triangles": pack_ids(np.arange(7))},  # not a multiple of 3
        {"removed_vertices": b"not zlib"},
        {"cause": "flood"},
        {"epoch": 0},  # older than the decoder's
        {"epoch": 2**32},
    ]
    out = [SNAPSHOT_REGISTRY.encode("snap_topology", {**full, **change}) for change in bad_topology]
    ids = zlib.decompress(predictor["vertex_ids"])
    gains = np.frombuffer(zlib.decompress(predictor["gains"]), "<i4")
    bad_predictor = [
        {"vertex_ids": pack_ids(np.arange(5)[::-1].copy())},  # not ascending (and gains of another size)
        {"gains": zlib.compress(gains[:-1].tobytes())},  # one gain short
        {"gains": zlib.compress(np.concatenate([[40000], gains[1:]]).astype("<i4").tobytes())},  # beyond int16
        {"gains": predictor["gains"] + b"x"},
        {"vertex_ids": zlib.compress(ids + ids)},  # twice as many ids as gains
        {"id": -1},
        {"vertex_ids": pack_ids(np.zeros(0, np.int64)), "gains": zlib.compress(b"")},  # no vertices
    ]
    out += [SNAPSHOT_REGISTRY.encode("snap_predictor", {**predictor, **change}) for change in bad_predictor]
    out += [
        SNAPSHOT_REGISTRY.encode("snap_config", {**_config_fields(trace), "step": 1.0}),  # step above 2 x max_error
        SNAPSHOT_REGISTRY.encode("snap_config", {**_config_fields(trace), "rotation_bits": 21}),
        SNAPSHOT_REGISTRY.encode("snap_config", {**_config_fields(trace), "jaw_hi": -1.0}),
        SNAPSHOT_REGISTRY.encode("snap_ack", {"newest": 1, "bits": 0}),  # not a message for the decoder
        b"\x93\x01\x02\x03",  # msgpack, but not a map
        SNAPSHOT_REGISTRY.encode("snapshot", {"data": b"x"})[:-1],  # truncated envelope
    ]
    return out


def _config_fields(trace) -> dict:
    log = next(c for c in trace.clients if c.name == "B")
    return dict(
        next(
            SNAPSHOT_REGISTRY.decode(m).fields
            for m in log.messages
            if SNAPSHOT_REGISTRY.decode(m).type == "snap_config"
        )
    )


def test_bad_topology_predictor_and_config_messages_are_refused_in_both(harness, trace):
    """Bad id arrays (truncated or junk-tailed zlib, a bad check value, negative or repeated ids, ragged
    triangles), bad layouts, causes, epochs, predictors and configs: SnapshotError in JS as in Python, and
    the JS state unchanged."""
    prefix, _, _ = _prefix_and_next(trace, "B", 0.7)
    candidates = _bad_reliable_messages(trace)
    expected = probe_python(prefix, candidates)
    results = probe_js(harness, prefix, candidates)
    for i, ((outcome, state, unchanged), js) in enumerate(zip(expected, results, strict=True)):
        assert outcome == ["rejected"] and unchanged, f"candidate {i}: Python {outcome}"
        assert js["outcome"][0] == "rejected", f"candidate {i}: JS {js['outcome']}"
        assert js["unchanged"], f"candidate {i}: JS state changed"
        assert_same_state(js["state"], state, f"candidate {i}")


def _bad_layout_edits(trace, prefix: list[bytes]) -> list[bytes]:
    """snap_topology layout edits (kept_patches, SNAPSHOT.md 1) that a decoder at ``prefix`` must refuse."""
    decoder = _python_at(prefix)
    layout, epoch = decoder.layout, decoder.epoch
    o, v = layout.offsets, layout.vertex_ids
    rest = v[o[1] :]  # the vertices of every patch but 0
    base = {**_topology_fields(trace, "B"), "epoch": epoch + 1, "cause": "cut"}
    not_first = pack_ids(np.arange(1, layout.patch_count))
    shrunk = np.concatenate([[0, o[1] - 1], o[1:] - 1])  # patch 0 one vertex smaller
    bad = [
        {"kept_patches": pack_ids([1, 0]), "patch_offsets": pack_ids(o), "patch_vertices": pack_ids(v[: o[1]])},
        {
            "cause": "full",
            "kept_patches": not_first,
            "patch_offsets": pack_ids(o),
            "patch_vertices": pack_ids(v[: o[1]]),
        },
        {"kept_patches": pack_ids([layout.patch_count]), "patch_offsets": pack_ids(o), "patch_vertices": pack_ids(v)},
        {"kept_patches": pack_ids([0]), "patch_offsets": pack_ids(shrunk), "patch_vertices": pack_ids(rest)},
        {"kept_patches": pack_ids([0]), "patch_offsets": pack_ids(o), "patch_vertices": pack_ids(rest[:-1])},
        {"kept_patches": pack_ids([0]), "patch_offsets": pack_ids(o), "patch_vertices": pack_ids(v[: len(rest)])},
        {
            "epoch": epoch + 2,
            "kept_patches": not_first,
            "patch_offsets": pack_ids(o),
            "patch_vertices": pack_ids(v[: o[1]]),
        },
    ]
    return [SNAPSHOT_REGISTRY.encode("snap_topology", {**base, **change}) for change in bad]


def test_bad_layout_edits_are_refused_in_both(harness, trace):
    """Layout edits that are not ascending, come with cause 'full', keep a patch the previous layout lacks or
    one of another size, list too few vertices or repeat a kept patch's, or skip an epoch: SnapshotError in
    JS as in Python, the state unchanged (a good edit is the trace's cut)."""
    prefix, _, _ = _prefix_and_next(trace, "B", 0.7)
    candidates = _bad_layout_edits(trace, prefix)
    expected = probe_python(prefix, candidates)
    results = probe_js(harness, prefix, candidates)
    for i, ((outcome, state, unchanged), js) in enumerate(zip(expected, results, strict=True)):
        assert outcome == ["rejected"] and unchanged, f"candidate {i}: Python {outcome}"
        assert js["outcome"][0] == "rejected", f"candidate {i}: JS {js['outcome']}"
        assert js["unchanged"], f"candidate {i}: JS state changed"
        assert_same_state(js["state"], state, f"candidate {i}")


def _snapshot(seq: int, epoch: int, record: bytes) -> bytes:
    """A one-record snapshot message around ``record`` (SNAPSHOT.md 2 header)."""
    header = bytearray([SNAPSHOT_VERSION])
    write_varint(header, seq)
    header += struct.pack("<d", 1.5)
    write_varint(header, epoch)
    write_varint(header, 1)
    return snapshot_message(bytes(header) + record)


def _patch_record(n: int, x0: int) -> bytes:
    """One full entry for patch 0 (n vertices, runs layout): the first vertex's x grid value is x0, all else 0."""
    bits = eg0(0) + "0" + eg0(0) + "1" + eg0(0) * 3  # id gap 0, an age code 0 (full); same layout (runs), k + 0
    bits += eg0(0) + eg0(zigzag(x0) - 1) + (eg0(n - 1) if n > 1 else "")  # x: no zeros, x0, then n - 1 zeros
    bits += eg0(n) * 2  # y and z: n zeros each
    bits += "0" * (-len(bits) % 8)
    return bytes([1]) + struct.pack("<H", 1) + to_bytes(bits)


def _rigid_record(oid: int, x0: int, bits_per_component: int = 14) -> bytes:
    """One full rigid entry: an instrument at grid (x0, 0, 0), the identity orientation, no jaw."""
    b = bits_per_component
    mid = (1 << b) // 2
    code = 3 << (3 * b) | mid << (2 * b) | mid << b | mid
    bits = eg0(oid) + "0" + eg0(0) + bits_of(0, 3)  # id, an age 0 (full), kind instrument
    bits += "1" + bits_of(0, 4) + eg0(zigzag(x0)) + eg0(0) + eg0(0)  # position, k = 0
    bits += "1" + "0" + bits_of(code, 2 + 3 * b) + "0"  # absolute orientation; no jaw
    bits += "0" * (-len(bits) % 8)
    out = bytearray([2])
    write_varint(out, 1)
    return bytes(out) + to_bytes(bits)


def test_grid_values_at_the_int32_limits(harness, trace):
    """Hand-made snapshots with grid coordinates at +-(2^31 - 1) are applied, one beyond is refused, in both
    decoders alike (patch and rigid records)."""
    prefix, _, _ = _prefix_and_next(trace, "B", 0.5)
    base = _python_at(prefix)
    n = int(base.layout.sizes[0])
    limit = 2**31 - 1
    candidates, want = [], []
    for k, x0 in enumerate([limit, limit + 1, -limit, -limit - 1, 12345]):
        ok = abs(x0) <= limit
        candidates.append(_snapshot(50_000 + 2 * k, base.epoch, _patch_record(n, x0)))
        candidates.append(_snapshot(50_001 + 2 * k, base.epoch, _rigid_record(7, x0)))
        want += ["applied" if ok else "rejected"] * 2
    expected = probe_python(prefix, candidates)
    assert [o[0] for o, _, _ in expected] == want
    results = probe_js(harness, prefix, candidates)
    for i, ((outcome, state, _), js) in enumerate(zip(expected, results, strict=True)):
        assert verdict(js["outcome"]) == outcome, f"candidate {i}: JS {js['outcome']} != Python {outcome}"
        assert_same_state(js["state"], state, f"candidate {i}")


def test_predictors_beyond_the_kept_sixteen_and_their_drives(harness, trace):
    """20 snap_predictor messages: both decoders keep the newest 16; a snapshot driving an evicted one is held,
    one driving kept ones (random gains, negative drives) moves the surface identically."""
    prefix, _, _ = _prefix_and_next(trace, "B", 0.9)
    base = _python_at(prefix)
    rng = np.random.default_rng(5)
    ids = np.sort(rng.choice(base.layout.vertex_ids, 60, replace=False))
    predictors = [
        predictor_message(Predictor(100 + k, ids, rng.integers(-4000, 4000, (len(ids), 3, 3)))) for k in range(20)
    ]
    seq = 60_000
    snapshots = []
    for drives in ([(102, [5, -7, 9])], [(119, [-33, 12, -1]), (110, [400, -250, 3])], [(104, [1, 1, 1])]):
        seq += 1
        header = bytearray([SNAPSHOT_VERSION])
        write_varint(header, seq)
        header += struct.pack("<d", 2.0)
        write_varint(header, base.epoch)
        write_varint(header, 1)
        record = drive_record([(pid, np.array(d)) for pid, d in drives])
        snapshots.append(snapshot_message(bytes(header) + record))
    candidates = predictors + snapshots
    expected = []
    decoder = copy.deepcopy(base)
    for candidate in candidates:
        expected.append((feed(decoder, candidate), decoder_state(decoder)))
    assert [o for o, _ in expected[20:]] == [["held"], ["applied", [60_002]], ["applied", [60_003]]]
    assert expected[19][1]["predictors"][-16:] == list(range(104, 120))
    results = run(
        harness,
        "(h, a) => h.sequence(a.prefix, a.candidates)",
        {"prefix": [b64(m) for m in prefix], "candidates": [b64(m) for m in candidates]},
    )
    for i, ((outcome, state), js) in enumerate(zip(expected, results, strict=True)):
        assert verdict(js["outcome"]) == outcome, f"message {i}: JS {js['outcome']} != Python {outcome}"
        assert_same_state(js["state"], state, f"message {i}")
