"""One snapshot stream for a room's browser observers: encoded once per tick, the same bytes to each of them.

A room's WebSocket observers (pages that only watch) share the codec client ``SHARED_OBSERVERS``: the publisher
encodes one snapshot for it and sends those bytes to every member, so 32 observers cost one encode, not 32.
The deltas must only use baselines every member holds, so a sequence is acknowledged to the codec once every
member acked it (``on_ack`` returns those). A WebSocket delivers in order and loses nothing (the link drops
snapshots only for a page that does not keep up), so members normally ack the same sequences.

* A member joins: the shared client's baselines are forgotten (``reset_client``), so the next shared snapshot
  is full for everyone and the newcomer can decode it.
* A member that falls ``MAX_LAG`` sequences behind the newest shared snapshot (a slow page), or asks to resync,
  leaves the group (``expel``) for a stream of its own, so it never holds the others back.
* UDP observers (headsets) lose datagrams, each their own: they keep their own streams.
"""

from __future__ import annotations

from netcode.sync.snapshot_codec import SnapshotServer

SHARED_OBSERVERS = "shared-observers"  # the codec client id of a room's shared observer stream
MAX_LAG = 90  # sequences (1.5 s at 60 Hz) a member may be behind before it gets its own stream
ACK_WINDOW = 128  # sequences per member remembered for the intersection (older ones are forgotten)


class ObserverGroup:
    """The members of a room's shared observer stream and what each acknowledged (see the module doc).

    An ack costs O(the sequences it names for the first time), whatever the group's size: ``counts`` holds,
    per sequence sent but not yet acknowledged to the codec, how many members acked it; the last one to ack a
    sequence passes it to the codec."""

    def __init__(self, sync: SnapshotServer, budget_bytes: int | None) -> None:
        self.sync = sync
        self.budget_bytes = budget_bytes
        self.members: dict[int, set[int]] = {}  # link key -> sequences it acked (the last ACK_WINDOW)
        self.newest_ack: dict[int, int] = {}
        self.counts: dict[int, int] = {}  # sequence -> members that acked it (until all have)
        self.newest_sent = -1

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
        for acked in self.members.values():
            acked.clear()  # the reset forgot what was sent before: those acks name nothing now
        self.counts.clear()
        self.members[key] = set()
        self.newest_ack[key] = self.newest_sent

    def discard(self, key: int) -> None:
        """A member left (or was expelled); what the others all acked meanwhile becomes baselines. The shared
        client goes with the last member."""
        self.members.pop(key, None)
        self.newest_ack.pop(key, None)
        if not self.members:
            self.sync.remove_client(SHARED_OBSERVERS)
            self.newest_sent = -1
            self.counts.clear()
            return
        everyone = len(self.members)  # recount what is still waiting (a rare event: O(waiting x members))
        counts = {s: sum(s in acked for acked in self.members.values()) for s in self.counts}
        for sequence in sorted(s for s, n in counts.items() if n >= everyone):
            self.sync.on_ack(SHARED_OBSERVERS, sequence)
        self.counts = {s: n for s, n in counts.items() if n < everyone}

    def expel(self, key: int) -> None:
        """A member gets a stream of its own (full records first), leaving the group."""
        self.discard(key)
        self.sync.add_client(key, budget_bytes=self.budget_bytes)

    def sent(self, sequence: int) -> None:
        self.newest_sent = max(self.newest_sent, sequence)

    def on_ack(self, key: int, newest: int, bits: int) -> list[int]:
        """A member's ``snap_ack``: the sequences it acknowledges that every member has now acknowledged are
        acknowledged to the codec (and returned)."""
        acked = self.members.get(key)
        if acked is None or newest > self.newest_sent:
            return []  # not a member, or it names a snapshot never sent (a forged ack must not hold it back)
        self.newest_ack[key] = max(self.newest_ack.get(key, -1), newest)
        fresh = [newest] if newest not in acked else []
        if bits:
            fresh.extend(s for i in range(32) if bits >> i & 1 and (s := newest - 1 - i) not in acked)
        if not fresh:
            return []
        acked.update(fresh)
        if len(acked) > 2 * ACK_WINDOW:  # pruned in batches: each ack stays O(what it names)
            floor = max(acked) - ACK_WINDOW
            acked.difference_update([s for s in acked if s <= floor])
        counts, everyone, done = self.counts, len(self.members), []
        for sequence in fresh:
            n = counts.get(sequence, 0) + 1
            if n >= everyone:
                counts.pop(sequence, None)
                done.append(sequence)
            else:
                counts[sequence] = n
        if len(counts) > 2 * ACK_WINDOW:  # sequences some member never acked (it lost them): forget the oldest
            floor = self.newest_sent - ACK_WINDOW
            for sequence in [s for s in counts if s <= floor]:
                del counts[sequence]
        done.sort()
        for sequence in done:
            self.sync.on_ack(SHARED_OBSERVERS, sequence)
        return done

    def laggards(self) -> list[int]:
        """Members more than MAX_LAG sequences behind the newest shared snapshot."""
        return [k for k, n in self.newest_ack.items() if self.newest_sent - n > MAX_LAG]
