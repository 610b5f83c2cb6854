"""One peer's message connection: acks, channels, fragments and limits over payload bytes.

``Connection`` is what the server endpoint keeps per client (and the client, bots and load tests keep
for the server). It is pure logic: it never touches a socket or a clock; the caller passes the current
time in seconds and moves bytes. Feed every decrypted netcode payload to ``receive_packet`` (which
returns the messages now deliverable), call ``generate_packets`` once per tick and send what it
returns as netcode payload packets, and poll ``should_disconnect``.

Limits, all enforced here so the server's memory per client is bounded whatever the peer does:

- reliable send queue: at most ``reliable_window`` entries and ``reliable_max_queued_bytes``; beyond
  that ``send`` raises ``BacklogFull``; if the backlog stays full for ``backlog_timeout`` seconds,
  or the oldest reliable entry goes unacked for ``ack_timeout`` seconds, the peer is to be disconnected;
- unreliable send queue: bounded, drop-oldest;
- receive side: reliable reordering buffer bounded by the window; fragment reassembly bounded in count,
  size and time; packets larger than ``max_packet_size`` dropped;
- incoming rate: a token bucket of ``max_packets_per_second`` (burst ``packet_burst``); packets over the
  rate are dropped, and a peer throttled continuously for ``flood_timeout`` seconds is to be disconnected.

Everything dropped is counted by reason in ``drops``; ``receive_packet`` never raises.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from netcode.messaging.acks import HEADER_SIZE, AckConfig, AckEndpoint, parse_header
from netcode.messaging.channels import (
    ENTRY_HEADER_SIZE,
    BacklogFull,
    Channel,
    PacketWriter,
    ReliableReceiver,
    ReliableSender,
    UnreliableReceiver,
    UnreliableSender,
    parse_entries,
)
from netcode.messaging.fragments import FRAGMENT_HEADER_SIZE, MessageTooLarge, Reassembler
from netcode.messaging.messages import DEFAULT_REGISTRY, Message, MessageError, MessageRegistry
from netcode.messaging.sequence import SequenceBuffer

__all__ = [
    "BacklogFull",
    "Channel",
    "Connection",
    "ConnectionConfig",
    "ConnectionStats",
    "Delivery",
    "MessageTooLarge",
]


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """Sizes, timeouts and limits of a ``Connection`` (both peers must agree on the marked ones)."""

    max_packet_size: int = 1200  # payload bytes per netcode packet, header included (both peers)
    max_message_size: int = 256 * 1024  # largest message, either channel (both peers)
    fragment_size: int = 1024  # fragment data size at the sender; bounds fragment counts (both peers)
    reliable_window: int = 512  # reliable entries in flight / receive window (both peers)
    reliable_max_queued_bytes: int = 1 << 20
    unreliable_max_queued: int = 512
    unreliable_max_queued_bytes: int = 512 * 1024
    reassembly_max_pending: int = 4  # unreliable messages in reassembly at once
    reassembly_timeout: float = 2.0  # seconds before a partial unreliable message is dropped
    initial_resend_delay: float = 0.1  # before any RTT sample
    min_resend_delay: float = 0.02
    max_resend_delay: float = 1.0
    ack_timeout: float = 10.0  # oldest reliable entry unacked this long -> disconnect
    backlog_timeout: float = 2.0  # reliable backlog full this long -> disconnect
    max_packets_per_second: float = 300.0  # incoming rate limit
    packet_burst: float = 60.0
    send_packets_per_second: float = 240.0  # our own pacing, below the peer's incoming limit
    send_packet_burst: float = 30.0
    flood_timeout: float = 2.0  # throttled continuously this long -> disconnect
    # An ack-only packet waits this long for a packet with entries to carry the acks instead (0: next tick).
    # A server that sends every client a snapshot each tick sets about a tick: it then sends no ack-only packets.
    ack_delay: float = 0.0
    ack: AckConfig = field(default_factory=AckConfig)
    initial_reliable_id: int = 0  # testing only; both peers must agree

    @property
    def single_limit(self) -> int:
        """Largest message sent whole in one entry; larger ones are fragmented."""
        return self.max_packet_size - HEADER_SIZE - ENTRY_HEADER_SIZE

    def check(self) -> None:
        if self.fragment_size + FRAGMENT_HEADER_SIZE > self.single_limit:
            raise ValueError("fragment_size plus headers must fit in one packet")
        if not 1 <= self.reliable_window <= 4096:
            raise ValueError("reliable_window must be in [1, 4096]")


class Delivery(NamedTuple):
    """A delivered message: its channel, its bytes and, when the connection decodes, the Message."""

    channel: Channel
    data: bytes
    message: Message | None = None


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """A snapshot of a connection's estimates, counters and queue sizes."""

    rtt: float | None
    jitter: float
    packet_loss: float
    packets_sent: int
    packets_received: int
    bytes_sent: int
    bytes_received: int
    reliable_queued: int
    reliable_queued_bytes: int
    reliable_resent: int
    unreliable_queued: int
    reliable_receive_buffered: int
    reassembly_pending: int
    drops: dict[str, int]


