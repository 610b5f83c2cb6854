"""The two message channels (reliable-ordered, unreliable) and the packet writer that fills packets.

After the 9-byte packet header (see ``acks.py``) a packet holds zero or more *entries*, back to back::

    u8  flags        bit 0: channel (0 = reliable-ordered, 1 = unreliable); bit 1: body is a fragment;
                     bits 2-7: zero
    u16 sequence     reliable: the entry's reliable id; unreliable: the message's sequence
    u16 length       body length in bytes
    ...              body: a whole message, or a fragment body (see ``fragments.py``)

**Reliable-ordered.** Every entry (a whole message, or one fragment of a large one) gets the next
16-bit reliable id and stays in a bounded send queue until a packet carrying it is acked; it is
(re)sent whenever it has not been sent within the resend delay (derived from RTT by the connection).
The receiver buffers entries within a window ahead of the next id it expects, drops anything already
delivered or beyond the window, and delivers strictly in id order, so every message arrives exactly
once and in order. The send queue is bounded by entries (the receive window) and bytes; when it is
full ``send`` raises ``BacklogFull`` and the caller throttles or disconnects. A fragmented message takes
consecutive ids; its fragments carry ``message_id`` = the id of its first fragment.

**Unreliable.** Each message gets the next 16-bit unreliable sequence (all fragments of a message share
it, and ``message_id`` = that sequence). It is sent once; the receiver delivers a message only if its
sequence is newer than the last one delivered (latest wins: stale and duplicate ones are dropped).
Unsent unreliable entries wait in a bounded queue that drops the oldest on overflow.
"""

from __future__ import annotations

import math
import struct
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from netcode.messaging.fragments import (
    DEFAULT_FRAGMENT_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    MessageTooLarge,
    Reassembler,
    split_message,
)
from netcode.messaging.sequence import sequence_add, sequence_difference, sequence_greater_than

ENTRY_HEADER = struct.Struct("<BHH")
ENTRY_HEADER_SIZE = ENTRY_HEADER.size  # 5 bytes
FLAG_UNRELIABLE = 0x01
FLAG_FRAGMENT = 0x02
_FLAGS_RESERVED = 0xFF & ~(FLAG_UNRELIABLE | FLAG_FRAGMENT)


class Channel(IntEnum):
    """Which channel a message travels on."""

    RELIABLE = 0
    UNRELIABLE = 1


class BacklogFull(Exception):  # noqa: N818 (name chosen by the design brief)
    """The reliable send queue is full: the peer is not acking fast enough. Throttle, then disconnect."""

    def __init__(self, queued_entries: int, queued_bytes: int, needed_entries: int) -> None:
        super().__init__(
            f"reliable backlog full: {queued_entries} entries / {queued_bytes} bytes unacked, "
            f"cannot queue {needed_entries} more"
        )
        self.queued_entries = queued_entries
        self.queued_bytes = queued_bytes
        self.needed_entries = needed_entries


class Entry(NamedTuple):
    """One parsed entry of a packet."""

    channel: Channel
    fragment: bool
    sequence: int
    body: bytes


def encode_entry(channel: Channel, fragment: bool, sequence: int, body: bytes) -> bytes:
    """The wire form of one entry (5-byte header + body)."""
    flags = int(channel) | (FLAG_FRAGMENT if fragment else 0)
    return ENTRY_HEADER.pack(flags, sequence & 0xFFFF, len(body)) + body


def parse_entries(data: bytes, offset: int) -> tuple[list[Entry], str | None]:
    """Parse all entries from ``offset`` to the end; ([], reason) if any is malformed. Never raises."""
    entries: list[Entry] = []
    end = len(data)
    unpack = ENTRY_HEADER.unpack_from
    as_bytes = isinstance(data, bytes)  # a slice of bytes is already bytes
    while offset < end:
        if end - offset < ENTRY_HEADER_SIZE:
            return [], "entry_truncated"
        flags, sequence, length = unpack(data, offset)
        if flags & _FLAGS_RESERVED:
            return [], "entry_bad_flags"
        offset += ENTRY_HEADER_SIZE
        if length > end - offset:
            return [], "entry_truncated"
        body = data[offset : offset + length] if as_bytes else bytes(data[offset : offset + length])
        channel = Channel.UNRELIABLE if flags & FLAG_UNRELIABLE else Channel.RELIABLE
        entries.append(Entry(channel, (flags & FLAG_FRAGMENT) != 0, sequence, body))
        offset += length
    return entries, None


