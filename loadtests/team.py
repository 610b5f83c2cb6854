"""Who is in a load-test room: roles and scripts for M participants and N observers, joined over HTTP.

``team_roles(participants, observers)``: participants are drivers (lead surgeon, then assistant
surgeons) and, from two participants on, one mentor who annotates (the reliable-event probe); observers
watch. ``join_team`` trades invites for connect tokens and returns the bot specs of ``loadtests.swarm``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from loadtests.server import LoadServer, join

# Who acknowledges snapshots without decoding them (loadtests.swarm.SnapshotAcker): the server sees the same
# clients while the swarm that shares its cores costs less. The lead surgeon of each room still decodes every
# snapshot (and counts any error), so a broken stream shows in the run's report.
ACKING_CLIENTS = {"watch": "ack", "mentor": "ack", "assistant_surgeon": "ack"}


def team_roles(participants: int, observers: int) -> list[tuple[str, str]]:
    """[(role, script)] for a room: drivers first, then the mentor, then observers."""
    participants = max(0, int(participants))
    drivers = participants - 1 if participants >= 2 else participants
    roles: list[tuple[str, str]] = []
    for i in range(drivers):
        roles.append(("lead_surgeon" if i == 0 else "assistant_surgeon", "drive"))
    if participants >= 2:
        roles.append(("mentor", "mentor"))
    roles.extend(("observer", "watch") for _ in range(max(0, int(observers))))
    return roles


def driver_place(d: int, drivers: int) -> tuple[float, float]:
    """(x, phase) of the ``drive`` script of driver d of ``drivers``: spread over x across the block, out of step."""
    return -0.015 + (0.03 * d / (drivers - 1) if drivers > 1 else 0.015), 1.3 * d


def join_team(
    server: LoadServer,
    room: dict[str, Any],
    room_number: int,
    roles: list[tuple[str, str]],
    *,
    prefix: str = "",
    via: list[tuple[str, int] | None] | None = None,
    record: set[int] | None = None,
    snapshots: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Join each (role, script) of ``roles`` to ``room``; returns swarm bot specs (drivers spread over x).

    ``snapshots``: role or script -> how those bots handle snapshots (``loadtests.swarm.SNAPSHOT_MODES``; the
    role wins; default the swarm's ``light``), e.g. ``{"watch": "ack"}`` for watchers that only acknowledge."""
    drivers = sum(1 for _, script in roles if script == "drive")
    specs, d = [], 0
    for i, (role, script) in enumerate(roles):
        name = f"{prefix}r{room_number}-{role[:4]}{i}"
        ticket = join(server, room, role, name)
        spec: dict[str, Any] = {
            "name": name,
            "role": role,
            "script": script,
            "token": ticket["token"],
            "room": room_number,
            "participant": ticket.get("participant"),
        }
        if script == "drive":
            spec["x"], spec["phase"] = driver_place(d, drivers)
            d += 1
        if via is not None and i < len(via) and via[i] is not None:
            spec["via"] = list(via[i])
            spec["lane"] = i
        if record is not None and i in record:
            spec["record"] = True
        mode = (snapshots or {}).get(role, (snapshots or {}).get(script))
        if mode is not None:
            spec["snapshots"] = mode
        specs.append(spec)
    return specs


INVITE_USES = 16  # each role's invite code of a session admits this many people (rehearsal.join_service)
WATCHING_ROLES = ("observer", "scrub_nurse", "mentor")


def watcher_roles(used: Counter, n: int) -> list[tuple[str, str]]:
    """``n`` more people who only watch, as observers while the observer invite lasts, then as scrub nurses
    and mentors (same snapshots); ``used`` (role -> people joined) is updated. Fewer if invites run out."""
    out: list[tuple[str, str]] = []
    for role in WATCHING_ROLES:
        while len(out) < n and used[role] < INVITE_USES:
            used[role] += 1
            out.append((role, "watch"))
    return out
