"""Fixtures for the end-to-end tests: one rehearsal server subprocess per test module (loopback only)."""

from __future__ import annotations

import pytest

from tests.rehearsal.e2e_helpers import running_server


@pytest.fixture(scope="module")
def e2e_server(tmp_path_factory):
    """`rehearsal.server.serve` in a subprocess (ports 0, data directory in tmp), stopped after the module.

    Tests share it: each creates its own session(s), so rooms and people never mix between tests."""
    with running_server(tmp_path_factory.mktemp("e2e") / "data") as proc:
        yield proc
