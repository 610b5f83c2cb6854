"""16-bit sequence numbers that wrap around, and a ring buffer keyed by them.

Packet sequences, reliable message ids and unreliable message sequences are all 16-bit on the wire (two
bytes per number instead of four or eight). They wrap from 65535 back to 0, so "newer than" is decided
on the circle: ``a`` is newer than ``b`` when going forward from ``b`` reaches ``a`` in less than half
the circle (RFC 1982 serial number arithmetic, as in Glenn Fiedler's reliable.io). That is correct as
long as the two numbers compared are never more than 32767 apart, which every window in this package
guarantees (windows are at most a few thousand).

``SequenceBuffer`` is a fixed-size ring of ``size`` slots indexed by ``sequence % size``; each slot
remembers which sequence it holds, so a lookup for an old sequence that has since been overwritten by a
newer one reports "absent" rather than returning the wrong entry. Memory is fixed at construction.
"""

from __future__ import annotations

from typing import Generic, TypeVar

SEQUENCE_MODULO = 1 << 16
SEQUENCE_MASK = SEQUENCE_MODULO - 1
_HALF = 1 << 15

T = TypeVar("T")


def sequence_greater_than(a: int, b: int) -> bool:
    """True when 16-bit sequence ``a`` is newer than ``b`` (taking wrap-around into account)."""
    return ((a > b) and (a - b <= _HALF)) or ((a < b) and (b - a > _HALF))


def sequence_less_than(a: int, b: int) -> bool:
    """True when 16-bit sequence ``a`` is older than ``b``."""
    return sequence_greater_than(b, a)


def sequence_difference(a: int, b: int) -> int:
    """Signed distance ``a - b`` on the 16-bit circle, in [-32768, 32767] (positive: ``a`` is newer)."""
    return ((a - b + _HALF) & SEQUENCE_MASK) - _HALF


def sequence_add(a: int, n: int) -> int:
    """``a + n`` wrapped to 16 bits (``n`` may be negative)."""
    return (a + n) & SEQUENCE_MASK


class SequenceBuffer(Generic[T]):
    """Fixed-size ring of entries keyed by 16-bit sequence; newest-wins, old entries fall out.

    ``sequence`` is one past the newest sequence inserted so far. Inserting a sequence older than
    ``sequence - size`` is refused (it would overwrite a newer entry); inserting a newer one clears the
    slots it skips, so stale entries from a previous lap of the ring are never mistaken for fresh ones.
    """

    __slots__ = ("_entries", "_sequences", "_started", "sequence", "size")

    def __init__(self, size: int, initial_sequence: int = 0) -> None:
        if not 1 <= size <= _HALF // 2:
            raise ValueError(f"sequence buffer size must be in [1, {_HALF // 2}], got {size}")
        self.size = size
        self._entries: list[T | None] = [None] * size
        self._sequences: list[int] = [-1] * size  # -1: empty slot
        self.sequence = initial_sequence & SEQUENCE_MASK
        self._started = False

    def reset(self, initial_sequence: int = 0) -> None:
        """Forget every entry."""
        self._entries = [None] * self.size
        self._sequences = [-1] * self.size
        self.sequence = initial_sequence & SEQUENCE_MASK
        self._started = False

    def is_too_old(self, sequence: int) -> bool:
        """True when ``sequence`` is older than anything the ring can still hold."""
        if not self._started:
            return False
        # sequence_less_than(sequence, sequence_add(self.sequence, -self.size)), inlined: it runs for every packet
        oldest = (self.sequence - self.size) & SEQUENCE_MASK
        return (oldest > sequence and oldest - sequence <= _HALF) or (oldest < sequence and sequence - oldest > _HALF)

    def insert(self, sequence: int, value: T) -> bool:
        """Store ``value`` under ``sequence``; returns False (and stores nothing) if it is too old."""
        sequence &= SEQUENCE_MASK
        if sequence == self.sequence:
            # The next sequence (nearly every insert): nothing to clear and never too old.
            self._started = True
            index = sequence % self.size
            self._entries[index] = value
            self._sequences[index] = sequence
            self.sequence = (sequence + 1) & SEQUENCE_MASK
            return True
        if not self._started:
            self._started = True
            self.sequence = sequence
        elif self.is_too_old(sequence):
            return False
        if sequence_greater_than(sequence_add(sequence, 1), self.sequence):
            self._clear_range(self.sequence, sequence)
            self.sequence = sequence_add(sequence, 1)
        index = sequence % self.size
        self._entries[index] = value
        self._sequences[index] = sequence
        return True

    def _clear_range(self, start: int, end: int) -> None:
        """Empty the slots of sequences in [start, end) (the ones an insert skips over)."""
        count = sequence_difference(end, start)
        if count >= self.size:
            self._entries = [None] * self.size
            self._sequences = [-1] * self.size
            return
        for offset in range(count):
            index = (start + offset) % self.size
            self._entries[index] = None
            self._sequences[index] = -1

    def get(self, sequence: int) -> T | None:
        """The entry stored under ``sequence``, or None if absent or overwritten."""
        index = sequence % self.size
        if self._sequences[index] == sequence:
            return self._entries[index]
        return None

    def exists(self, sequence: int) -> bool:
        """True when an entry for exactly ``sequence`` is held."""
        return self._sequences[sequence % self.size] == sequence

    def remove(self, sequence: int) -> T | None:
        """Remove and return the entry for ``sequence`` (None if absent)."""
        index = sequence % self.size
        if self._sequences[index] != sequence:
            return None
        value = self._entries[index]
        self._entries[index] = None
        self._sequences[index] = -1
        return value

    def __len__(self) -> int:
        return sum(1 for s in self._sequences if s >= 0)
