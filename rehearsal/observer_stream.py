"""One snapshot stream for a room's browser observers: encoded once per tick, the same bytes to each of them.

A room's WebSocket observers (pages that only watch) share the codec client ``SHARED_OBSERVERS``: the publisher
encodes one snapshot for it and sends those bytes to every member, so 32 observers cost one encode, not 32.

A WebSocket delivers every frame written to it, in order, and a page decodes each snapshot as it arrives
(``rehearsal.links.IN_ORDER``): a shared snapshot written to every member's socket is a baseline for the next
one at once (``delivered``), without waiting for 32 pages' acks. A member whose socket could not take it (a
page that does not keep up: its link drops snapshots while the socket is paused) leaves the group for a
stream of its own (``expel``), so what it missed never holds back the others.

* A member joins: the shared client's baselines are forgotten (``reset_client``), so the next shared snapshot
  is full for everyone and the newcomer can decode it.
* A member that asks to resync leaves the group for a stream of its own, starting from full records.
* UDP observers (headsets) lose datagrams, each their own: they keep their own streams, acked by their acks.
"""

from __future__ import annotations

from collections.abc import Iterable

from netcode.sync.snapshot_codec import SnapshotServer

SHARED_OBSERVERS = "shared-observers"  # the codec client id of a room's shared observer stream


class ObserverGroup:
    """The members of a room's shared observer stream (see the module doc)."""

    def __init__(self, sync: SnapshotServer, budget_bytes: int | None) -> None:
        self.sync = sync
        self.budget_bytes = budget_bytes
        self.members: set[int] = set()  # link keys

    def __contains__(self, key: object) -> bool:
        return key in self.members

    def __len__(self) -> int:
        return len(self.members)

    def add(self, key: int) -> None:
        """A new member: everyone's next shared snapshot is full (the newcomer has no baselines)."""
        if SHARED_OBSERVERS in self.sync.clients:
            self.sync.reset_client(SHARED_OBSERVERS)
        else:
            self.sync.add_client(SHARED_OBSERVERS, budget_bytes=self.budget_bytes)
        self.members.add(key)

    def discard(self, key: int) -> None:
        """A member left (or was expelled); the shared client goes with the last member."""
        self.members.discard(key)
        if not self.members and SHARED_OBSERVERS in self.sync.clients:
            self.sync.remove_client(SHARED_OBSERVERS)

    def expel(self, key: int) -> None:
        """A member gets a stream of its own (full records first), leaving the group."""
        self.discard(key)
        self.sync.add_client(key, budget_bytes=self.budget_bytes)

    def delivered(self, sequence: int, missed: Iterable[int]) -> list[int]:
        """Shared snapshot ``sequence`` was written to every member but ``missed``: those leave for streams of
        their own, and for the rest it is a baseline at once (a WebSocket delivers it before anything later).
        Returns the members expelled."""
        expelled = [key for key in missed if key in self.members]
        for key in expelled:
            self.expel(key)
        if self.members:
            self.sync.on_ack(SHARED_OBSERVERS, sequence)
        return expelled
