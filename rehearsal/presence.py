"""Presence: ``joined`` / ``left`` events coalesced per participant, and a bound on how often one reconnects.

A reconnect storm (a broken headset, or an attacker with a rejoin code) would otherwise flood the room with
events and make the server build the whole topology for every connection. Per (session, participant) this
keeps when the room was last told and what, so at most ``PRESENCE_EVENTS_PER_WINDOW`` events go out per
``PRESENCE_WINDOW`` and the latest state follows once the window has passed; and at most ``OPENS_PER_WINDOW``
connections are let in per window.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rehearsal.live_room import LiveRoom

PRESENCE_WINDOW = 5.0  # s: per participant, at most PRESENCE_EVENTS_PER_WINDOW joined/left events in this time
PRESENCE_EVENTS_PER_WINDOW = 4  # two reconnects; a storm beyond that is coalesced into its latest state
OPENS_PER_WINDOW = 10  # connections of one participant per PRESENCE_WINDOW; more are refused before any work


@dataclass(slots=True)
class _Told:
    """What the room was last told about one participant (``told``), the latest change and when it was told."""

    latest: tuple[str, dict[str, Any]] | None = None
    told: str | None = None
    times: deque[float] = field(default_factory=lambda: deque(maxlen=PRESENCE_EVENTS_PER_WINDOW))
    timer: Any = None
    opens: deque[float] = field(default_factory=lambda: deque(maxlen=OPENS_PER_WINDOW))  # connections lately


class Presence:
    """The per-participant presence state of every room (bounded by the rooms' participants; dropped with a room)."""

    def __init__(
        self,
        reactor: Any,
        clock: Callable[[], float],
        counters: Counter[str],
        is_live: Callable[[LiveRoom], bool],
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.counters = counters
        self._is_live = is_live  # is this still the server's room of its session (not closed meanwhile)?
        self._by_participant: dict[tuple[str, int], _Told] = {}

    def _of(self, session: str, participant: int) -> _Told:
        key = (session, participant)
        told = self._by_participant.get(key)
        if told is None:
            told = self._by_participant[key] = _Told()
        return told

    def drop_session(self, session: str) -> None:
        """A closed room's state goes, and its pending coalesced events with it."""
        for key in [k for k in self._by_participant if k[0] == session]:
            timer = self._by_participant.pop(key).timer
            if timer is not None and timer.active():
                timer.cancel()

    def may_open(self, session: str, participant: int) -> bool:
        """At most ``OPENS_PER_WINDOW`` connections of one participant per ``PRESENCE_WINDOW`` (a headset that
        reconnects more often than that is broken or an attacker; each open sends the whole topology)."""
        presence = self._of(session, participant)
        now = self.clock()
        opens = presence.opens
        while opens and now - opens[0] >= PRESENCE_WINDOW:
            opens.popleft()
        if len(opens) >= OPENS_PER_WINDOW:
            return False
        opens.append(now)
        return True

    def announce(self, live: LiveRoom, participant: int, kind: str, detail: dict[str, Any]) -> None:
        """A ``joined`` or ``left`` event, at most ``PRESENCE_EVENTS_PER_WINDOW`` per participant in
        ``PRESENCE_WINDOW``: beyond that (a reconnect storm) the changes are coalesced, and when the window
        has passed one event tells the room the participant's latest state if it differs from the last told."""
        presence = self._of(live.room.session, participant)
        now = self.clock()
        presence.latest = (kind, detail)
        times = presence.times
        while times and now - times[0] >= PRESENCE_WINDOW:
            times.popleft()
        if presence.timer is None and len(times) < PRESENCE_EVENTS_PER_WINDOW:
            self._tell(live, participant, presence, now)
            return
        self.counters["budget_refused_presence_events"] += 1  # coalesced, not sent
        if presence.timer is None:
            delay = max(0.0, PRESENCE_WINDOW - (now - times[0])) if times else 0.0
            presence.timer = self.reactor.callLater(delay, self._flush, live, participant)

    def _flush(self, live: LiveRoom, participant: int) -> None:
        presence = self._by_participant.get((live.room.session, participant))
        if presence is None:
            return
        presence.timer = None
        if live.ending or not self._is_live(live):
            return
        if presence.latest is not None and presence.latest[0] != presence.told:
            self._tell(live, participant, presence, self.clock())

    @staticmethod
    def _tell(live: LiveRoom, participant: int, presence: _Told, now: float) -> None:
        assert presence.latest is not None
        kind, detail = presence.latest
        live.broadcast_event(kind, by=participant, detail=detail)
        presence.told = kind
        presence.times.append(now)
