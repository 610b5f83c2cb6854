"""Status shaping: plain dicts of the server's rooms and connections for the status line, ops and the admin API.

``status()`` is the status line's and health checks' view; ``ops_status()`` is in the shape ``ops.metrics``
reads (see its module doc; rooms appear under opaque labels, ``room_label``, never their session ids);
``ready()`` answers ``/readyz`` (not ready while a room is frozen: ``sample_rooms`` measures snapshot
rates), ``healthy()`` adds a stuck room thread to ``/healthz``; the ``admin_*`` methods are what the admin API
(``ops.admin_api``) may see and do, as plain callables. No secrets and, outside the admin's views, no names.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from rehearsal.connections import Connections
from rehearsal.live_room import LiveRoom
from rehearsal.sessions import Sessions
from rehearsal.wire import plain

log = logging.getLogger("rehearsal.status")

# What can go wrong inside the server, as exported (``rehearsal_failures_total{what=...}``) -> the counter
# that counts it (the server's ``counters``; ``physics_step_failed`` sums the rooms' own). Every one has an
# alert in ops/alerts.yml and a section in ops/RUNBOOK.md (tests/ops/test_rules.py checks both).
FAILURES = {
    "results_not_saved": "results_failed",  # a finished session's result or recording could not be kept
    "tick_loop_failed": "ticker_failed",  # a room's tick loop died
    "publish_failed": "publish_failed",  # publishing a tick (events, snapshots) raised
    "physics_step_failed": "step_failed",  # a room's physics step raised on its thread
    "command_failed": "commands_failed",  # a command handler raised
    "session_store_failed": "store_failed",  # the session store (SQLite) refused a write
    "session_close_hook_failed": "session_closed_failed",  # a hook run when a session closes raised
}
# ... and the browser side's, which the composition root adds from its WebSocket endpoint's counters.
WEB_FAILURES = ("websocket_receive_failed", "websocket_open_failed")
# Per-room tick and physics-step durations as cumulative histogram buckets (s; the ops tick buckets: fine
# around the 16.7 ms budget), so they aggregate across rooms and processes as quantile gauges cannot.
ROOM_DURATION_BUCKETS = (
    0.001,
    0.002,
    0.004,
    0.006,
    0.008,
    0.010,
    0.012,
    0.014,
    0.0167,
    0.020,
    0.025,
    0.033,
    0.050,
    0.100,
)
FROZEN_RATIO = 0.5  # a running room publishing under half its tick rate is frozen: /readyz says so
MIN_RATE_WINDOW = 0.5  # s: the shortest time a snapshot rate is measured over
STUCK_STEP_SECONDS = 5.0  # a room's thread in one step this long is stuck: /healthz says so


def nearest_rank(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank quantile of ``values`` (None when empty): ``nearest_rank([1, 2, 3, 4], 0.5) == 2``."""
    data = np.fromiter(values, np.float64)
    return float(np.quantile(data, q, method="inverted_cdf")) if data.size else None


def by_prefix(counters: Mapping[str, float], prefix: str) -> dict[str, float]:
    """``{"input_rejected_nonfinite": 3}``, ``"input_rejected_"`` -> ``{"nonfinite": 3}``."""
    return {k[len(prefix) :]: v for k, v in counters.items() if k.startswith(prefix) and len(k) > len(prefix)}


class RoomDurations:
    """Per room, cumulative bucket counts of its tick and physics-step durations, folded in from the
    ticker's window of recent durations (``TickStats``: the last 600) each time ``update`` runs, at least
    once a second (``sample_rooms``), so no duration is missed. Bounded: two arrays per live room."""

    def __init__(self, edges: tuple[float, ...] = ROOM_DURATION_BUCKETS) -> None:
        self.edges = np.asarray(edges, dtype=np.float64)
        # session -> {kind: [bucket counts (len(edges) + 1: the last is +Inf), sum, samples seen in the window]}
        self._rooms: dict[str, dict[str, list]] = {}

    def update(self, rooms: Mapping[str, LiveRoom]) -> None:
        for session in [s for s in self._rooms if s not in rooms]:
            del self._rooms[session]
        for session, live in rooms.items():
            stats = live.ticker.stats
            entry = self._rooms.setdefault(session, {})
            for kind, window, total in (
                ("tick", stats.tick_seconds, stats.timed_ticks),
                ("physics_step", stats.step_seconds, stats.steps),
            ):
                counts, _, seen = entry.setdefault(kind, [np.zeros(self.edges.size + 1, np.int64), 0.0, 0])
                new = min(total - seen, len(window))  # more than the window: the oldest are gone (a stall)
                if new > 0:
                    fresh = np.fromiter(list(window)[-new:], np.float64, count=new)
                    counts += np.bincount(np.searchsorted(self.edges, fresh), minlength=counts.size)
                    entry[kind][1] += float(fresh.sum())
                entry[kind][2] = total

    def histograms(self, session: str) -> dict[str, Any]:
        """``{"tick_histogram": {"buckets": [[le, cumulative count], ...], "sum", "count"},
        "physics_step_histogram": ...}`` (ops.metrics' room histogram shape)."""
        out = {}
        for kind, (counts, total, _) in self._rooms.get(session, {}).items():
            cumulative = np.cumsum(counts)
            out[f"{kind}_histogram"] = {
                "buckets": [[float(le), int(c)] for le, c in zip(self.edges, cumulative[:-1], strict=True)],
                "sum": total,
                "count": int(cumulative[-1]),
            }
        return out


