"""The msgpack message envelope: validation both ways, and a decoder that only ever raises MessageError."""

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netcode.messaging.messages import DEFAULT_REGISTRY, SCHEMA_VERSION, Field, Message, MessageError, MessageRegistry


def registry() -> MessageRegistry:
    reg = DEFAULT_REGISTRY.copy()
    reg.register(
        "pose",
        Field("id", "int"),
        Field("position", "list", max_length=3, items="float"),
        Field("label", "str", required=False, max_length=8),
        Field("blob", "bytes", required=False),
        Field("grip", "bool", required=False),
    )
    return reg


def test_round_trip_and_envelope_layout():
    reg = registry()
    data = reg.encode("pose", {"id": 3, "position": [1, 2.5, -3.0], "label": "left"})
    assert msgpack.unpackb(data) == {
        "v": SCHEMA_VERSION,
        "t": "pose",
        "id": 3,
        "position": [1.0, 2.5, -3.0],
        "label": "left",
    }
    assert reg.decode(data) == Message("pose", {"id": 3, "position": [1.0, 2.5, -3.0], "label": "left"})
    assert reg.decode(reg.encode(Message("disconnect", {"reason": "bye"}))).fields == {"reason": "bye"}


def test_extending_a_copy_leaves_the_default_registry_alone():
    assert "pose" in registry() and "pose" not in DEFAULT_REGISTRY
    with pytest.raises(ValueError, match="already registered"):
        registry().register("ping", Field("x", "int"))


@pytest.mark.parametrize(
    ("obj", "text"),
    [
        ({"v": 2, "t": "pose", "id": 1, "position": []}, "unsupported schema version 2"),
        ({"v": 1.0, "t": "pose", "id": 1, "position": []}, "unsupported schema version"),
        ({"t": "pose", "id": 1, "position": []}, "unsupported schema version None"),
        ({"v": 1, "t": "nope"}, "unknown message type 'nope'"),
        ({"v": 1, "t": 5}, "message type 't' missing"),
        ({"v": 1, "t": "pose", "position": []}, "missing required field 'id'"),
        ({"v": 1, "t": "pose", "id": "1", "position": []}, "pose.id: expected int, got str"),
        ({"v": 1, "t": "pose", "id": True, "position": []}, "pose.id: expected int, got bool"),
        ({"v": 1, "t": "pose", "id": 1, "position": [1, 2, 3, 4]}, "length 4 exceeds 3"),
        ({"v": 1, "t": "pose", "id": 1, "position": ["a"]}, r"pose.position\[0\]: expected float"),
        ({"v": 1, "t": "pose", "id": 1, "position": [], "label": "x" * 9}, "length 9 exceeds 8"),
        ({"v": 1, "t": "pose", "id": 1, "position": [], "extra": 1}, "unknown field 'extra'"),
        ([1, 2], "must be a msgpack map"),
    ],
)
def test_decode_rejects_with_a_clear_text(obj, text):
    with pytest.raises(MessageError, match=text):
        registry().decode(msgpack.packb(obj))


def test_decode_rejects_malformed_ext_trailing_and_oversized_input():
    reg = registry()
    good = reg.encode("ping", {"time": 1.0})
    with pytest.raises(MessageError, match="malformed msgpack"):
        reg.decode(good[:-1])
    with pytest.raises(MessageError, match="malformed msgpack"):
        reg.decode(good + b"\x00")
    with pytest.raises(MessageError, match="extension type 5"):
        reg.decode(msgpack.packb(msgpack.ExtType(5, b"x")))
    with pytest.raises(MessageError, match="exceeds"):
        MessageRegistry(max_encoded_size=10).decode(bytes(11))
    with pytest.raises(MessageError, match="expected float"):
        reg.decode(msgpack.packb({"v": 1, "t": "ping", "time": float("nan")}))


def test_encode_validates_too():
    with pytest.raises(MessageError, match="expected str"):
        registry().encode("disconnect", {"reason": 5})
    with pytest.raises(MessageError, match="encoded size"):
        small = MessageRegistry(max_encoded_size=20)
        small.register("blob", Field("data", "bytes"))
        small.encode("blob", {"data": bytes(100)})


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_never_raises_anything_else_on_random_bytes(data):
    with contextlib.suppress(MessageError):
        registry().decode(data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["pose", "ping", "disconnect", "nope", 7]),
    st.dictionaries(
        st.sampled_from(["id", "position", "label", "blob", "grip", "time", "reason", "v", "x"]), msgpack_values
    ),
    st.data(),
)
def test_decoder_never_raises_anything_else_on_mutated_messages(type_name, fields, data):
    raw = msgpack.packb({"v": 1, "t": type_name, **fields}, use_bin_type=True)
    if raw and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:index] + bytes([data.draw(st.integers(0, 255))]) + raw[index + 1 :]
    try:
        message = registry().decode(raw)
    except MessageError:
        return
    assert message.type in ("pose", "ping", "disconnect")


def test_encode_writes_what_packb_writes_from_any_thread():
    """encode reuses one msgpack Packer per thread: the bytes are packb's, also after a failed pack."""
    import threading

    reg = registry()
    fields = {"id": 3, "position": [1.0, 2.5, -3.0], "label": "left", "blob": bytes(300), "grip": True}
    expected = msgpack.packb({"v": SCHEMA_VERSION, "t": "pose", **fields}, use_bin_type=True)
    assert reg.encode("pose", fields) == expected
    reg.register("anything", Field("x", "any"))
    with pytest.raises(OverflowError):
        reg.encode("anything", {"x": [1 << 70]})  # plain, but beyond msgpack's integers
    assert reg.encode("pose", fields) == expected
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.extend(reg.encode("pose", fields) for _ in range(200)))]
    threads += [threading.Thread(target=lambda: results.extend(reg.encode("ping", {"time": 1.5}) for _ in range(200)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ping = msgpack.packb({"v": SCHEMA_VERSION, "t": "ping", "time": 1.5}, use_bin_type=True)
    assert sorted(set(results)) == sorted({expected, ping}) and len(results) == 400


def test_min_length_bounds_sized_fields_from_below():
    from netcode.messaging.messages import Field, MessageError, MessageRegistry

    registry = MessageRegistry()
    registry.register("v", Field("xyz", "list", items="float", min_length=3, max_length=3))
    assert registry.validate("v", {"xyz": [1, 2.5, 3]}) == {"xyz": [1.0, 2.5, 3.0]}
    for bad in ([1.0, 2.0], [1.0, 2.0, 3.0, 4.0], [1.0, float("inf"), 2.0]):
        try:
            registry.validate("v", {"xyz": bad})
        except MessageError:
            continue
        raise AssertionError(f"{bad} accepted")
    for spec in ({"kind": "int", "min_length": 1}, {"kind": "str", "min_length": 5, "max_length": 2}):
        try:
            Field("f", **spec)
        except ValueError:
            continue
        raise AssertionError(f"{spec} accepted")
