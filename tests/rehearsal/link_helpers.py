"""A Link that records what the server sends it: in-process tests reach ``Connections`` as any transport does."""

from __future__ import annotations

from netcode.messaging.channels import Channel
from netcode.messaging.messages import Message
from rehearsal.links import WEBSOCKET, next_link_key
from rehearsal.wire import REHEARSAL_REGISTRY


class RecordingLink:
    """Keeps every ``send`` as (channel, message) and whether it was closed (a ``rehearsal.links.Link``)."""

    def __init__(self, key: int | None = None, transport: str = WEBSOCKET) -> None:
        self.key = next_link_key() if key is None else key
        self.transport = transport
        self.sent: list[tuple[Channel, Message | bytes]] = []
        self.flushes = 0
        self.closed: str | None = None

    def send(self, channel: Channel, message: Message | bytes) -> bool:
        self.sent.append((channel, message))
        return True

    def stats(self) -> None:
        return None

    def flush(self, now: float) -> None:
        self.flushes += 1

    def close(self, reason: str) -> None:
        self.closed = reason

    def decoded(self) -> list[tuple[Channel, Message]]:
        """What was sent, every message decoded (snapshots arrive as encoded bytes)."""
        return [(c, m if isinstance(m, Message) else REHEARSAL_REGISTRY.decode(m)) for c, m in self.sent]

    def messages(self, kind: str) -> list[dict]:
        """The fields of every message of one type, oldest first."""
        return [m.fields for _, m in self.decoded() if m.type == kind]

    def events(self, kind: str) -> list[dict]:
        return [e for e in self.messages("event") if e["kind"] == kind]
