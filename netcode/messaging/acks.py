"""Per-connection packet acknowledgement: sequence, ack and ack bitfield; RTT, jitter and loss.

Every payload packet we send (inside a netcode 1.02 payload packet) starts with a 9-byte header::

    u8  version      = 1
    u16 sequence     our packet sequence number (wraps at 65536)
    u16 ack          newest packet sequence we have received from the peer
    u32 ack_bits     bit i set <=> we received packet (ack - 1 - i), i = 0..31

all little-endian. Because every packet repeats the newest 33 receptions, one lost packet loses no ack
information: acks are redundant rather than resent (Glenn Fiedler's reliable.io design). The sender
keeps a record of each packet it sent (send time, size, whether it carried messages) in a fixed ring;
when a header acks one of them for the first time, the endpoint reports its sequence as *newly acked*,
which is what the reliable channel uses to retire messages.

*Ack-eliciting* packets are those that carry at least one message. A packet carrying only acks is not
ack-eliciting: the peer does not answer it with an ack-only packet of its own (that would ping-pong
forever), and it is left out of the RTT and loss estimates (QUIC makes the same distinction).

RTT is an exponential moving average of ``ack time - send time`` taken only for the newest sequence in
an ack (a packet acked through the bitfield may have been received long before the ack reached us);
jitter is the moving average of ``|sample - rtt|``. Loss is the fraction of recent ack-eliciting packets,
old enough to have been acked, that were not. All memory is two fixed rings.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from netcode.messaging.sequence import SequenceBuffer, sequence_add, sequence_difference, sequence_greater_than

PACKET_VERSION = 1
HEADER = struct.Struct("<BHHI")
HEADER_SIZE = HEADER.size  # 9 bytes
ACK_BITS = 32
_SEEN_BITS = 128  # how far back the acks already processed are remembered (then the records' flags decide)
_SEEN_MASK = (1 << _SEEN_BITS) - 1


class PacketHeader(NamedTuple):
    """The parsed 9-byte header of one of our payload packets (a tuple: one is made for every packet)."""

    sequence: int
    ack: int
    ack_bits: int


def parse_header(data: bytes) -> tuple[PacketHeader | None, str | None]:
    """Parse the packet header; returns (header, None) or (None, drop reason). Never raises."""
    if len(data) < HEADER_SIZE:
        return None, "packet_truncated"
    version, sequence, ack, ack_bits = HEADER.unpack_from(data, 0)
    if version != PACKET_VERSION:
        return None, "packet_bad_version"
    return PacketHeader(sequence, ack, ack_bits), None


@dataclass(frozen=True, slots=True)
class AckConfig:
    """Sizes and smoothing factors for an ``AckEndpoint``."""

    sent_buffer_size: int = 1024  # packets we remember having sent (must exceed ACK_BITS + 1)
    received_buffer_size: int = 1024  # packets we remember having received (duplicate detection)
    rtt_smoothing: float = 0.125  # EMA weight of a new RTT sample
    jitter_smoothing: float = 0.25  # EMA weight of a new |sample - rtt|
    loss_window: int = 256  # how many recent sent packets the loss estimate looks at
    initial_sequence: int = 0  # first packet sequence we send (tests use it to cross the wrap early)


@dataclass(slots=True)
class _SentPacket:
    send_time: float
    size: int
    ack_eliciting: bool
    acked: bool = False


class AckEndpoint:
    """Writes headers for outgoing packets and turns incoming headers into newly acked sequences."""

    def __init__(self, config: AckConfig | None = None) -> None:
        self.config = config or AckConfig()
        if self.config.sent_buffer_size <= ACK_BITS + 1:
            raise ValueError("sent_buffer_size must exceed the 33 packets one header can ack")
        self.next_sequence = self.config.initial_sequence & 0xFFFF
        self._sent: SequenceBuffer[_SentPacket] = SequenceBuffer(self.config.sent_buffer_size, self.next_sequence)
        self._received: SequenceBuffer[bool] = SequenceBuffer(self.config.received_buffer_size)
        self._latest_received: int | None = None
        self._ack_bits = 0
        self._seen_base: int | None = None  # newest ack a header carried; _seen bit k: base - k was carried
        self._seen = 0
        self.rtt: float | None = None  # seconds, None until the first sample
        self.jitter = 0.0
        self.rtt_samples = 0
        self.packets_sent = 0
        self.packets_received = 0
        self.packets_acked = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    # ---------------------------------------------------------------- sending

    @property
    def ack(self) -> int:
        """The ack we would write now (0xFFFF with empty bits before anything arrived)."""
        return 0xFFFF if self._latest_received is None else self._latest_received

    @property
    def ack_bits(self) -> int:
        return self._ack_bits

    def write_header(self, now: float, size: int, ack_eliciting: bool) -> bytes:
        """Allocate the next sequence, remember the packet (``size`` bytes incl. header), return its header."""
        sequence = self.next_sequence
        self.next_sequence = (sequence + 1) & 0xFFFF
        self._sent.insert(sequence, _SentPacket(now, size, ack_eliciting))
        self.packets_sent += 1
        self.bytes_sent += size
        latest = self._latest_received
        return HEADER.pack(PACKET_VERSION, sequence, 0xFFFF if latest is None else latest, self._ack_bits)

    # -------------------------------------------------------------- receiving

    def check_sequence(self, sequence: int) -> str | None:
        """Drop reason if a packet with this sequence must be ignored (duplicate or too old), else None."""
        if self._received.is_too_old(sequence):
            return "packet_stale"
        if self._received.exists(sequence):
            return "packet_duplicate"
        return None

    def on_packet_received(self, header: PacketHeader, now: float, size: int) -> list[int]:
        """Record a received packet (call ``check_sequence`` first); return our sequences newly acked."""
        sequence = header.sequence
        self._received.insert(sequence, True)
        self.packets_received += 1
        self.bytes_received += size
        self._note_received(sequence)
        return self._process_acks(header, now)

    def _note_received(self, sequence: int) -> None:
        latest = self._latest_received
        if latest is None:
            self._latest_received = sequence
            self._ack_bits = 0
            return
        shift = sequence_difference(sequence, latest)
        if shift > 0:
            if shift <= ACK_BITS:
                self._ack_bits = ((self._ack_bits << shift) | (1 << (shift - 1))) & 0xFFFFFFFF
            else:
                self._ack_bits = 0
            self._latest_received = sequence
        elif -ACK_BITS <= shift < 0:
            self._ack_bits |= 1 << (-shift - 1)

    def _fresh_acks(self, ack: int, ack_bits: int) -> int:
        """The acks of a header (bit k: sequence ``ack - k``) that no earlier header carried. Every header
        repeats the last 33, so most are old: skipping them saves a buffer lookup each. Remembers these."""
        incoming = 1 | (ack_bits << 1)
        base = self._seen_base
        if base is None:
            self._seen_base, self._seen = ack, incoming
            return incoming
        shift = sequence_difference(ack, base)
        if shift >= 0:
            seen = (self._seen << min(shift, _SEEN_BITS)) & _SEEN_MASK
            self._seen_base, self._seen = ack, seen | incoming
        else:
            seen = self._seen >> min(-shift, _SEEN_BITS)
            self._seen |= (incoming << min(-shift, _SEEN_BITS)) & _SEEN_MASK
        return incoming & ~seen

    def _process_acks(self, header: PacketHeader, now: float) -> list[int]:
        newly: list[int] = []
        sent = self._sent
        # Only sequences we have actually sent can be acked (guards against a peer acking the future).
        if not sequence_greater_than(self.next_sequence, header.ack):
            return newly
        bits = self._fresh_acks(header.ack, header.ack_bits)
        candidates = []
        while bits:
            low = bits & -bits
            candidates.append(sequence_add(header.ack, 1 - low.bit_length()))
            bits ^= low
        for sequence in candidates:
            record = sent.get(sequence)
            if record is None or record.acked:
                continue
            record.acked = True
            self.packets_acked += 1
            newly.append(sequence)
            if sequence == header.ack and record.ack_eliciting:
                self._add_rtt_sample(now - record.send_time)
        return newly

    def _add_rtt_sample(self, sample: float) -> None:
        sample = max(0.0, sample)
        self.rtt_samples += 1
        if self.rtt is None:
            self.rtt = sample
            self.jitter = sample / 2.0
            return
        self.jitter += self.config.jitter_smoothing * (abs(sample - self.rtt) - self.jitter)
        self.rtt += self.config.rtt_smoothing * (sample - self.rtt)

    # ------------------------------------------------------------------ stats

    def packet_loss(self, now: float) -> float:
        """Fraction of recent ack-eliciting packets (old enough to have been acked) that were not acked."""
        rtt = self.rtt if self.rtt is not None else 0.1
        horizon = now - (2.0 * rtt + 4.0 * self.jitter + 0.05)
        considered = lost = 0
        newest = sequence_add(self.next_sequence, -1)
        for back in range(min(self.config.loss_window, self.config.sent_buffer_size, self.packets_sent)):
            record = self._sent.get(sequence_add(newest, -back))
            if record is None or not record.ack_eliciting or record.send_time > horizon:
                continue
            considered += 1
            if not record.acked:
                lost += 1
        return lost / considered if considered else 0.0