def _bodies(
    data: bytes, message_id: int, single_limit: int, fragment_size: int, max_size: int
) -> list[tuple[bool, bytes]]:
    """Whole message if it fits one entry, else its fragment bodies; raises MessageTooLarge."""
    if len(data) > max_size:
        raise MessageTooLarge(len(data), max_size)
    if len(data) <= single_limit:
        return [(False, bytes(data))]
    return [(True, body) for body in split_message(data, message_id, fragment_size, max_size)]


# ------------------------------------------------------------------------------------------ reliable


@dataclass(slots=True)
class _Outgoing:
    wire: bytes
    first_sent: float | None = None
    last_sent: float = -math.inf


class ReliableSender:
    """Bounded queue of reliable entries, each resent until a packet carrying it is acked."""

    def __init__(
        self,
        *,
        window: int = 512,
        max_queued_bytes: int = 1 << 20,
        single_limit: int = DEFAULT_FRAGMENT_SIZE,
        fragment_size: int = DEFAULT_FRAGMENT_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        initial_id: int = 0,
    ) -> None:
        self.window = window
        self.max_queued_bytes = max_queued_bytes
        self.single_limit = single_limit
        self.fragment_size = fragment_size
        self.max_message_size = max_message_size
        self.next_id = initial_id & 0xFFFF
        self._entries: dict[int, _Outgoing] = {}  # insertion order == id order
        self.queued_bytes = 0
        self.messages_sent = 0
        self.entries_resent = 0

    @property
    def queued(self) -> int:
        """Unacked entries in the queue."""
        return len(self._entries)

    @property
    def oldest_id(self) -> int:
        return next(iter(self._entries)) if self._entries else self.next_id

    def oldest_first_sent(self) -> float | None:
        """When the oldest unacked entry was first sent (None if the queue is empty or it is unsent)."""
        for entry in self._entries.values():
            return entry.first_sent
        return None

    def send(self, data: bytes) -> None:
        """Queue a message; raises ``MessageTooLarge`` or ``BacklogFull`` (then nothing is queued)."""
        bodies = _bodies(data, self.next_id, self.single_limit, self.fragment_size, self.max_message_size)
        wires = [
            encode_entry(Channel.RELIABLE, frag, sequence_add(self.next_id, i), b) for i, (frag, b) in enumerate(bodies)
        ]
        need_bytes = sum(len(w) for w in wires)
        span = sequence_difference(sequence_add(self.next_id, len(wires)), self.oldest_id)
        if span > self.window or self.queued_bytes + need_bytes > self.max_queued_bytes:
            raise BacklogFull(len(self._entries), self.queued_bytes, len(wires))
        for wire in wires:
            self._entries[self.next_id] = _Outgoing(wire)
            self.next_id = sequence_add(self.next_id, 1)
        self.queued_bytes += need_bytes
        self.messages_sent += 1

    def due(self, now: float, resend_delay: float) -> list[tuple[int, bytes]]:
        """Entries never sent, or not sent within ``resend_delay``, oldest first."""
        limit = now - resend_delay
        return [(i, e.wire) for i, e in self._entries.items() if e.last_sent <= limit]

    def mark_sent(self, entry_id: int, now: float) -> None:
        entry = self._entries.get(entry_id)
        if entry is None:
            return
        if entry.first_sent is None:
            entry.first_sent = now
        else:
            self.entries_resent += 1
        entry.last_sent = now

    def on_acked(self, entry_ids: Iterable[int]) -> None:
        """Retire entries carried by a packet the peer acked."""
        for entry_id in entry_ids:
            entry = self._entries.pop(entry_id, None)
            if entry is not None:
                self.queued_bytes -= len(entry.wire)


