"""The message envelope and schema: msgpack maps with a schema version and a type, validated both ways.

Every channel message is one msgpack map::

    {"v": 1, "t": "<type name>", <field>: <value>, ...}

``v`` is the schema version (``SCHEMA_VERSION``), ``t`` names a registered message type, and the other
keys are that type's fields. A ``MessageRegistry`` holds the types; later code (the rehearsal server)
copies ``DEFAULT_REGISTRY`` and registers its own. ``encode`` refuses a message that does not match its
schema, and ``decode`` validates everything it reads: wrong version, unknown type, missing, unknown or
wrongly typed fields, oversized input or strings, malformed msgpack, extension types or trailing bytes
all raise ``MessageError`` with a readable text, and nothing else ever escapes ``decode`` whatever the
input bytes. See MESSAGES.md for the wire format.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

SCHEMA_VERSION = 1
DEFAULT_MAX_ENCODED_SIZE = 256 * 1024
MAX_DEPTH = 16
RESERVED_KEYS = frozenset({"v", "t"})
KINDS = ("int", "float", "str", "bytes", "bool", "list", "map", "any")
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1


class MessageError(ValueError):
    """A message could not be encoded or decoded; the text says why."""


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a message type.

    ``kind`` is one of ``KINDS``; ``max_length`` bounds str (characters), bytes (bytes), list (items)
    and map (entries), ``min_length`` from below (e.g. a 3-vector: a float list of exactly 3);
    ``items`` gives the kind of every list item (scalar kinds only); an optional field may be absent or nil.
    """

    name: str
    kind: str
    required: bool = True
    max_length: int | None = None
    items: str | None = None
    min_length: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: unknown kind {self.kind!r} (one of {KINDS})")
        if self.items is not None and (self.kind != "list" or self.items not in KINDS):
            raise ValueError(f"field {self.name!r}: items= needs kind 'list' and a kind from {KINDS}")
        if self.name in RESERVED_KEYS:
            raise ValueError(f"field name {self.name!r} is reserved for the envelope")
        if self.min_length is not None and (
            self.kind not in ("str", "bytes", "list", "map")
            or self.min_length < 0
            or (self.max_length is not None and self.min_length > self.max_length)
        ):
            raise ValueError(f"field {self.name!r}: min_length needs a sized kind and must not exceed max_length")


@dataclass(frozen=True, slots=True)
class MessageType:
    """A named message type and its fields."""

    name: str
    fields: tuple[Field, ...]
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded (or to-be-encoded) message: its type name and field values."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)


def _is_plain(value: Any, depth: int) -> bool:
    """True when ``value`` is made only of msgpack's plain types, nested at most MAX_DEPTH deep."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return True
    if depth >= MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _check_int(value: Any) -> tuple[bool, Any]:
    return (isinstance(value, int) and not isinstance(value, bool) and _INT_MIN <= value <= _INT_MAX), value


def _check_float(value: Any) -> tuple[bool, Any]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False, value
    value = float(value)
    return math.isfinite(value), value


def _check_str(value: Any) -> tuple[bool, Any]:
    return isinstance(value, str), value


def _check_bytes(value: Any) -> tuple[bool, Any]:
    return isinstance(value, bytes), value


def _check_bool(value: Any) -> tuple[bool, Any]:
    return isinstance(value, bool), value


def _check_list(value: Any) -> tuple[bool, Any]:
    return isinstance(value, list) and _is_plain(value, 1), value


def _check_map(value: Any) -> tuple[bool, Any]:
    return isinstance(value, dict) and _is_plain(value, 1), value


def _check_any(value: Any) -> tuple[bool, Any]:
    return _is_plain(value, 1), value


Check = Callable[[Any], tuple[bool, Any]]
_CHECKS: dict[str, Check] = {
    "int": _check_int,
    "float": _check_float,
    "str": _check_str,
    "bytes": _check_bytes,
    "bool": _check_bool,
    "list": _check_list,
    "map": _check_map,
    "any": _check_any,
}


@dataclass(frozen=True, slots=True)
class _FieldCheck:
    """A field's validation, prepared once per type (``validate`` runs for every message both ways)."""

    spec: Field
    check: Check
    items: Check | None


def _compile(message_type: MessageType) -> tuple[frozenset[str], tuple[_FieldCheck, ...]]:
    checks = tuple(
        _FieldCheck(f, _CHECKS[f.kind], None if f.items is None else _CHECKS[f.items]) for f in message_type.fields
    )
    return frozenset(f.name for f in message_type.fields), checks


class _Packers(threading.local):
    """One msgpack Packer per thread: ``packb`` makes (and frees) a new one, with its buffer, on every call."""

    def __init__(self) -> None:
        self.packer = msgpack.Packer(use_bin_type=True)


_PACKERS = _Packers()


def _reject_ext(code: int, data: bytes) -> Any:
    raise MessageError(f"msgpack extension type {code} is not allowed")