class StatusViews:
    """The server's state as plain dicts (see the module doc).

    ``packet_stats()`` and ``drop_counts()`` come from the transports (the UDP transport's netcode counters)."""

    def __init__(
        self,
        sessions: Sessions,
        connections: Connections,
        *,
        counters: Counter[str],
        packet_stats: Callable[[], Mapping[str, int]] = dict,
        drop_counts: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self.sessions = sessions
        self.connections = connections
        self.counters = counters
        self.packet_stats = packet_stats
        self.drop_counts = drop_counts
        self.packet_loss = 0.0  # mean estimated loss over connections, refreshed by sample_connections
        self.snapshot_rates: dict[str, float] = {}  # session -> published ticks (snapshots) per second
        self._tick_samples: dict[str, tuple[float, int]] = {}  # session -> (time, timed ticks) at the last sample
        self._label_key = os.urandom(16)  # per process: metric labels of rooms are opaque (room_label)
        # physics step failures are counted per room: those of closed rooms are kept here, so the exported
        # total never goes down (one entry per live room, dropped when it closes)
        self._step_failures_seen: dict[str, int] = {}
        self.durations = RoomDurations()
        self._step_failures_closed = 0

    def room_label(self, session: str) -> str:
        """The opaque label of a room in anonymous /metrics (session ids are invitations' context: not for
        anyone who can scrape); the admin API shows which room has which label (``metrics_label``)."""
        digest = hmac.new(self._label_key, session.encode(), hashlib.sha256).hexdigest()
        return f"room-{digest[:12]}"

    def sample_rooms(self, now: float) -> None:
        """Each room's snapshot rate since the last sample (once a second, on the reactor: a reactor that
        stalls makes this late, and the rate it measures low, which is the point)."""
        rooms = self.sessions.rooms
        self.durations.update(rooms)
        for session in [s for s in self._tick_samples if s not in rooms]:
            del self._tick_samples[session]
            self.snapshot_rates.pop(session, None)
        for session, live in rooms.items():
            ticks = live.ticker.stats.timed_ticks
            previous = self._tick_samples.get(session)
            if previous is None or now - previous[0] >= MIN_RATE_WINDOW:
                if previous is not None:
                    self.snapshot_rates[session] = (ticks - previous[1]) / (now - previous[0])
                self._tick_samples[session] = (now, ticks)

    def frozen_rooms(self) -> list[str]:
        """Why rooms whose ticker runs are frozen: snapshot rate under ``FROZEN_RATIO`` of their tick rate."""
        out = []
        for session, live in self.sessions.rooms.items():
            rate = self.snapshot_rates.get(session)
            hz = live.room.scenario.tick_hz
            if live.ticker.running and rate is not None and rate < FROZEN_RATIO * hz:
                out.append(f"room {self.room_label(session)} frozen: {rate:.0f} snapshots/s of {hz}")
        return out

    def healthy(self) -> bool | str:
        """For /healthz (besides the reactor's heartbeat): False-like when a room's thread is stuck in a step."""
        for session, live in self.sessions.rooms.items():
            stuck = live.ticker.busy_for()
            if stuck > STUCK_STEP_SECONDS:
                return f"room {self.room_label(session)} thread stuck in a step for {stuck:.0f} s"
        return True

    def sample_connections(self, observe_rtt: Callable[[float], None]) -> None:
        """Every connection's RTT to ``observe_rtt``, and the mean packet loss (once a second)."""
        losses = []
        for client in list(self.connections.clients.values()):
            stats = client.link.stats()
            if stats is None:
                continue
            if stats.rtt is not None:
                observe_rtt(stats.rtt)
            losses.append(stats.packet_loss)
        self.packet_loss = float(np.mean(losses)) if losses else 0.0

    def status(self) -> dict[str, Any]:
        """Plain numbers for a status line, a health check or metrics (no secrets, no names)."""
        rooms = {}
        for session, live in self.sessions.rooms.items():
            stats = live.ticker.stats
            rooms[session] = {
                "state": live.room.state.value,
                "clients": len(live.clients),
                "frame": live.room.frame,
                "ticks": stats.ticks,
                "overruns": stats.overruns,
                "last_step_seconds": stats.last_step_seconds,
                "substeps": live.ticker.governor.substeps,
                "refusals": sum(v for k, v in live.room.counters.items() if k.startswith(("refused", "input_rej"))),
            }
        return {"rooms": rooms, "clients": len(self.connections.clients), "counters": dict(self.counters)}

    def ready(self) -> bool | str:
        """For /readyz: False-like reasons while draining or when most rooms cannot keep real time."""
        if self.sessions.draining:
            return "draining"
        rooms = self.sessions.rooms
        degraded = sum(live.ticker.governor.degraded for live in rooms.values())
        if rooms and degraded * 2 > len(rooms):
            return "overloaded"
        frozen = self.frozen_rooms()
        if frozen:
            return "; ".join(frozen[:4])
        return True

    def ops_status(self) -> dict[str, Any]:
        """The status in the shape ops.metrics reads (see its module docstring)."""
        rooms: Counter[str] = Counter()
        roles: Counter[str] = Counter()
        rejected: Counter[str] = Counter()
        solver: Counter[str] = Counter()
        fixtures: Counter[str] = Counter()
        substeps, ticks, overruns = {}, 0, 0
        live_rooms = self.sessions.rooms
        self.durations.update(live_rooms)  # up to this scrape
        for session, live in live_rooms.items():
            rooms[live.room.state.value] += 1
            for p in live.room.participants.values():
                if p.connected:
                    roles[p.identity.role.value] += 1
            rejected.update(by_prefix(live.room.counters, "input_rejected_"))
            solver.update(by_prefix(live.room.counters, "solver_"))
            fixtures.update(by_prefix(live.room.counters, "fixture_"))
            fixtures["refused_toggles"] += live.room.counters["refused_toggle_fixture"]
            substeps[self.room_label(session)] = live.ticker.governor.substeps
            ticks += live.ticker.stats.ticks
            overruns += live.ticker.stats.overruns
        stats = self.packet_stats()
        return {
            "rooms": dict(rooms),
            "participants": dict(roles),
            "substeps": substeps,
            "packets": {"in": stats.get("packets_in", 0), "out": stats.get("packets_out", 0)},
            "bytes": {"in": stats.get("bytes_in", 0), "out": stats.get("bytes_out", 0)},
            "drops": self.drop_counts(),
            "rejected_inputs": dict(rejected),
            "handshakes": {"accepted": self.counters["connects"], "refused": self.counters["connects_refused"]},
            "ticks": ticks,
            "tick_overruns": overruns,
            "solver": dict(solver),
            "fixtures": dict(fixtures),
            "packet_loss_ratio": self.packet_loss,
            "tick_budget_utilisation": max(
                (live.ticker.stats.last_tick_seconds / live.ticker.dt for live in live_rooms.values()), default=0.0
            ),
            "room_stats": {
                self.room_label(session): {**self.room_stats(live), **self.durations.histograms(session)}
                for session, live in live_rooms.items()
            },
            "refusals": by_prefix(self.counters, "budget_refused_"),
            "failures": self.failures(),
        }

    def failures(self) -> dict[str, int]:
        """Every kind of FAILURES with its count so far (0s included: a series exists before its first)."""
        rooms = self.sessions.rooms
        for session in [s for s in self._step_failures_seen if s not in rooms]:
            self._step_failures_closed += self._step_failures_seen.pop(session)
        for session, live in rooms.items():
            self._step_failures_seen[session] = live.room.counters["step_failed"]
        out = {what: int(self.counters[counter]) for what, counter in FAILURES.items()}
        out["physics_step_failed"] = self._step_failures_closed + sum(self._step_failures_seen.values())
        return out

    @staticmethod
    def room_stats(live: LiveRoom) -> dict[str, Any]:
        """One room in the ops.metrics ``room_stats`` shape (also the base of the admin API's views)."""
        stats, governor = live.ticker.stats, live.ticker.governor
        roles: Counter[str] = Counter(p.identity.role.value for p in live.room.participants.values() if p.connected)
        return {
            "scenario": live.room.scenario.name,
            "state": live.room.state.value,
            "participants": dict(roles),
            "substeps": governor.substeps,
            "degraded": governor.degraded,
            "ticks": stats.ticks,
            "tick_overruns": stats.overruns,
            "tick_seconds": {
                "p50": nearest_rank(stats.tick_seconds, 0.5),
                "p99": nearest_rank(stats.tick_seconds, 0.99),
                "sum": stats.tick_seconds_sum,
                "count": stats.timed_ticks,
            },
            "physics_step_seconds": {
                "p50": nearest_rank(stats.step_seconds, 0.5),
                "p99": nearest_rank(stats.step_seconds, 0.99),
                "sum": stats.step_seconds_sum,
                "count": stats.steps,
            },
        }

    # --- the admin API -----------------------------------------------------------------------------------

    def admin_rooms(self) -> list[dict[str, Any]]:
        """Every room: state, scenario, participants by role, tick p99 (seconds, None before a tick)."""
        rooms = []
        for session, live in sorted(self.sessions.rooms.items()):
            stats = self.room_stats(live)
            rooms.append(
                {
                    "session": session,
                    "metrics_label": self.room_label(session),
                    "state": stats["state"],
                    "scenario": stats["scenario"],
                    "participants": stats["participants"],
                    "tick_p99_seconds": stats["tick_seconds"]["p99"],
                    "degraded": stats["degraded"],
                    "ending": live.ending,
                }
            )
        return rooms

    def admin_room(self, session: str) -> dict[str, Any] | None:
        """One room in detail (None if unknown). Display names are shown to the admin, never logged."""
        live = self.sessions.rooms.get(session)
        if live is None:
            return None
        room, stats, ticker = live.room, self.room_stats(live), live.ticker
        return {
            "session": session,
            "metrics_label": self.room_label(session),
            "state": stats["state"],
            "scenario": stats["scenario"],
            "ending": live.ending,
            "frame": room.frame,
            "participants": [
                {"id": pid, "role": p.identity.role.value, "name": p.identity.name, "connected": p.connected}
                for pid, p in sorted(room.participants.items())
            ],
            "clients": len(live.clients),
            "substeps": {
                "current": ticker.governor.substeps,
                "nominal": ticker.governor.nominal,
                "minimum": ticker.governor.minimum,
                "degraded": ticker.governor.degraded,
            },
            "tick": {
                "budget_seconds": ticker.dt,
                "p50_seconds": stats["tick_seconds"]["p50"],
                "p99_seconds": stats["tick_seconds"]["p99"],
                "ticks": ticker.stats.ticks,
                "overruns": ticker.stats.overruns,
            },
            "physics_step": {
                "p50_seconds": stats["physics_step_seconds"]["p50"],
                "p99_seconds": stats["physics_step_seconds"]["p99"],
                "last_seconds": ticker.stats.last_step_seconds,
                "steps": ticker.stats.steps,
                "failed": room.counters["step_failed"],
            },
            **plain(room.progress()),  # steps with their status, current_step, complications
            "counters": dict(room.counters),
        }

    def _live(self, session: str) -> LiveRoom:
        live = self.sessions.rooms.get(session)
        if live is None:
            raise LookupError(f"no room {session!r}")
        return live

    def admin_end_room(self, session: str) -> dict[str, Any]:
        """End a room now (as a mentor would: everybody is told, records kept). Ending twice is harmless."""
        live = self._live(session)
        log.info("session %s: ended by an administrator", session)
        self.sessions.end_room(session)
        return {"session": session, "state": live.room.state.value}

    def admin_remove_participant(self, session: str, participant: int) -> dict[str, Any]:
        """Remove a participant for good (as a mentor would); they are told, then disconnected."""
        live = self._live(session)
        if not live.room.remove(participant):
            raise LookupError(f"no participant {participant} in room {session!r}")
        log.info("session %s: participant %d removed by an administrator", session, participant)
        live.broadcast_event("remove_participant", detail={"who": participant, "by_admin": True})
        self.connections.send_away(session, participant, "removed from the session by an administrator")
        return {"session": session, "participant": participant, "removed": True}