class ReliableReceiver:
    """Buffers reliable entries within the window and delivers whole messages in id order, once."""

    def __init__(
        self, *, window: int = 512, reassembler: Reassembler, drops: Counter[str], initial_id: int = 0
    ) -> None:
        self.window = window
        self.reassembler = reassembler
        self.drops = drops
        self.next_expected = initial_id & 0xFFFF
        self._buffer: dict[int, tuple[bool, bytes]] = {}
        self.buffered_bytes = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def on_entry(self, entry_id: int, fragment: bool, body: bytes) -> None:
        distance = sequence_difference(entry_id, self.next_expected)
        if distance < 0 or entry_id in self._buffer:
            self.drops["reliable_already_received"] += 1
        elif distance >= self.window:
            self.drops["reliable_out_of_window"] += 1
        else:
            self._buffer[entry_id] = (fragment, body)
            self.buffered_bytes += len(body)

    def deliver(self, now: float) -> list[bytes]:
        """Whole messages that are now deliverable, in order."""
        out: list[bytes] = []
        buffer = self._buffer
        while self.next_expected in buffer:
            fragment, body = buffer.pop(self.next_expected)
            self.buffered_bytes -= len(body)
            self.next_expected = sequence_add(self.next_expected, 1)
            if not fragment:
                out.append(body)
                continue
            complete = self.reassembler.add(body, now)
            if complete is not None:
                out.append(complete[1])
        return out


# ---------------------------------------------------------------------------------------- unreliable


class UnreliableSender:
    """Sequences unreliable messages and holds unsent entries in a bounded, drop-oldest queue."""

    def __init__(
        self,
        *,
        max_queued: int = 256,
        max_queued_bytes: int = 512 * 1024,
        single_limit: int = DEFAULT_FRAGMENT_SIZE,
        fragment_size: int = DEFAULT_FRAGMENT_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        drops: Counter[str] | None = None,
    ) -> None:
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.single_limit = single_limit
        self.fragment_size = fragment_size
        self.max_message_size = max_message_size
        self.drops: Counter[str] = drops if drops is not None else Counter()
        self.next_sequence = 0
        self._queue: deque[bytes] = deque()
        self.queued_bytes = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def send(self, data: bytes) -> None:
        """Queue a message (raises ``MessageTooLarge``); the oldest queued entries go if over the limits."""
        sequence = self.next_sequence
        size = len(data)
        if size <= self.single_limit and size <= self.max_message_size:
            # One whole entry (nearly every message): encode_entry's bytes without the list of bodies.
            wire = ENTRY_HEADER.pack(FLAG_UNRELIABLE, sequence, size) + data
            self.next_sequence = (sequence + 1) & 0xFFFF
            self._queue.append(wire)
            self.queued_bytes += len(wire)
        else:
            bodies = _bodies(data, sequence, self.single_limit, self.fragment_size, self.max_message_size)
            self.next_sequence = sequence_add(sequence, 1)
            for fragment, body in bodies:
                wire = encode_entry(Channel.UNRELIABLE, fragment, sequence, body)
                self._queue.append(wire)
                self.queued_bytes += len(wire)
        while len(self._queue) > self.max_queued or self.queued_bytes > self.max_queued_bytes:
            self.queued_bytes -= len(self._queue.popleft())
            self.drops["unreliable_send_overflow"] += 1

    def peek(self) -> bytes | None:
        return self._queue[0] if self._queue else None

    def pop(self) -> bytes:
        wire = self._queue.popleft()
        self.queued_bytes -= len(wire)
        return wire

    def pop_all(self) -> bytes:
        """Every queued entry, in order, as one string of entries (the queue is then empty)."""
        wires = b"".join(self._queue)
        self._queue.clear()
        self.queued_bytes = 0
        return wires


