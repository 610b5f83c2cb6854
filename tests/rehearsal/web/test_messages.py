"""messages.js against netcode.messaging.messages.MessageRegistry, in real Chromium.

The JS registries hold exactly Python's types (rehearsal.wire.REHEARSAL_REGISTRY field for field); messages
Python encodes decode in JS to the same values and re-encode to the same bytes; messages JS encodes decode in
Python and re-encode to the same bytes; and malformed or invalid bytes are refused (MessageError) by both.
"""

from __future__ import annotations

import base64
import itertools
import json
import math

import msgpack
import pytest

from netcode.messaging.messages import DEFAULT_REGISTRY, MessageError
from netcode.sync.snapshot_messages import SNAPSHOT_REGISTRY
from rehearsal.wire import REHEARSAL_REGISTRY

HARNESS = "/tests/messages_harness.js"
REGISTRIES = {"DEFAULT_REGISTRY": DEFAULT_REGISTRY, "SNAPSHOT_REGISTRY": SNAPSHOT_REGISTRY}
REGISTRIES["REHEARSAL_REGISTRY"] = REHEARSAL_REGISTRY


def run(page, expression: str, arg=None):
    return page.evaluate(
        f"async (arg) => {{ const h = await import('{HARNESS}'); return ({expression})(h, arg); }}", arg
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def to_wire(value):
    """Python values as the harness's JSON (bytes, ints beyond 2^53 and -0.0 marked)."""
    if isinstance(value, bytes):
        return {"$bytes": b64(value)}
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53 - 1:
        return {"$int": str(value)}
    if isinstance(value, float) and value == 0 and math.copysign(1, value) < 0:
        return {"$neg0": True}
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value


def from_wire(value):
    """The harness's JSON back to Python values (the markers of to_wire, and {"$float": text})."""
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    if isinstance(value, dict):
        if "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        if "$int" in value:
            return int(value["$int"])
        if "$neg0" in value:
            return -0.0
        if "$float" in value:
            return float(value["$float"])
        return {k: from_wire(v) for k, v in value.items()}
    return value


def same(a, b) -> bool:
    """Equal values with equal types where JSON keeps them apart (-0.0 is not 0.0; an int may stand for the
    equal float: a page has one number type)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return (
        a == b and type(a) in (int, float, str, bytes, type(None)) and type(b) in (int, float, str, bytes, type(None))
    )


def decode_in_js(page, messages: list[bytes]) -> list[dict]:
    return json.loads(run(page, "(h, texts) => h.decodeAll(texts)", [b64(m) for m in messages]))


def schema_of(registry) -> list[dict]:
    return [
        {
            "name": t.name,
            "fields": [
                {"name": f.name, "kind": f.kind, "required": f.required, "max_length": f.max_length, "items": f.items}
                for f in t.fields
            ],
        }
        for t in registry.types()
    ]


INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**53 + 1, 2**63, 2**64 - 1]
INTS += [-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**53) - 1, -(2**63)]
FLOATS = [0.0, 1.5, -2.25, 1e300, 5e-324, 7, -0.0, 2.0**60, 0.1]
STRINGS = ["", "a", "ümlaut ☃ 😀", "x" * 31, "x" * 32, "é" * 255, "y" * 300, "z" * 70000]
BYTES = [b"", b"\x00", bytes(range(256)) * 1, b"\xff" * 255, b"q" * 1100, b"r" * 70000]
LISTS = [[], [1, "a", None, [2, -3.5, True], {"k": b"x", "n": -40000}], list(range(20))]
MAPS = [{}, {"a": 1, "b": [1.5, "x"], "c": {"d": None, "e": True, "f": b"\x01\x02"}}, {"hand": 32768, "z": 0.25}]


def _fits(spec, value) -> bool:
    return spec.max_length is None or len(value) <= spec.max_length


def sample_messages(registry) -> list[tuple[str, dict]]:
    """Several valid messages of every type, covering each kind's formats (sizes, signs, Unicode, nesting)."""
    pools = {"int": INTS, "float": FLOATS, "str": STRINGS, "bytes": BYTES, "bool": [True, False]}
    out = []
    for t in registry.types():
        candidates = {}
        for f in t.fields:
            if f.kind == "list":
                pool = (
                    [[0.5, -1.0, 2.0][: f.max_length or 3], [], [3.25] * min(f.max_length or 8, 8)]
                    if f.items
                    else LISTS
                )
            elif f.kind == "map":
                pool = MAPS
            else:
                pool = pools[f.kind]
            candidates[f.name] = [v for v in pool if f.kind in ("int", "float", "bool") or _fits(f, v)]
        rounds = max(len(v) for v in candidates.values()) if candidates else 1
        for i in range(rounds):
            fields = {}
            for j, f in enumerate(t.fields):
                if not f.required and i % 2 == 0:
                    continue
                pool = candidates[f.name]
                fields[f.name] = pool[(i + j) % len(pool)]  # the largest values in different rounds
            out.append((t.name, fields))
    return out


@pytest.mark.parametrize("name", sorted(REGISTRIES))
def test_js_registries_hold_pythons_types(harness, name):
    """Same types, same fields, same order, kinds, required flags, bounds and item kinds."""
    assert run(harness, "(h, n) => h.schema(n)", name) == schema_of(REGISTRIES[name])


def test_python_messages_decode_and_reencode_identically_in_js(harness):
    """Python-encoded messages of every type: JS decodes the same values and re-encodes the same bytes."""
    samples = sample_messages(REHEARSAL_REGISTRY)
    encoded = [REHEARSAL_REGISTRY.encode(t, f) for t, f in samples]
    results = decode_in_js(harness, encoded)
    for (type_name, _), data, result in zip(samples, encoded, results, strict=True):
        assert result["ok"], f"{type_name}: JS refused Python's message: {result}"
        assert result["type"] == type_name
        assert same(from_wire(result["fields"]), REHEARSAL_REGISTRY.decode(data).fields), type_name
        assert base64.b64decode(result["reencoded"]) == data, f"{type_name}: JS re-encoded other bytes"
    assert len(samples) > 60


def test_js_messages_decode_and_reencode_identically_in_python(harness):
    """JS-encoded messages of every type are Python's bytes exactly (float fields as float64 even when
    integer-valued, smallest int formats, str8/bin8, keys v, t, then the fields in schema order)."""
    samples = sample_messages(REHEARSAL_REGISTRY)
    items = [{"type": t, "fields": to_wire(f)} for t, f in samples]
    results = run(harness, "(h, items) => h.encodeAll(items)", items)
    for (type_name, fields), result in zip(samples, results, strict=True):
        assert result["ok"], f"{type_name}: JS refused to encode: {result}"
        data = base64.b64decode(result["bytes"])
        assert data == REHEARSAL_REGISTRY.encode(type_name, fields), f"{type_name}: bytes differ from Python's"
        message = REHEARSAL_REGISTRY.decode(data)
        assert message.type == type_name and message.fields == REHEARSAL_REGISTRY.validate(type_name, fields)


def test_registry_from_a_server_sent_schema(harness):
    """MessageRegistry.fromSchema(Python's schema) decodes and re-encodes like the built-in registry."""
    samples = sample_messages(REHEARSAL_REGISTRY)[::5]
    encoded = [REHEARSAL_REGISTRY.encode(t, f) for t, f in samples]
    arg = {"schema": schema_of(REHEARSAL_REGISTRY), "texts": [b64(m) for m in encoded]}
    results = run(harness, "(h, a) => h.decodeWithSchema(a.schema, a.texts)", arg)
    assert [r["type"] for r in results] == [t for t, _ in samples]
    assert [base64.b64decode(r["reencoded"]) for r in results] == encoded


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _nested(depth: int, leaf=1):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def malformed_messages() -> list[bytes]:
    """Bytes both decoders must refuse, and a few edge cases both must accept (judged by Python)."""
    ok = _pack({"v": 1, "t": "ping", "time": 1.0})
    event = {"v": 1, "t": "event", "kind": "x", "server_time": 0.5}
    out = [
        b"",
        ok[:-1],
        ok + b"\x00",
        b"\xc1",
        _pack([1, 2]),
        _pack({"v": 2, "t": "ping", "time": 1.0}),
        _pack({"v": 1.0, "t": "ping", "time": 1.0}),
        _pack({"v": True, "t": "ping", "time": 1.0}),
        _pack({"t": "ping", "time": 1.0}),
        _pack({"v": 1, "time": 1.0}),
        _pack({"v": 1, "t": b"ping", "time": 1.0}),
        _pack({"v": 1, "t": "nope"}),
        _pack({"v": 1, "t": "ping", "time": 1.0, "extra": 1}),
        _pack({"v": 1, "t": "ping"}),
        _pack({"v": 1, "t": "ping", "time": None}),
        _pack({"v": 1, "t": "ping", "time": True}),
        _pack({"v": 1, "t": "ping", "time": "1"}),
        _pack({"v": 1, "t": "ping", "time": 1}),  # an int for a float: accepted
        _pack({"v": 1, "t": "ping", "time": float("nan")}),
        _pack({"v": 1, "t": "ping", "time": float("inf")}),
        msgpack.packb({"v": 1, "t": "ping", "time": 1.5}, use_single_float=True),  # float32: accepted
        _pack({"v": 1, "t": "snap_ack", "newest": 1.0, "bits": 0}),
        _pack({"v": 1, "t": "snap_ack", "newest": True, "bits": 0}),
        _pack({"v": 1, "t": "snap_ack", "newest": 2**64 - 1, "bits": -(2**63)}),  # extremes: accepted
        _pack({"v": 1, "t": "snapshot", "data": "text"}),
        _pack({"v": 1, "t": "disconnect", "reason": b"bytes"}),
        _pack({"v": 1, "t": "disconnect", "reason": "é" * 256}),  # 256 code points: accepted
        _pack({"v": 1, "t": "disconnect", "reason": "é" * 257}),
        _pack({"v": 1, "t": "disconnect", "reason": "😀" * 200}),  # 400 UTF-16 units, 200 code points: accepted
        _pack({"v": 1, "t": "input", "p": b"x" * 1101}),
        _pack({**event, "detail": {"a": _nested(14)}}),  # containers at depth 15: accepted
        _pack({**event, "detail": {"a": _nested(15)}}),
        _pack({**event, "detail": {"a": _nested(300)}}),
        _pack({**event, "detail": {"k": 1, "__proto__": {"polluted": 1}}}),  # an ordinary key: accepted
        _pack(
            {
                "v": 1,
                "t": "welcome",
                **dict.fromkeys(("session", "scenario", "role", "name", "state"), "s"),
                "participant": 1,
                "hands": {"left": 1, "right": 2, "head": 3},
            }
        ),
        _pack(
            {
                "v": 1,
                "t": "welcome",
                **dict.fromkeys(("session", "scenario", "role", "name", "state"), "s"),
                "participant": 1,
                "annotations": [1] * 65,
            }
        ),
        _pack(
            {
                "v": 1,
                "t": "snap_config",
                "max_error": 1.0,
                "origin": [0.0, 1, "x"],
                "step": 1.0,
                "rotation_bits": 1,
                "jaw_lo": 0.0,
                "jaw_hi": 1.0,
                "jaw_bits": 1,
            }
        ),
        _pack(
            {
                "v": 1,
                "t": "snap_config",
                "max_error": 1.0,
                "origin": [0.0, 1, 2.5, 3.0],
                "step": 1.0,
                "rotation_bits": 1,
                "jaw_lo": 0.0,
                "jaw_hi": 1.0,
                "jaw_bits": 1,
            }
        ),
        _pack(
            {
                "v": 1,
                "t": "snap_config",
                "max_error": 1.0,
                "origin": [0.0, 1, 2.5],
                "step": 1.0,
                "rotation_bits": 1,
                "jaw_lo": 0.0,
                "jaw_hi": 1.0,
                "jaw_bits": 1,
            }
        ),
        b"\x83\xa1v\x01\xa1t\xa4ping\xa4time\xd4\x01\x00",  # fixext1
        b"\x83\xa1v\x01\xa1t\xa4ping\xa4time\xd6\xff\x00\x00\x00\x01",  # a timestamp
        b"\x83\xa1v\x01\xa1t\xa4ping\xa4time\xc7\x01\x05\x00",  # ext8
        b"\x83\xa1v\x01\xa1t\xa4ping\xa4time\xcb\x3f\xf0\x00\x00\x00\x00\x00",  # truncated float64
        b"\x83\xa1v\x01\xa1t\xa4ping\xa4tim\xff\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00",  # invalid UTF-8 in a key
        b"\x83\xa1v\x01\xa1t\xa4ping\x01\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00",  # an int key
        # a map short of entries
        b"\x85\xa1v\x01\xa1t\xa5event\xa4kind\xa1x\xabserver_time\xcb\x3f\xe0\x00\x00\x00\x00\x00\x00",
        b"\x83\xa1v\x01\xa1t\xa4ping\xa4time\xdd\xff\xff\xff\xff",  # an array claiming 2^32 items
        b"\xdf\xff\xff\xff\xff",
        _pack({"v": 1, "t": "input", "p": b"x" * (256 * 1024)}),  # larger than a message may be
    ]
    return out


def _python_verdict(data: bytes):
    try:
        return REHEARSAL_REGISTRY.decode(data)
    except MessageError:
        return None


def test_malformed_and_invalid_messages_are_refused_alike(harness):
    """Truncation, trailing bytes, reserved bytes, extension types, wrong versions, types, fields and kinds,
    length bounds in code points, nesting depth, non-string keys, bad UTF-8, impossible lengths, oversize:
    JS throws MessageError exactly where Python raises it, and decodes the rest to the same values."""
    cases = malformed_messages()
    results = decode_in_js(harness, cases)
    accepted = 0
    for i, (data, result) in enumerate(zip(cases, results, strict=True)):
        python = _python_verdict(data)
        if python is None:
            assert not result["ok"], f"case {i}: JS accepted what Python refuses: {result}"
            assert result["isMessageError"], f"case {i}: JS threw {result['name']}, not MessageError"
        else:
            accepted += 1
            assert result["ok"], f"case {i}: JS refused what Python accepts: {result['error']}"
            assert same(from_wire(result["fields"]), python.fields), f"case {i}"
    assert 8 <= accepted <= len(cases) - 30


def test_invalid_values_are_refused_by_js_encode(harness):
    """encodeMessage validates as Python's encode does: unknown types and fields, missing or wrongly typed
    fields, bounds, non-finite floats, lone surrogates, unsafe integers."""
    bad = [
        {"type": "nope", "fields": {}},
        {"type": "ping", "fields": {}},
        {"type": "ping", "fields": {"time": 1.0, "x": 1}},
        {"type": "ping", "fields": {"time": "1"}},
        {"type": "ping", "fields": {"time": True}},
        {"type": "snap_ack", "fields": {"newest": 1.5, "bits": 0}},
        {"type": "disconnect", "fields": {"reason": "x" * 257}},
        {"type": "snapshot", "fields": {"data": [1, 2]}},
        {"type": "input", "fields": {"p": {"$bytes": b64(b"x" * 1101)}}},
        {"type": "snap_ack", "fields": {"newest": {"$int": str(2**64)}, "bits": 0}},
    ]
    results = run(harness, "(h, items) => h.encodeAll(items)", bad)
    for item, result in zip(bad, results, strict=True):
        assert not result["ok"] and result["isMessageError"], f"{item}: {result}"
    extra = run(
        harness,
        """async (h) => {
            const m = await import('/static/js/messages.js');
            const out = [];
            for (const [type, fields] of [['disconnect', {reason: 'a\\ud800b'}], ['ping', {time: NaN}],
                                          ['ping', {time: Infinity}], ['snap_ack', {newest: 2 ** 60, bits: 0}]]) {
                try { m.encodeMessage(type, fields); out.push('encoded'); }
                catch (exc) { out.push(exc instanceof m.MessageError ? 'MessageError' : String(exc)); }
            }
            return out;
        }""",
    )
    assert extra == ["MessageError"] * 4


def test_every_int_format_boundary_round_trips(harness):
    """Each msgpack int format's edges, Python -> JS -> bytes: the same bytes (formats chosen as Python does)."""
    values = sorted(
        {s * (2**e + d) for e, d, s in itertools.product((5, 7, 8, 15, 16, 31, 32, 53, 63), (-1, 0, 1), (1, -1))}
    )
    values = [v for v in values if -(2**63) <= v <= 2**64 - 1]
    encoded = [
        REHEARSAL_REGISTRY.encode("snap_ack", {"newest": v, "bits": -v if -v >= -(2**63) else 0}) for v in values
    ]
    results = decode_in_js(harness, encoded)
    for v, data, result in zip(values, encoded, results, strict=True):
        assert result["ok"] and base64.b64decode(result["reencoded"]) == data, v
        assert from_wire(result["fields"]["newest"]) == v
