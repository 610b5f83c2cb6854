"""The admin credential check shared by every admin endpoint (the app's /api/sessions and ops' /admin).

One ``AdminGate`` instance guards them all. The credential is a bearer token compared in constant time.

Lock-out, and why it can never lock the real admin out: the credential is 256 random bits, so guessing it is
hopeless at any request rate and a lock-out adds nothing against guessing; what it is for is bounding the
work and noise of wrong attempts. So the right credential is always let in, first and whatever happened
before, and only wrong attempts are throttled: ``AUTH_FAILURES_ALLOWED`` failures in ``AUTH_WINDOW_SECONDS``
from one address, then 429 for that address's wrong attempts until the window passes; and, because an
attacker has many addresses, at most ``GLOBAL_FAILURES_ALLOWED`` failures in the window server-wide, then 429
for every wrong attempt (from any address) until it passes. An attacker's failures therefore cost the real
admin nothing (per address, or many addresses at once), and the tracked addresses are bounded.
The credential is never logged or echoed; a refusal carries no detail.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "AUTH_FAILURES_ALLOWED",
    "AUTH_WINDOW_SECONDS",
    "GLOBAL_FAILURES_ALLOWED",
    "TRACKED_ADDRESSES",
    "AdminGate",
    "denied_body",
]

AUTH_FAILURES_ALLOWED = 5  # wrong attempts per address per window, then 429 for its wrong attempts
GLOBAL_FAILURES_ALLOWED = 100  # wrong attempts per window from all addresses together, then 429 for all wrong ones
AUTH_WINDOW_SECONDS = 60.0
TRACKED_ADDRESSES = 4096  # bounded memory: the oldest addresses are forgotten first


class _Request(Protocol):
    def getClientAddress(self) -> object: ...  # noqa: N802 (twisted's name)

    def getHeader(self, key: bytes) -> bytes | None: ...  # noqa: N802 (twisted's name)


def denied_body(status: int) -> dict[str, str]:
    """The JSON body of a refusal: no detail beyond the status."""
    return {"error": "unauthorized" if status == 401 else "too many attempts"}


class AdminGate:
    """Bearer-credential check in constant time; wrong attempts throttled per address and server-wide (the
    right credential always passes: see the module doc). ``throttled`` counts the 429s."""

    def __init__(self, credential: str, clock: Callable[[], float] = time.monotonic) -> None:
        if not credential:
            raise ValueError("the admin credential must not be empty")
        self._credential = credential.encode()
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._all_failures: deque[float] = deque(maxlen=GLOBAL_FAILURES_ALLOWED)
        self.throttled = 0

    def __repr__(self) -> str:  # never show the credential
        return f"AdminGate(tracked={len(self._failures)})"

    def check(self, request: _Request) -> int | None:
        """None if allowed, else the status to answer (401, or 429 while wrong attempts are throttled)."""
        header = (request.getHeader(b"authorization") or b"").decode("latin-1")
        given = header[7:].encode("latin-1") if header.startswith("Bearer ") else b""
        if given and hmac.compare_digest(given, self._credential):
            return None
        address = request.getClientAddress()
        who = getattr(address, "host", str(address))
        now = self.clock()
        recent = self._failures.get(who)
        if recent is None:
            recent = deque(maxlen=AUTH_FAILURES_ALLOWED)
        while recent and now - recent[0] >= AUTH_WINDOW_SECONDS:
            recent.popleft()
        everyone = self._all_failures
        while everyone and now - everyone[0] >= AUTH_WINDOW_SECONDS:
            everyone.popleft()
        if len(recent) >= AUTH_FAILURES_ALLOWED or len(everyone) >= GLOBAL_FAILURES_ALLOWED:
            self.throttled += 1
            return 429
        recent.append(now)
        everyone.append(now)
        self._failures[who] = recent
        self._failures.move_to_end(who)
        while len(self._failures) > TRACKED_ADDRESSES:
            self._failures.popitem(last=False)
        return 401
