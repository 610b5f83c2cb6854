"""ops.auth: the right credential always passes; wrong attempts are throttled per address and server-wide."""

from __future__ import annotations

from ops.auth import AUTH_FAILURES_ALLOWED, AUTH_WINDOW_SECONDS, GLOBAL_FAILURES_ALLOWED, TRACKED_ADDRESSES, AdminGate

CREDENTIAL = "c0ffee" * 8


class _Request:
    def __init__(self, host: str, auth: str | None) -> None:
        self.host, self.auth = host, auth

    def getClientAddress(self) -> object:  # noqa: N802
        return type("Addr", (), {"host": self.host})()

    def getHeader(self, key: bytes) -> bytes | None:  # noqa: N802
        return None if self.auth is None else self.auth.encode()


def _gate() -> tuple[AdminGate, list[float]]:
    now = [0.0]
    return AdminGate(CREDENTIAL, clock=lambda: now[0]), now


def test_an_attacker_at_the_admins_address_cannot_lock_the_admin_out() -> None:
    gate, _ = _gate()
    for _ in range(AUTH_FAILURES_ALLOWED):
        assert gate.check(_Request("10.0.0.1", "Bearer wrong")) == 401
    assert gate.check(_Request("10.0.0.1", "Bearer wrong")) == 429
    assert gate.check(_Request("10.0.0.1", f"Bearer {CREDENTIAL}")) is None


def test_many_addresses_hit_the_server_wide_budget_and_the_admin_still_gets_in() -> None:
    gate, now = _gate()
    answers = [
        gate.check(_Request(f"10.1.{i // 200}.{i % 200}", "Bearer wrong")) for i in range(GLOBAL_FAILURES_ALLOWED + 50)
    ]
    assert answers.count(401) == GLOBAL_FAILURES_ALLOWED and answers.count(429) == 50
    assert gate.check(_Request("10.9.9.9", "Bearer wrong")) == 429  # a fresh address is throttled too
    assert gate.check(_Request("10.9.9.9", f"Bearer {CREDENTIAL}")) is None
    assert gate.throttled == 51
    now[0] += AUTH_WINDOW_SECONDS  # the window passes: wrong attempts get their 401 again
    assert gate.check(_Request("10.9.9.9", "Bearer wrong")) == 401


def test_the_tracked_addresses_stay_bounded() -> None:
    gate, now = _gate()
    for i in range(TRACKED_ADDRESSES + 100):
        now[0] += AUTH_WINDOW_SECONDS / GLOBAL_FAILURES_ALLOWED * 1.01  # under the global budget
        gate.check(_Request(f"h{i}", "Bearer wrong"))
    assert len(gate._failures) == TRACKED_ADDRESSES
    assert CREDENTIAL not in repr(gate)
