"""The admin credential check shared by every admin endpoint (the app's /api/sessions and ops' /admin).

One ``AdminGate`` instance guards them all, so failures anywhere count against the same per-address
budget: a bearer credential compared in constant time; after ``AUTH_FAILURES_ALLOWED`` failures in
``AUTH_WINDOW_SECONDS`` an address gets 429 (even with the right credential) until the window passes.
The credential is never logged or echoed; a refusal carries no detail.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

__all__ = ["AUTH_FAILURES_ALLOWED", "AUTH_WINDOW_SECONDS", "TRACKED_ADDRESSES", "AdminGate", "denied_body"]

AUTH_FAILURES_ALLOWED = 5  # per address per window, then 429
AUTH_WINDOW_SECONDS = 60.0
TRACKED_ADDRESSES = 4096  # bounded memory: the oldest addresses are forgotten first


class _Request(Protocol):
    def getClientAddress(self) -> object: ...  # noqa: N802 (twisted's name)

    def getHeader(self, key: bytes) -> bytes | None: ...  # noqa: N802 (twisted's name)


def denied_body(status: int) -> dict[str, str]:
    """The JSON body of a refusal: no detail beyond the status."""
    return {"error": "unauthorized" if status == 401 else "too many attempts"}


class AdminGate:
    """Bearer-credential check in constant time, with a per-address failure limit (bounded memory)."""

    def __init__(self, credential: str, clock: Callable[[], float] = time.monotonic) -> None:
        if not credential:
            raise ValueError("the admin credential must not be empty")
        self._credential = credential.encode()
        self.clock = clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def __repr__(self) -> str:  # never show the credential
        return f"AdminGate(tracked={len(self._failures)})"

    def check(self, request: _Request) -> int | None:
        """None if allowed, else the status to answer (401 or 429)."""
        address = request.getClientAddress()
        who = getattr(address, "host", str(address))
        now = self.clock()
        recent = [t for t in self._failures.get(who, []) if now - t < AUTH_WINDOW_SECONDS]
        if len(recent) >= AUTH_FAILURES_ALLOWED:
            return 429
        header = (request.getHeader(b"authorization") or b"").decode("latin-1")
        given = header[7:].encode("latin-1") if header.startswith("Bearer ") else b""
        if given and hmac.compare_digest(given, self._credential):
            self._failures.pop(who, None)
            return None
        self._failures[who] = [*recent, now]
        self._failures.move_to_end(who)
        while len(self._failures) > TRACKED_ADDRESSES:
            self._failures.popitem(last=False)
        return 401
