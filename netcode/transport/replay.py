"""Replay protection window (netcode 1.02, 256 entries per connection).

Applied to keep-alive, payload and disconnect packets, on both client and server. A packet is rejected
before decryption if its sequence is older than the window (``sequence + 256 <= most recent``) or if the
slot for it already holds that sequence or a newer one. Only after the packet has decrypted (so an
attacker cannot poison the window with forged sequences) is the sequence recorded with ``advance``.

Same algorithm and state as the reference implementation: one slot per ``sequence % 256`` storing the
last sequence received there; a far-future sequence that authenticates moves the window forward.
"""

from netcode.transport.constants import REPLAY_PROTECTION_BUFFER_SIZE

_EMPTY = -1


class ReplayProtection:
    """Per-connection record of recently received packet sequence numbers."""

    __slots__ = ("_received", "most_recent_sequence")

    def __init__(self) -> None:
        self.most_recent_sequence = 0
        self._received = [_EMPTY] * REPLAY_PROTECTION_BUFFER_SIZE

    def reset(self) -> None:
        """Forget everything (a new connection in this slot)."""
        self.most_recent_sequence = 0
        self._received = [_EMPTY] * REPLAY_PROTECTION_BUFFER_SIZE

    def already_received(self, sequence: int) -> bool:
        """True if a packet with this sequence must be ignored (too old, or a duplicate)."""
        if sequence + REPLAY_PROTECTION_BUFFER_SIZE <= self.most_recent_sequence:
            return True
        stored = self._received[sequence % REPLAY_PROTECTION_BUFFER_SIZE]
        return stored != _EMPTY and stored >= sequence

    def advance(self, sequence: int) -> None:
        """Record an authenticated packet's sequence."""
        if sequence > self.most_recent_sequence:
            self.most_recent_sequence = sequence
        self._received[sequence % REPLAY_PROTECTION_BUFFER_SIZE] = sequence
