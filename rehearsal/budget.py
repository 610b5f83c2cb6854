"""Work budgets: how much a connection (and a room) may make the server do per second, checked BEFORE the work.

Why: one client must never be able to freeze a room, or every room, by sending work the server does on the
reactor thread (issue 19: observers sending input packets full of samples). Every unit of work a client can
ask for is charged to a token bucket first; when the bucket is empty the request is refused unprocessed
(counted by reason, never decoded further). The buckets refill continuously at their rate and hold one
second's worth of burst (``burst`` seconds).

``ConnectionBudget`` holds one connection's buckets: input bytes and new input samples per second, commands
per second, and the head-pose (gaze) updates of a role that drives no instrument; a connection that stays
over its budget for ``OVERSPEND_SECONDS`` is disconnected. ``room_budget()`` bounds the input samples of a
whole room, so that many connections of one room together stay bounded too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# A headset samples at 72-120 Hz; twice the fastest, so a client catching up after a stall is not refused.
INPUT_SAMPLES_PER_SECOND = 240.0
# One input packet is at most 1,100 bytes of samples; 120 packets a second of that is the most a client needs.
INPUT_BYTES_PER_SECOND = 132_000.0
COMMANDS_PER_SECOND = 10.0  # people click; a burst of 10 is plenty
# A client that keeps asking for more than its budget (no break of OVERSPEND_BREAK s for OVERSPEND_SECONDS) is
# not a headset that caught up after a stall: it is disconnected, so the refusals themselves stop costing.
OVERSPEND_SECONDS = 1.5
OVERSPEND_BREAK = 1.0
GAZE_UPDATES_PER_SECOND = 10.0  # an observer's head pose only ranks snapshot content: 10 Hz is enough
ROOM_INPUT_SAMPLES_PER_SECOND = 8 * INPUT_SAMPLES_PER_SECOND  # a full operating team, all hands tracked


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``rate * burst`` kept; ``take(n, now)`` spends n or refuses."""

    rate: float
    burst: float = 1.0
    tokens: float = -1.0  # -1: full at the first use
    stamp: float | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")

    @property
    def capacity(self) -> float:
        return self.rate * self.burst

    def take(self, n: float, now: float) -> bool:
        """Spend ``n`` tokens if there are that many (True), else spend nothing (False)."""
        if self.stamp is None or self.tokens < 0:
            tokens = self.capacity
        else:
            tokens = min(self.capacity, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < n:
            self.tokens = tokens
            return False
        self.tokens = tokens - n
        return True


@dataclass(slots=True)
class ConnectionBudget:
    """One connection's buckets (see the module doc)."""

    input_bytes: TokenBucket = field(default_factory=lambda: TokenBucket(INPUT_BYTES_PER_SECOND))
    input_samples: TokenBucket = field(default_factory=lambda: TokenBucket(INPUT_SAMPLES_PER_SECOND))
    commands: TokenBucket = field(default_factory=lambda: TokenBucket(COMMANDS_PER_SECOND))
    gaze: TokenBucket = field(default_factory=lambda: TokenBucket(GAZE_UPDATES_PER_SECOND))
    over_since: float | None = None  # when this connection's current run of over-budget requests began
    last_over: float = 0.0

    def overspent(self, now: float) -> float:
        """Note an over-budget request; how long the connection has been over its budget without a break of
        ``OVERSPEND_BREAK`` seconds (a client that stays over it for ``OVERSPEND_SECONDS`` is sent away)."""
        if self.over_since is None or now - self.last_over > OVERSPEND_BREAK:
            self.over_since = now
        self.last_over = now
        return now - self.over_since


def room_budget() -> TokenBucket:
    """The input-sample bucket of one room (all its connections together)."""
    return TokenBucket(ROOM_INPUT_SAMPLES_PER_SECOND)