class Connection:
    """Messages over unreliable payload packets, for one peer. See the module docstring."""

    def __init__(
        self, config: ConnectionConfig | None = None, *, registry: MessageRegistry | None = None, now: float = 0.0
    ) -> None:
        self.config = config = config or ConnectionConfig()
        config.check()
        self.registry = registry
        self._encoder = registry or DEFAULT_REGISTRY
        self.drops: Counter[str] = Counter()
        self.acks = AckEndpoint(config.ack)
        reliable_args = {
            "single_limit": config.single_limit,
            "fragment_size": config.fragment_size,
            "max_message_size": config.max_message_size,
        }
        self.reliable_sender = ReliableSender(
            window=config.reliable_window,
            max_queued_bytes=config.reliable_max_queued_bytes,
            initial_id=config.initial_reliable_id,
            **reliable_args,
        )
        self.unreliable_sender = UnreliableSender(
            max_queued=config.unreliable_max_queued,
            max_queued_bytes=config.unreliable_max_queued_bytes,
            drops=self.drops,
            **reliable_args,
        )
        max_fragment_data = config.single_limit - FRAGMENT_HEADER_SIZE

        def reassembler(max_pending: int, timeout: float | None) -> Reassembler:
            return Reassembler(
                fragment_size=config.fragment_size,
                max_fragment_data=max_fragment_data,
                max_message_size=config.max_message_size,
                max_pending=max_pending,
                timeout=timeout,
                drops=self.drops,
            )

        # Reliable fragments arrive complete and in order, so one message at a time is ever pending.
        self.reliable_receiver = ReliableReceiver(
            window=config.reliable_window,
            reassembler=reassembler(2, None),
            drops=self.drops,
            initial_id=config.initial_reliable_id,
        )
        self.unreliable_receiver = UnreliableReceiver(
            reassembler=reassembler(config.reassembly_max_pending, config.reassembly_timeout), drops=self.drops
        )
        self.writer = PacketWriter(config.max_packet_size, HEADER_SIZE)
        self._packet_entries: SequenceBuffer[list[int]] = SequenceBuffer(
            config.ack.sent_buffer_size, config.ack.initial_sequence
        )
        self._now = now
        self._ack_pending = False
        self._ack_pending_since = now  # when the oldest entry-carrying packet not acked yet arrived
        self._tokens = config.packet_burst
        self._tokens_time = now
        self._send_tokens = config.send_packet_burst
        self._send_tokens_time = now
        self._flood_started: float | None = None
        self._last_throttled = -math.inf
        self._backlog_full_since: float | None = None
        self.disconnect_reason: str | None = None

    # ----------------------------------------------------------------------------------- sending

    def send(
        self, channel: Channel, message: bytes | bytearray | memoryview | Message, now: float | None = None
    ) -> None:
        """Queue a message (bytes, or a Message encoded with the registry) on a channel.

        Raises ``MessageTooLarge`` above ``max_message_size``, ``MessageError`` for a Message that fails
        its schema, and ``BacklogFull`` when the reliable queue is full (nothing is queued then).
        """
        if now is not None:
            self._now = now
        data = self._encoder.encode(message) if isinstance(message, Message) else bytes(message)
        if channel is not Channel.RELIABLE and channel is not Channel.UNRELIABLE:
            channel = Channel(channel)  # a plain int: validated (the members skip this call)
        if channel is Channel.UNRELIABLE:
            self.unreliable_sender.send(data)
            return
        try:
            self.reliable_sender.send(data)
        except BacklogFull:
            if self._backlog_full_since is None:
                self._backlog_full_since = self._now
            self.drops["send_backlog_full"] += 1
            raise

    @property
    def resend_delay(self) -> float:
        """How long a reliable entry waits for its ack before being sent again."""
        rtt = self.acks.rtt
        if rtt is None:
            return self.config.initial_resend_delay
        delay = 1.25 * rtt + 2.0 * self.acks.jitter
        return min(self.config.max_resend_delay, max(self.config.min_resend_delay, delay))

    def generate_packets(self, now: float, budget: int | None = None) -> list[bytes]:
        """Packets (payload bytes, each at most ``max_packet_size``) to send this tick, within ``budget`` bytes.

        Due reliable entries go first, then queued unreliable ones. If there is nothing to send but the
        peer sent us messages since our last packet (``ack_delay`` ago or more), one header-only packet
        carries the acks. The number
        of packets is paced by ``send_packets_per_second`` so a burst (a large fragmented message)
        does not trip the peer's incoming rate limit.
        """
        self._now = now
        self._update_backlog()
        config = self.config
        if now > self._send_tokens_time:
            tokens = self._send_tokens + (now - self._send_tokens_time) * config.send_packets_per_second
            self._send_tokens = min(config.send_packet_burst, tokens)
            self._send_tokens_time = now
        packets: list[bytes] = []
        if self.reliable_sender.queued or self.unreliable_sender.queued:
            built = self.writer.build(
                self.reliable_sender, self.unreliable_sender, now, self.resend_delay, budget, int(self._send_tokens)
            )
        else:
            built = []  # the common case at 100 Hz: nothing queued, at most acks to send
        self._send_tokens -= len(built)
        for entries, reliable_ids in built:
            sequence = self.acks.next_sequence
            header = self.acks.write_header(now, HEADER_SIZE + len(entries), ack_eliciting=True)
            self._packet_entries.insert(sequence, reliable_ids)
            packets.append(header + entries)
        if packets:
            self._ack_pending = False
        elif self._ack_pending and now - self._ack_pending_since >= config.ack_delay:
            sequence = self.acks.next_sequence
            packets.append(self.acks.write_header(now, HEADER_SIZE, ack_eliciting=False))
            self._packet_entries.insert(sequence, [])
            self._ack_pending = False
        return packets

    # ---------------------------------------------------------------------------------- receiving

    def _rate_limited(self, now: float) -> bool:
        if now > self._tokens_time:  # the bucket never holds more than the burst, so no refill is a no-op
            config = self.config
            tokens = self._tokens + (now - self._tokens_time) * config.max_packets_per_second
            self._tokens = min(config.packet_burst, tokens)
            self._tokens_time = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return False
        if self._flood_started is None or now - self._last_throttled > 1.0:
            self._flood_started = now
        self._last_throttled = now
        return True

    def receive_packet(self, payload: bytes, now: float) -> list[Delivery]:
        """Process one received payload; returns the messages it makes deliverable. Never raises."""
        self._now = now
        if self._rate_limited(now):
            self.drops["rate_limited"] += 1
            return []
        if len(payload) > self.config.max_packet_size:
            self.drops["packet_too_large"] += 1
            return []
        header, reason = parse_header(payload)
        if header is None:
            self.drops[reason or "packet_bad_header"] += 1
            return []
        entries, reason = parse_entries(payload, HEADER_SIZE)
        if reason is not None:
            self.drops[reason] += 1
            return []
        reason = self.acks.check_sequence(header.sequence)
        if reason is not None:
            self.drops[reason] += 1
            return []
        for sequence in self.acks.on_packet_received(header, now, len(payload)):
            reliable_ids = self._packet_entries.remove(sequence)
            if reliable_ids:
                self.reliable_sender.on_acked(reliable_ids)
        self._update_backlog()
        if not entries:
            return []
        if not self._ack_pending:
            self._ack_pending, self._ack_pending_since = True, now
        unreliable: list[bytes] = []
        any_reliable = False
        for channel, fragment, sequence, body in entries:
            if channel is Channel.RELIABLE:
                self.reliable_receiver.on_entry(sequence, fragment, body)
                any_reliable = True
            else:
                data = self.unreliable_receiver.on_entry(sequence, fragment, body, now)
                if data is not None:
                    unreliable.append(data)
        # Reliable messages first, in order; the buffer only changes when a reliable entry arrives.
        out: list[Delivery] = []
        if any_reliable:
            for data in self.reliable_receiver.deliver(now):
                self._deliver(out, Channel.RELIABLE, data)
        for data in unreliable:
            self._deliver(out, Channel.UNRELIABLE, data)
        return out

    def _deliver(self, out: list[Delivery], channel: Channel, data: bytes) -> None:
        """Append a delivery (decoded when the connection has a registry; an invalid message is dropped)."""
        registry = self.registry
        if registry is None:
            out.append(Delivery(channel, data))
            return
        try:
            out.append(Delivery(channel, data, registry.decode(data)))
        except MessageError:
            self.drops["message_invalid"] += 1

    # ------------------------------------------------------------------------------ health, stats

    def _update_backlog(self) -> None:
        if self._backlog_full_since is not None and self.reliable_sender.queued <= self.config.reliable_window // 2:
            self._backlog_full_since = None

    def should_disconnect(self, now: float) -> bool:
        """True once the peer should be dropped; ``disconnect_reason`` says why (and stays set)."""
        if self.disconnect_reason is not None:
            return True
        config = self.config
        first_sent = self.reliable_sender.oldest_first_sent()
        if self._backlog_full_since is not None and now - self._backlog_full_since >= config.backlog_timeout:
            self.disconnect_reason = (
                f"reliable backlog full for {now - self._backlog_full_since:.1f} s "
                f"({self.reliable_sender.queued} entries unacked)"
            )
        elif first_sent is not None and now - first_sent >= config.ack_timeout:
            self.disconnect_reason = f"peer stopped acking: reliable message unacked for {now - first_sent:.1f} s"
        elif self._flood_started is not None and self._last_throttled - self._flood_started >= config.flood_timeout:
            self.disconnect_reason = (
                f"rate limit exceeded: over {config.max_packets_per_second:g} packets/s "
                f"for {self._last_throttled - self._flood_started:.1f} s"
            )
        return self.disconnect_reason is not None

    def stats(self, now: float) -> ConnectionStats:
        acks = self.acks
        return ConnectionStats(
            rtt=acks.rtt,
            jitter=acks.jitter,
            packet_loss=acks.packet_loss(now),
            packets_sent=acks.packets_sent,
            packets_received=acks.packets_received,
            bytes_sent=acks.bytes_sent,
            bytes_received=acks.bytes_received,
            reliable_queued=self.reliable_sender.queued,
            reliable_queued_bytes=self.reliable_sender.queued_bytes,
            reliable_resent=self.reliable_sender.entries_resent,
            unreliable_queued=self.unreliable_sender.queued,
            reliable_receive_buffered=self.reliable_receiver.buffered,
            reassembly_pending=self.unreliable_receiver.reassembler.pending,
            drops=dict(self.drops),
        )
