"""A link for in-process cost benches: it sends nothing, keeps nothing, and counts the snapshots it was given."""

from __future__ import annotations

from netcode.messaging.channels import Channel
from rehearsal.links import UDP


class BenchLink:
    """A UDP-like link (its flush is the server's, a no-op here) that only counts snapshot datagrams."""

    transport = UDP

    def __init__(self, key: int) -> None:
        self.key = key
        self.snapshots = 0

    def send(self, channel: Channel, message: object) -> bool:
        if channel is Channel.UNRELIABLE and isinstance(message, bytes):
            self.snapshots += 1
        return True

    def stats(self) -> None:
        return None

    def flush(self, now: float) -> None:
        pass

    def close(self, reason: str) -> None:
        pass
