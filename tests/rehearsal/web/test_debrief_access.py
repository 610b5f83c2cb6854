"""Debrief keys (rehearsal.web.debrief_access): a key opens its own session's debrief until it expires, and a
forged, altered, expired or other session's key, or a malformed header, opens nothing."""

from __future__ import annotations

import os

import pytest

from rehearsal.web.debrief_access import DEBRIEF_KEY, DebriefAccess, key_from_header


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_key_opens_its_session_until_it_expires_and_nothing_else():
    clock = Clock()
    access = DebriefAccess(b"k" * 32, clock)
    key = access.issue("s-1", seconds=60)
    assert access.check(key, "s-1") is None
    assert "another session" in access.check(key, "s-2")
    clock.now += 61
    assert "expired" in access.check(key, "s-1")


def test_forged_or_altered_keys_are_refused():
    clock = Clock()
    access = DebriefAccess(b"k" * 32, clock)
    key = access.issue("s-1", seconds=60)
    session, expires, mac = key.split(":")
    later = f"{session}:{int(expires) + 10**6}:{mac}"  # a longer life, the same MAC
    assert "not genuine" in access.check(later, "s-1")
    assert "not genuine" in access.check(f"s-2:{expires}:{mac}", "s-2")  # another session, the same MAC
    other = DebriefAccess(b"x" * 32, clock).issue("s-1")  # another server's secret
    assert "not genuine" in access.check(other, "s-1")
    for bad in ("", "nonsense", "a:b:c", "s-1:-5:00", f"s-1:{expires}:{mac}:x", "s:1:" + "0" * 300):
        assert access.check(bad, "s-1") is not None
    with pytest.raises(ValueError):
        access.issue("a:b")
    with pytest.raises(ValueError):
        DebriefAccess(b"short")


def test_the_header_scheme_and_the_secret_in_the_data_folder(tmp_path):
    assert key_from_header(b"Debrief s-1:5:ab") == "s-1:5:ab"
    assert key_from_header(b"Bearer abc") is None and key_from_header(None) is None
    assert key_from_header(b"Debrief ") is None
    first = DebriefAccess.from_data_dir(tmp_path).issue("s-1")
    assert DebriefAccess.from_data_dir(tmp_path).check(first, "s-1") is None  # the same secret, kept
    secret_file = tmp_path / DEBRIEF_KEY.name
    assert secret_file.is_file() and os.stat(secret_file).st_mode & 0o077 == 0  # owner-only
