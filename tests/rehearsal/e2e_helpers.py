"""Plumbing shared by the end-to-end tests (test_e2e_*.py): sessions, teams of headsets, metrics, topology.

The server runs in a subprocess (``rehearsal.bots.ServerProcess``, fixture ``e2e_server`` in conftest.py,
one per test module); everything here talks to it over loopback only (HTTP for the join API and /metrics,
UDP for the headsets) and every wait is bounded.
"""

from __future__ import annotations

import base64
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress

import numpy as np

from netcode.sync.snapshot_decode import DecodedSnapshot, SnapshotDecoder
from netcode.sync.snapshot_messages import parse_topology
from rehearsal.bots import Headset, ServerProcess, post, pump
from rehearsal.wire import DEVICE_RIGHT

__all__ = [
    "RecordingDecoder",
    "Team",
    "connect",
    "join",
    "metric",
    "metrics",
    "new_session",
    "pump",
    "saw_event",
    "scrape",
    "team_of",
    "triangle_set",
]


class RecordingDecoder(SnapshotDecoder):
    """A snapshot decoder that also keeps the snapshots it applied (to tell full records from deltas)."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[DecodedSnapshot] = []

    def on_message(self, data: bytes) -> list[DecodedSnapshot]:
        out = super().on_message(data)
        self.applied.extend(out)
        return out


@contextmanager
def running_server(data_dir) -> Iterator[ServerProcess]:
    """``rehearsal serve`` in a subprocess on ``data_dir`` (ports 0), stopped at the end; it must exit 0."""
    proc = ServerProcess(data_dir)
    try:
        proc.wait_listening()
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, proc.log()[-4000:]


def new_session(server: ServerProcess, scenario: str = "basic_skills") -> dict:
    """An admin creates a session; returns {"session", "scenario", "invites": {role: code}}."""
    status, body = post(server.http_port, "/api/sessions", {"scenario": scenario}, server.credential())
    assert status == 201, body
    return body


def join(server: ServerProcess, session: dict, role: str, name: str) -> dict:
    """Redeem the session's invite for `role`; returns the ticket."""
    status, ticket = post(server.http_port, "/api/join", {"invite": session["invites"][role], "name": name})
    assert status == 200, ticket
    assert ticket["role"] == role and ticket["session"] == session["session"]
    return ticket


def connect(ticket: dict, name: str = "", devices: Sequence[int] = (DEVICE_RIGHT,)) -> Headset:
    """A headset connecting with a ticket's token (its decoder records applied snapshots)."""
    headset = Headset(base64.b64decode(ticket["token"]), name=name or ticket["name"], devices=devices)
    headset.decoder = RecordingDecoder()  # before anything is received (only service() receives)
    headset.ticket = ticket
    return headset


class Team(list):
    """Headsets closed (disconnect sent) when the block ends, whatever happened."""

    def close(self) -> None:
        for headset in self:
            with suppress(OSError):
                headset.close()

    def __enter__(self) -> Team:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def team_of(server: ServerProcess, session: dict, *roles: str) -> Iterator[Team]:
    """Join and connect one headset per role (names "<role> <n>"), welcomed and receiving snapshots."""
    with Team(connect(join(server, session, role, f"{role} {i}")) for i, role in enumerate(roles)) as team:
        welcomed = pump(team, lambda: all(h.welcome and h.snapshots_applied >= 3 for h in team), 10.0)
        assert welcomed, server.log()[-4000:]
        yield team


def saw_event(headset: Headset, kind: str, predicate: Callable[[dict], bool] = lambda e: True) -> bool:
    return any(e["kind"] == kind and predicate(e) for e in headset.messages["event"])


def scrape(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def metrics(server: ServerProcess) -> dict[tuple[str, str], float]:
    """/metrics as {(name, labels): value}; labels is the text between the braces ("" when none)."""
    out = {}
    for line in scrape(server).splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        name, _, labels = key.partition("{")
        out[(name, labels.rstrip("}"))] = float(value)
    return out


def metric(values: dict[tuple[str, str], float], name: str, label: str | None = None) -> float:
    """One sample (label like 'reason="token_expired"'), or the sum over a family's samples (label None)."""
    if label is not None:
        return values.get((name, label), 0.0)
    return sum(v for (n, _), v in values.items() if n == name)


def _canonical(triangle: np.ndarray) -> tuple[int, int, int]:
    """A triangle as a tuple starting at its smallest vertex, the winding (orientation) kept."""
    a, b, c = (int(v) for v in triangle)
    i = (a, b, c).index(min(a, b, c))
    return (a, b, c)[i:] + (a, b, c)[:i]  # type: ignore[return-value]


def triangle_set(headset: Headset) -> set[tuple[int, int, int]]:
    """The surface triangles a client holds, replaying every `snap_topology` it received in order
    ("full" replaces the list; a cut or burn removes and adds triangles)."""
    triangles: set[tuple[int, int, int]] = set()
    for fields in headset.messages["snap_topology"]:
        update = parse_topology(fields)
        if update.cause == "full":
            triangles = set()
        for t in update.removed_triangles:
            triangles.discard(_canonical(t))
        for t in update.added_triangles:
            triangles.add(_canonical(t))
    return triangles
