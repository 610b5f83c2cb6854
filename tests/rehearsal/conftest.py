"""Fixtures for the end-to-end tests: one rehearsal server subprocess per test module (loopback only)."""

from __future__ import annotations

import pytest

from rehearsal.bots import ServerProcess


@pytest.fixture(scope="module")
def e2e_server(tmp_path_factory):
    """`rehearsal.server.serve` in a subprocess (ports 0, data directory in tmp), stopped after the module.

    Tests share it: each creates its own session(s), so rooms and people never mix between tests."""
    proc = ServerProcess(tmp_path_factory.mktemp("e2e") / "data")
    try:
        proc.wait_listening()
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, proc.log()[-4000:]
