"""Splitting messages larger than one packet into fragments, and reassembling them safely.

A packet carries at most 1,200 bytes of payload, so a larger message (a mesh, a scene description) is
cut into fragments of ``fragment_size`` bytes (the last one shorter). Each fragment body is::

    u16 message_id       which message this fragment belongs to (per channel, see MESSAGES.md)
    u16 fragment_id      0 .. fragment_count-1
    u16 fragment_count   number of fragments of the message (>= 1)
    ...                  fragment data (1 .. max_fragment_data bytes)

little-endian. The sender refuses a message above ``max_message_size`` with ``MessageTooLarge`` before
anything is queued. The receiver never trusts the peer: a truncated header, a count of zero or above
what ``max_message_size`` allows, a fragment id out of range, a count that disagrees with earlier
fragments of the same message, a duplicate fragment, an empty or oversized fragment, or a message whose
total grows past the maximum is dropped with a counted reason and never raises. At most ``max_pending``
messages are in reassembly at once (the oldest is evicted to make room) and partial messages older
than ``timeout`` seconds are dropped, so a peer that sends first fragments only cannot grow our memory
beyond ``max_pending * max_message_size``.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

FRAGMENT_HEADER = struct.Struct("<HHH")
FRAGMENT_HEADER_SIZE = FRAGMENT_HEADER.size  # 6 bytes
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024
DEFAULT_FRAGMENT_SIZE = 1024


class MessageTooLarge(ValueError):  # noqa: N818 (name chosen by the design brief)
    """A message exceeds the configured maximum size; raised at the sender before anything is queued."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the maximum message size of {limit} bytes")
        self.size = size
        self.limit = limit


def fragment_count(size: int, fragment_size: int) -> int:
    """How many fragments a message of ``size`` bytes needs (at least one)."""
    return max(1, -(-size // fragment_size))


def split_message(
    data: bytes,
    message_id: int,
    fragment_size: int = DEFAULT_FRAGMENT_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> list[bytes]:
    """Fragment bodies (header + data) for ``data``; raises ``MessageTooLarge`` above the maximum."""
    if len(data) > max_message_size:
        raise MessageTooLarge(len(data), max_message_size)
    count = fragment_count(len(data), fragment_size)
    if count > 0xFFFF:
        raise MessageTooLarge(len(data), fragment_size * 0xFFFF)
    view = memoryview(data)
    return [
        FRAGMENT_HEADER.pack(message_id & 0xFFFF, index, count)
        + bytes(view[index * fragment_size : (index + 1) * fragment_size])
        for index in range(count)
    ]


@dataclass(slots=True)
class _Partial:
    count: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Collects fragment bodies into whole messages, bounded in count, size and time."""

    def __init__(
        self,
        *,
        fragment_size: int = DEFAULT_FRAGMENT_SIZE,
        max_fragment_data: int | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_pending: int = 4,
        timeout: float | None = 5.0,
        drops: Counter[str] | None = None,
    ) -> None:
        self.max_fragment_data = max_fragment_data if max_fragment_data is not None else fragment_size
        self.max_message_size = max_message_size
        self.max_count = fragment_count(max_message_size, fragment_size)
        self.max_pending = max_pending
        self.timeout = timeout
        self.drops: Counter[str] = drops if drops is not None else Counter()
        self._pending: dict[int, _Partial] = {}  # insertion order = age order

    @property
    def pending(self) -> int:
        """Messages currently in reassembly."""
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return sum(p.size for p in self._pending.values())

    def _drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def parse(self, body: bytes) -> tuple[int, int, int, bytes] | None:
        """Validate one fragment body on its own; (message_id, fragment_id, count, data) or None (dropped)."""
        if len(body) < FRAGMENT_HEADER_SIZE:
            self._drop("fragment_truncated")
            return None
        message_id, fragment_id, count = FRAGMENT_HEADER.unpack_from(body, 0)
        data = body[FRAGMENT_HEADER_SIZE:]
        if count == 0 or count > self.max_count:
            self._drop("fragment_bad_count")
            return None
        if fragment_id >= count:
            self._drop("fragment_out_of_range")
            return None
        if not data or len(data) > self.max_fragment_data:
            self._drop("fragment_bad_size")
            return None
        return message_id, fragment_id, count, bytes(data)

    def add(self, body: bytes, now: float) -> tuple[int, bytes] | None:
        """Take one fragment body; returns (message_id, message) when it completes a message, else None."""
        parsed = self.parse(body)
        if parsed is None:
            return None
        return self.add_parsed(*parsed, now=now)

    def add_parsed(
        self, message_id: int, fragment_id: int, count: int, data: bytes, now: float
    ) -> tuple[int, bytes] | None:
        """Like ``add`` for an already parsed and validated fragment."""
        self.expire(now)
        partial = self._pending.get(message_id)
        if partial is None:
            if count == 1:
                return message_id, data
            while len(self._pending) >= self.max_pending:
                oldest = next(iter(self._pending))
                del self._pending[oldest]
                self._drop("reassembly_evicted")
            partial = _Partial(count, now)
            self._pending[message_id] = partial
        elif partial.count != count:
            self._drop("fragment_inconsistent_count")
            return None
        if fragment_id in partial.parts:
            self._drop("fragment_duplicate")
            return None
        if partial.size + len(data) > self.max_message_size:
            del self._pending[message_id]
            self._drop("reassembly_too_large")
            return None
        partial.parts[fragment_id] = data
        partial.size += len(data)
        if len(partial.parts) < partial.count:
            return None
        del self._pending[message_id]
        parts = partial.parts
        return message_id, b"".join(parts[i] for i in range(partial.count))

    def pending_ids(self) -> list[int]:
        """Message ids currently in reassembly, oldest first."""
        return list(self._pending)

    def discard(self, message_id: int) -> None:
        """Forget a partial message (e.g. it became stale for its channel)."""
        self._pending.pop(message_id, None)

    def expire(self, now: float) -> None:
        """Drop partial messages older than the timeout."""
        if self.timeout is None or not self._pending:
            return
        limit = now - self.timeout
        for message_id in [m for m, p in self._pending.items() if p.started < limit]:
            del self._pending[message_id]
            self._drop("reassembly_timeout")