class MessageRegistry:
    """The set of message types a peer understands; encodes and decodes with validation."""

    def __init__(self, max_encoded_size: int = DEFAULT_MAX_ENCODED_SIZE) -> None:
        self.max_encoded_size = max_encoded_size
        self._types: dict[str, MessageType] = {}
        self._checks: dict[str, tuple[frozenset[str], tuple[_FieldCheck, ...]]] = {}  # name -> (known, fields)

    def register(self, name: str, *fields: Field, doc: str = "") -> MessageType:
        """Add a message type; a name may be registered only once."""
        if not name or not isinstance(name, str):
            raise ValueError("message type name must be a non-empty string")
        if name in self._types:
            raise ValueError(f"message type {name!r} is already registered")
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"message type {name!r} has duplicate field names")
        message_type = MessageType(name, tuple(fields), doc)
        self._types[name] = message_type
        self._checks[name] = _compile(message_type)
        return message_type

    def copy(self) -> MessageRegistry:
        """An independent registry with the same types (to extend without touching this one)."""
        other = MessageRegistry(self.max_encoded_size)
        other._types = dict(self._types)
        other._checks = dict(self._checks)
        return other

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def types(self) -> list[MessageType]:
        return list(self._types.values())

    # ------------------------------------------------------------------ validation

    def validate(self, type_name: Any, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check field values against the type's schema; returns the normalised fields or raises MessageError."""
        compiled = self._checks.get(type_name) if isinstance(type_name, str) else None
        if compiled is None:
            raise MessageError(f"unknown message type {type_name!r}")
        known, checks = compiled
        for key in values:
            if key not in known:
                raise MessageError(f"{type_name}: unknown field {key!r}")
        out: dict[str, Any] = {}
        for field_check in checks:
            spec = field_check.spec
            value = values.get(spec.name)
            if value is None:
                if spec.required:
                    raise MessageError(f"{type_name}: missing required field {spec.name!r}")
                continue
            ok, value = field_check.check(value)
            if not ok:
                raise MessageError(f"{type_name}.{spec.name}: expected {spec.kind}, got {type(value).__name__}")
            if spec.max_length is not None and len(value) > spec.max_length:
                raise MessageError(f"{type_name}.{spec.name}: length {len(value)} exceeds {spec.max_length}")
            if spec.min_length is not None and len(value) < spec.min_length:
                raise MessageError(f"{type_name}.{spec.name}: length {len(value)} is under {spec.min_length}")
            items = field_check.items
            if items is not None:
                for index, item in enumerate(value):
                    item_ok, value[index] = items(item)
                    if not item_ok:
                        raise MessageError(f"{type_name}.{spec.name}[{index}]: expected {spec.items}")
            out[spec.name] = value
        return out

    # ------------------------------------------------------------------ encode / decode

    def encode(self, message: Message | str, fields: Mapping[str, Any] | None = None) -> bytes:
        """msgpack bytes for a message (``encode(Message(...))`` or ``encode("type", {...})``)."""
        if isinstance(message, Message):
            type_name, values = message.type, message.fields
        else:
            type_name, values = message, fields or {}
        checked = self.validate(type_name, values)
        data = _PACKERS.packer.pack({"v": SCHEMA_VERSION, "t": type_name, **checked})
        if len(data) > self.max_encoded_size:
            raise MessageError(f"{type_name}: encoded size {len(data)} exceeds {self.max_encoded_size} bytes")
        return data

    def decode(self, data: bytes) -> Message:
        """Parse and validate msgpack bytes; raises only ``MessageError``."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MessageError(f"expected bytes, got {type(data).__name__}")
        if len(data) > self.max_encoded_size:
            raise MessageError(f"message of {len(data)} bytes exceeds {self.max_encoded_size} bytes")
        try:
            obj = msgpack.unpackb(
                data,
                raw=False,
                use_list=True,
                strict_map_key=True,
                ext_hook=_reject_ext,
                timestamp=0,
            )
        except MessageError:
            raise
        except Exception as exc:  # msgpack raises several types (ValueError, UnicodeDecodeError, ExtraData...)
            raise MessageError(f"malformed msgpack: {type(exc).__name__}") from None
        if not isinstance(obj, dict):
            raise MessageError(f"message must be a msgpack map, got {type(obj).__name__}")
        version = obj.pop("v", None)
        if type(version) is not int or version != SCHEMA_VERSION:
            raise MessageError(f"unsupported schema version {version!r} (expected {SCHEMA_VERSION})")
        type_name = obj.pop("t", None)
        if not isinstance(type_name, str):
            raise MessageError("message type 't' missing or not a string")
        try:
            return Message(type_name, self.validate(type_name, obj))
        except MessageError:
            raise
        except Exception as exc:  # defensive: validation of hostile values must not escape as anything else
            raise MessageError(f"{type_name}: invalid fields ({type(exc).__name__})") from None


DEFAULT_REGISTRY = MessageRegistry()
DEFAULT_REGISTRY.register(
    "disconnect",
    Field("reason", "str", max_length=256),
    doc="Sent (reliable) before a peer closes the connection; the reason is for logs and the user.",
)
DEFAULT_REGISTRY.register(
    "ping",
    Field("time", "float"),
    doc="Application-level ping (unreliable); the peer answers with 'pong' echoing the time.",
)
DEFAULT_REGISTRY.register("pong", Field("time", "float"), doc="Answer to 'ping' (unreliable).")