class UnreliableReceiver:
    """Delivers unreliable messages newer than the last delivered one (latest wins)."""

    def __init__(self, *, reassembler: Reassembler, drops: Counter[str]) -> None:
        self.reassembler = reassembler
        self.drops = drops
        self.last_delivered: int | None = None

    def _is_stale(self, sequence: int) -> bool:
        last = self.last_delivered
        if last is None or sequence_greater_than(sequence, last):
            return False
        self.drops["unreliable_duplicate" if sequence == last else "unreliable_stale"] += 1
        return True

    def on_entry(self, sequence: int, fragment: bool, body: bytes, now: float) -> bytes | None:
        """The message to deliver for this entry, or None (stale, duplicate, incomplete or bad)."""
        if self._is_stale(sequence):
            return None
        if fragment:
            parsed = self.reassembler.parse(body)
            if parsed is None:
                return None
            message_id, fragment_id, count, data = parsed
            if message_id != sequence:
                self.drops["fragment_bad_message_id"] += 1
                return None
            complete = self.reassembler.add_parsed(message_id, fragment_id, count, data, now=now)
            if complete is None:
                return None
            body = complete[1]
        self.last_delivered = sequence
        if self.reassembler.pending:
            for message_id in self.reassembler.pending_ids():
                if not sequence_greater_than(message_id, sequence):
                    self.reassembler.discard(message_id)
                    self.drops["reassembly_superseded"] += 1
        return body


# -------------------------------------------------------------------------------------------- writer


class PacketWriter:
    """Packs due reliable entries, then queued unreliable ones, into packets under a byte budget.

    Returns the entry bytes of each packet (without the packet header, which the connection writes once
    it knows the packet is going out) and the reliable ids it carries. Every packet, header included,
    is at most ``max_packet_size`` bytes, all packets together at most ``budget`` bytes, and there are
    at most ``max_packets`` of them. Packing is next-fit in queue order (oldest reliable entry first).
    """

    def __init__(self, max_packet_size: int = 1200, header_size: int = 9) -> None:
        self.max_packet_size = max_packet_size
        self.header_size = header_size

    def build(
        self,
        reliable: ReliableSender,
        unreliable: UnreliableSender,
        now: float,
        resend_delay: float,
        budget: int | None = None,
        max_packets: int | None = None,
    ) -> list[tuple[bytes, list[int]]]:
        """Entries of each packet to send, and the reliable ids each one carries."""
        packet_limit = math.inf if max_packets is None else max_packets
        if packet_limit <= 0:
            return []
        remaining = math.inf if budget is None else budget
        if not reliable.queued and unreliable.queued and unreliable.queued_bytes <= self._room(remaining):
            return [(unreliable.pop_all(), [])]  # the usual tick: a few unreliable entries, all in one packet
        packets: list[tuple[bytes, list[int]]] = []
        parts: list[bytes] = []
        ids: list[int] = []
        used = 0

        def capacity() -> float:
            return self._room(remaining)

        room = capacity()

        def fits(size: int) -> bool:
            nonlocal parts, ids, used, remaining, room
            if used + size <= room:
                return True
            if parts:
                if len(packets) + 1 >= packet_limit:
                    return False
                packets.append((b"".join(parts), ids))
                remaining -= self.header_size + used
                parts, ids, used = [], [], 0
                room = capacity()
            return size <= room

        for entry_id, wire in reliable.due(now, resend_delay):
            if not fits(len(wire)):
                break
            parts.append(wire)
            ids.append(entry_id)
            used += len(wire)
            reliable.mark_sent(entry_id, now)
        while (wire := unreliable.peek()) is not None:
            if not fits(len(wire)):
                break
            parts.append(unreliable.pop())
            used += len(wire)
        if parts:
            packets.append((b"".join(parts), ids))
        return packets

    def _room(self, remaining: float) -> float:
        """Entry bytes the next packet can hold with ``remaining`` bytes of budget left."""
        return min(self.max_packet_size, remaining) - self.header_size
