"""What a mentor watches to steer a room, once a second: each participant's link (RTT, loss, snapshot age), the
force on each instrument they hold (N), and their skill metrics with pass/fail.

``room_health(live)`` builds the ``room_health`` event's detail (rehearsal.wire); the publisher sends it, on the
reactor thread between two steps (the skill tracker is the room thread's otherwise), to the room's mentors and
observers only: the people at the table do not need it.
"""

from __future__ import annotations

import math
from typing import Any

from rehearsal.hands import instrument_holder
from rehearsal.live_room import LiveRoom
from rehearsal.roles import Role

HEALTH_INTERVAL = 1.0  # s between two room_health events of a room
HEALTH_AUDIENCE = frozenset({Role.MENTOR, Role.OBSERVER})
MAX_HEALTH_PARTICIPANTS = 64  # listed per event (a room of many observers lists the first)


def _finite(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def room_health(live: LiveRoom) -> dict[str, Any]:
    """The ``room_health`` detail: ``participants`` [{participant, transport, rtt, loss, snapshot_age, forces}]
    and ``skills`` {participant: {passed, errors_passed, hands: {hand: {passed, metrics}}}}."""
    room, sync = live.room, live.sync
    tick_hz = room.scenario.tick_hz
    forces: dict[int, dict[str, float]] = {}
    for instrument, newtons in room.instrument_forces.items():
        participant, hand = instrument_holder(instrument)
        forces.setdefault(participant, {})[hand] = round(float(newtons), 3)
    participants = []
    for client in list(live.clients.values())[:MAX_HEALTH_PARTICIPANTS]:
        stats = client.link.stats()
        pid = client.identity.participant
        age = None
        if client.ack_base is not None and tick_hz > 0:
            age = max(sync.sequence - client.ack_base, 0) / tick_hz
        participants.append(
            {
                "participant": pid,
                "transport": client.link.transport,
                "rtt": None if stats is None else _finite(stats.rtt),
                "loss": None if stats is None else _finite(stats.packet_loss),
                "snapshot_age": _finite(age),
                "forces": forces.get(pid, {}),
            }
        )
    skills = {}
    for pid, entry in room.skills.report()["participants"].items():
        skills[pid] = {
            "passed": entry["passed"],
            "errors_passed": entry["errors_passed"],
            "hands": {
                hand: {"passed": h["passed"], "metrics": {k: _finite(v) for k, v in h["metrics"].items()}}
                for hand, h in entry["hands"].items()
            },
        }
    return {"participants": participants, "skills": skills}
