"""The client's half of the input protocol: numbered samples, redundant packets, forgetting acked ones.

The packet format and the server's receiver are in ``netcode.protocol.inputs``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from netcode.protocol.inputs import (
    HEADER,
    MAX_DEVICES,
    MAX_SAMPLES,
    VERSION,
    InputAck,
    InputSample,
    encode_sample,
    packet_size,
    sample_size,
)
from netcode.protocol.poses import RigidPose


@dataclass(frozen=True, slots=True)
class InputSenderConfig:
    max_samples: int = 16  # redundancy: at most this many unacked samples per packet
    max_bytes: int = 1100  # the packet never exceeds this (fits one unreliable entry with its envelope)

    def __post_init__(self) -> None:
        if not (1 <= self.max_samples <= MAX_SAMPLES) or self.max_bytes < packet_size(1, 1):
            raise ValueError("bad input sender limits")


class InputSender:
    """Client side: numbers samples, builds redundant packets, forgets what the server acked."""

    def __init__(self, devices: Sequence[int], config: InputSenderConfig | None = None) -> None:
        if not (1 <= len(devices) <= MAX_DEVICES) or any(not 0 <= d <= 255 for d in devices):
            raise ValueError(f"need 1..{MAX_DEVICES} device ids in 0..255")
        self.devices = tuple(devices)
        self.config = config or InputSenderConfig()
        fit = (self.config.max_bytes - HEADER.size - len(self.devices)) // sample_size(len(self.devices))
        self.window = max(1, min(self.config.max_samples, fit))  # samples per packet, at most
        self._pending: deque[InputSample] = deque(maxlen=self.window)
        self._sent_at: dict[int, float] = {}  # newest seq of a packet -> local time it was first sent
        self._encoded: dict[int, bytes] = {}  # seq -> wire bytes of each pending sample (encoded once)
        self.next_seq = 0
        self.acked: int | None = None
        self.abandoned = 0  # samples pushed out of the window before being acked

    def add_sample(self, client_time: float, poses: Mapping[int, RigidPose | None]) -> InputSample:
        """Record this frame's poses (missing devices count as untracked); returns the numbered sample."""
        sample = InputSample(self.next_seq, client_time, tuple([poses.get(d) for d in self.devices]))
        self.next_seq += 1
        if len(self._pending) == self._pending.maxlen:
            self.abandoned += 1
            self._encoded.pop(self._pending[0].seq, None)
        self._pending.append(sample)
        self._encoded[sample.seq] = encode_sample(sample, len(self.devices))
        return sample

    def unacked(self) -> list[InputSample]:
        return list(self._pending)

    def packet(self, local_now: float) -> bytes | None:
        """The packet to send now (all unacked samples, oldest first), or None when there is none."""
        if not self._pending:
            return None
        newest = self._pending[-1].seq
        self._sent_at.setdefault(newest, local_now)
        while len(self._sent_at) > 4 * self.window:  # bounded even if acks never come
            del self._sent_at[next(iter(self._sent_at))]
        pending = self._pending
        head = HEADER.pack(VERSION, len(self.devices), len(pending), 0, pending[0].seq) + bytes(self.devices)
        return head + b"".join([self._encoded[sample.seq] for sample in pending])

    def on_ack(self, ack: InputAck) -> float | None:
        """Forget samples up to ``ack.seq``; returns the local send time of that packet (for clock sync)."""
        sent = self._sent_at.get(ack.seq)
        if self.acked is None or ack.seq > self.acked:
            self.acked = ack.seq
            while self._pending and self._pending[0].seq <= ack.seq:
                self._encoded.pop(self._pending.popleft().seq, None)
        for seq in [s for s in self._sent_at if s <= self.acked]:
            del self._sent_at[seq]
        return sent
