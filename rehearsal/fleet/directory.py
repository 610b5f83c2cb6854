"""The room directory on Redis: processes, their rooms, placements in flight, join codes, adoption orders.

Keys (under a namespace, ``rehearsal:fleet:`` by default, so several fleets or tests share one Redis):

* ``procs`` (set): every process that registered and was not yet forgotten.
* ``proc:<P>`` (hash): how to reach it (``udp`` public address, ``http`` base URL), its ``data_dir``,
  ``capacity`` (rooms), ``scenarios`` (JSON list), ``draining`` and ``healthy`` (0/1), ``pid``.
* ``alive:<P>`` (string, TTL): the heartbeat. When it expires the process is dead to the fleet.
* ``rooms:<P>`` (set): the sessions it hosts. ``room:<S>`` (hash): ``owner`` and ``scenario`` of a session.
* ``pending:<P>`` (sorted set): placements reserved on it (id -> expiry in ms), counted as rooms until the
  join service confirms them (the room exists) or they expire.
* ``code:<digest>`` (string, expires with the code): the session a join code belongs to (the keyed hash
  only, as the session store keeps it; never a code).
* ``inbox:<P>`` (list): adoption orders, rooms of a dead process that P is to resume from their checkpoints.

Every call may raise ``redis.RedisError`` (or ``OSError``): callers run on their own threads, never on the
reactor, and treat an outage as "try again". Placement and reassignment are optimistic transactions
(WATCH/MULTI): two join services placing at once never both take the last slot of a process; the loser
retries on fresh data. The heartbeat is one Lua script (atomic, one round trip). Single-instance Redis
(the key names are built inside the script, which Redis Cluster would not route).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from rehearsal.fleet.placement import Candidate, choose

DEFAULT_NAMESPACE = "rehearsal:fleet:"
DEFAULT_TTL_SECONDS = 1.5  # a process missing three beats (0.5 s apart) is dead
RESERVATION_SECONDS = 30.0  # a placement not confirmed by then frees its slot
MAX_TRANSACTION_ATTEMPTS = 50  # optimistic retries under contention before giving up (DirectoryBusyError)
SOCKET_TIMEOUT_SECONDS = 1.0  # a Redis that does not answer is down for this call, not a hang


class DirectoryBusyError(RuntimeError):
    """A transaction lost to concurrent writers ``MAX_TRANSACTION_ATTEMPTS`` times in a row."""


@dataclass(frozen=True)
class ProcessInfo:
    """What a game-server process tells the fleet about itself."""

    process: str
    udp: str  # the public address its connect tokens name
    http: str  # base URL of its HTTP API (join, rejoin, sessions)
    data_dir: str  # where its checkpoints and session store live (readable by every process: FLEET.md)
    capacity: int  # rooms it may run
    scenarios: tuple[str, ...]
    pid: int = 0  # its operating-system process id (for the operator and the load runs; 0: not said)


@dataclass(frozen=True)
class Beat:
    """One heartbeat: who, which rooms (session -> scenario) and in what state."""

    info: ProcessInfo
    rooms: dict[str, str] = field(default_factory=dict)
    draining: bool = False
    healthy: bool = True


@dataclass(frozen=True)
class BeatResult:
    fresh: bool  # the directory did not know the process (first beat, or Redis lost its data): resync codes
    lost: tuple[str, ...]  # rooms this process runs that the directory gave to another (it was thought dead)


@dataclass(frozen=True)
class Placement:
    """A slot reserved on a process for a new room (confirm it once the room exists, or cancel it)."""

    process: str
    reservation: str
    http: str
    udp: str


@dataclass(frozen=True)
class Route:
    """Where a session's room is and whether that process is alive. ``moving``: the room was given to this
    process (failover) and it has not yet said in a heartbeat that it runs it."""

    session: str
    process: str
    http: str
    udp: str
    alive: bool
    draining: bool
    moving: bool = False


@dataclass(frozen=True)
class Order:
    """Resume ``session`` (scenario ``scenario``) from the checkpoint that ``source`` left in ``data_dir``."""

    session: str
    scenario: str
    source: str
    data_dir: str

    def to_json(self) -> str:
        return json.dumps(
            {"session": self.session, "scenario": self.scenario, "source": self.source, "data_dir": self.data_dir}
        )

    @classmethod
    def from_json(cls, text: str) -> Order:
        data = json.loads(text)
        return cls(str(data["session"]), str(data["scenario"]), str(data["source"]), str(data["data_dir"]))


@dataclass(frozen=True)
class CodeRoute:
    """A join code's keyed hash, its session, and when it expires (wall-clock seconds)."""

    digest: bytes
    session: str
    expires_at: float


# One heartbeat: ARGV = namespace, process, ttl_ms, info (JSON), rooms (JSON [[session, scenario], ...]),
# closed (JSON [session, ...]). Registers the process, refreshes its TTL, releases the rooms it closed, claims
# its rooms the directory has no owner for (Redis restarted), marks the rooms it runs as arrived (no longer
# ``moving``) and returns {fresh, lost rooms}.
_BEAT = """
local ns, p, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local info = cjson.decode(ARGV[4])
local fresh = redis.call('EXISTS', ns .. 'proc:' .. p) == 0
redis.call('HSET', ns .. 'proc:' .. p, 'udp', info.udp, 'http', info.http, 'data_dir', info.data_dir,
    'capacity', info.capacity, 'scenarios', info.scenarios, 'draining', info.draining, 'healthy', info.healthy,
    'pid', info.pid)
redis.call('SET', ns .. 'alive:' .. p, '1', 'PX', ttl)
redis.call('SADD', ns .. 'procs', p)
for _, s in ipairs(cjson.decode(ARGV[6])) do
    if redis.call('HGET', ns .. 'room:' .. s, 'owner') == p then redis.call('DEL', ns .. 'room:' .. s) end
    redis.call('SREM', ns .. 'rooms:' .. p, s)
end
local lost = {}
for _, r in ipairs(cjson.decode(ARGV[5])) do
    local key = ns .. 'room:' .. r[1]
    local owner = redis.call('HGET', key, 'owner')
    if not owner then
        redis.call('HSET', key, 'owner', p, 'scenario', r[2])
        owner = p
    end
    if owner == p then
        redis.call('SADD', ns .. 'rooms:' .. p, r[1])
        redis.call('HDEL', key, 'moving')
    else
        table.insert(lost, r[1])
    end
end
return {fresh and 1 or 0, lost}
"""


def _flag(value: Any) -> bool:
    return str(value) == "1"


class Directory:
    """The fleet's directory on one Redis (see the module doc); thread-safe (redis-py pools connections)."""

    def __init__(
        self, client: redis.Redis, namespace: str = DEFAULT_NAMESPACE, ttl_seconds: float = DEFAULT_TTL_SECONDS
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("the heartbeat TTL must be positive")
        self.client = client
        self.ns = namespace
        self.ttl_ms = int(ttl_seconds * 1000)
        self._beat = client.register_script(_BEAT)

    @classmethod
    def from_url(
        cls, url: str, namespace: str = DEFAULT_NAMESPACE, ttl_seconds: float = DEFAULT_TTL_SECONDS
    ) -> Directory:
        """A directory on the Redis at ``url`` (``redis://host:port/db``), with short socket timeouts."""
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        )
        return cls(client, namespace, ttl_seconds)

    def __repr__(self) -> str:
        return f"Directory(namespace={self.ns!r})"

    def _k(self, *parts: str) -> str:
        return self.ns + ":".join(parts)

    # --- a game-server process ---------------------------------------------------------------------------

    def beat(self, beat: Beat, closed: Iterable[str] = ()) -> BeatResult:
        info = beat.info
        payload = {
            "udp": info.udp,
            "http": info.http,
            "data_dir": info.data_dir,
            "capacity": int(info.capacity),
            "scenarios": json.dumps(sorted(info.scenarios)),
            "draining": "1" if beat.draining else "0",
            "healthy": "1" if beat.healthy else "0",
            "pid": int(info.pid),
        }
        rooms = [[s, scenario] for s, scenario in beat.rooms.items()]
        fresh, lost = self._beat(
            args=[self.ns, info.process, self.ttl_ms, json.dumps(payload), json.dumps(rooms), json.dumps(list(closed))]
        )
        return BeatResult(bool(fresh), tuple(lost or ()))

    def deregister(self, process: str) -> None:
        """A clean stop: the process and what is left of its rooms leave the directory."""
        rooms = self.client.smembers(self._k("rooms", process))
        pipe = self.client.pipeline()
        for session in rooms:
            pipe.delete(self._k("room", session))
        pipe.delete(
            self._k("alive", process), self._k("proc", process), self._k("rooms", process), self._k("pending", process)
        )
        pipe.delete(self._k("inbox", process))
        pipe.srem(self._k("procs"), process)
        pipe.execute()

    def publish_codes(self, routes: Sequence[CodeRoute]) -> None:
        """Each code's session, expiring with the code (so the directory never holds a dead code for long)."""
        if not routes:
            return
        pipe = self.client.pipeline(transaction=False)
        for route in routes:
            pipe.set(self._k("code", route.digest.hex()), route.session, pxat=max(int(route.expires_at * 1000), 1))
        pipe.execute()

    def take_orders(self, process: str, limit: int = 16) -> list[Order]:
        """The adoption orders waiting for ``process`` (removed from its inbox)."""
        raw = self.client.lpop(self._k("inbox", process), limit) or []
        orders = []
        for text in raw:
            try:
                orders.append(Order.from_json(text))
            except (ValueError, KeyError, TypeError):
                continue  # not ours: dropped
        return orders

    # --- what the directory knows ------------------------------------------------------------------------

    def _now_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def candidates(self, processes: Iterable[str] | None = None) -> list[Candidate]:
        """Every registered process as placement sees it."""
        procs = sorted(self.client.smembers(self._k("procs")) if processes is None else processes)
        if not procs:
            return []
        now = self._now_ms()
        pipe = self.client.pipeline(transaction=False)
        for p in procs:
            pipe.hgetall(self._k("proc", p))
            pipe.scard(self._k("rooms", p))
            pipe.zcount(self._k("pending", p), now, "+inf")
            pipe.exists(self._k("alive", p))
        raw = pipe.execute()
        out = []
        for i, p in enumerate(procs):
            meta, rooms, pending, alive = raw[4 * i : 4 * i + 4]
            try:
                scenarios = frozenset(json.loads(meta.get("scenarios", "[]")))
                capacity = int(meta.get("capacity", 0))
            except (ValueError, TypeError):
                scenarios, capacity = frozenset(), 0
            out.append(
                Candidate(
                    process=p,
                    capacity=capacity,
                    rooms=int(rooms),
                    pending=int(pending),
                    alive=bool(alive),
                    draining=_flag(meta.get("draining")),
                    scenarios=scenarios,
                )
            )
        return out

    def process(self, process: str) -> dict[str, str]:
        """A process's registration (empty when unknown)."""
        return dict(self.client.hgetall(self._k("proc", process)))

    def rooms_of(self, process: str) -> set[str]:
        return set(self.client.smembers(self._k("rooms", process)))

    def route(self, session: str) -> Route | None:
        """Where ``session`` runs, or None if the directory has no such room."""
        room = self.client.hgetall(self._k("room", session))
        owner = room.get("owner")
        if owner is None:
            return None
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self._k("proc", owner))
        pipe.exists(self._k("alive", owner))
        meta, alive = pipe.execute()
        return Route(
            session,
            owner,
            meta.get("http", ""),
            meta.get("udp", ""),
            bool(alive),
            _flag(meta.get("draining")),
            _flag(room.get("moving")),
        )

    def code_session(self, digest: bytes) -> str | None:
        """The session of a join code, by its keyed hash (None: unknown or expired)."""
        return self.client.get(self._k("code", digest.hex()))

    # --- placing ------------------------------------------------------------------------------------------

    def place(
        self, scenario: str, *, exclude: Iterable[str] = (), reservation_seconds: float = RESERVATION_SECONDS
    ) -> Placement | None:
        """Reserve a slot for a new room of ``scenario`` on the least-loaded process that can take it (None: no
        process can). Atomic against every other placement and heartbeat (WATCH on what the choice read)."""
        skip = set(exclude)
        for _ in range(MAX_TRANSACTION_ATTEMPTS):
            with self.client.pipeline() as pipe:
                try:
                    procs = self._watch_candidates(pipe)
                    chosen = choose(self.candidates(procs), scenario, exclude=skip)
                    if chosen is None:
                        pipe.unwatch()
                        return None
                    now = self._now_ms()
                    reservation = secrets.token_hex(8)
                    meta = self.client.hgetall(self._k("proc", chosen.process))
                    pipe.multi()
                    pending = self._k("pending", chosen.process)
                    pipe.zremrangebyscore(pending, "-inf", now)
                    pipe.zadd(pending, {reservation: now + int(reservation_seconds * 1000)})
                    pipe.execute()
                    return Placement(chosen.process, reservation, meta.get("http", ""), meta.get("udp", ""))
                except redis.WatchError:
                    continue
        raise DirectoryBusyError("placement kept losing to concurrent writers")

    def _watch_candidates(self, pipe: Any) -> list[str]:
        """WATCH the process list and every key a placement reads; returns the processes."""
        pipe.watch(self._k("procs"))
        procs = sorted(pipe.smembers(self._k("procs")))
        keys = []
        for p in procs:
            keys += [self._k("proc", p), self._k("rooms", p), self._k("pending", p), self._k("alive", p)]
        if keys:
            pipe.watch(*keys)
        return procs

    def confirm(self, placement: Placement, session: str, scenario: str) -> None:
        """The placed room exists: it counts as the process's room, and its session routes there."""
        pipe = self.client.pipeline()
        pipe.zrem(self._k("pending", placement.process), placement.reservation)
        pipe.hset(self._k("room", session), mapping={"owner": placement.process, "scenario": scenario})
        pipe.sadd(self._k("rooms", placement.process), session)
        pipe.execute()

    def cancel(self, placement: Placement) -> None:
        """The placed room was not made: free its slot now rather than at expiry."""
        self.client.zrem(self._k("pending", placement.process), placement.reservation)

    # --- failover -----------------------------------------------------------------------------------------

    def dead_processes(self) -> dict[str, set[str]]:
        """Registered processes whose heartbeat expired, with the rooms they still hold."""
        procs = sorted(self.client.smembers(self._k("procs")))
        if not procs:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for p in procs:
            pipe.exists(self._k("alive", p))
        alive = pipe.execute()
        return {p: self.rooms_of(p) for p, up in zip(procs, alive, strict=True) if not up}

    def forget(self, process: str) -> bool:
        """Drop a dead process that holds no rooms any more (True if it was dropped)."""
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(self._k("alive", process), self._k("rooms", process))
                if pipe.exists(self._k("alive", process)) or pipe.scard(self._k("rooms", process)):
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.srem(self._k("procs"), process)
                pipe.delete(self._k("proc", process), self._k("pending", process), self._k("inbox", process))
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def reassign(self, session: str, dead: str) -> Order | None:
        """Give a dead process's room to the least-loaded live process that can take its scenario, and put an
        adoption order in that process's inbox. None when the room is no longer the dead process's (another join
        service moved it, or it came back) or no process can take it now (try again later)."""
        room_key = self._k("room", session)
        for _ in range(MAX_TRANSACTION_ATTEMPTS):
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(room_key, self._k("alive", dead))
                    room = pipe.hgetall(room_key)
                    if pipe.exists(self._k("alive", dead)) or room.get("owner", dead) != dead:
                        pipe.unwatch()
                        return None
                    scenario = room.get("scenario", "")
                    procs = self._watch_candidates(pipe)
                    chosen = choose(self.candidates(procs), scenario, exclude={dead})
                    source = self.client.hgetall(self._k("proc", dead))
                    if chosen is None:
                        pipe.unwatch()
                        return None
                    order = Order(session, scenario, dead, source.get("data_dir", ""))
                    pipe.multi()
                    pipe.hset(room_key, mapping={"owner": chosen.process, "scenario": scenario, "moving": "1"})
                    pipe.srem(self._k("rooms", dead), session)
                    pipe.sadd(self._k("rooms", chosen.process), session)
                    pipe.rpush(self._k("inbox", chosen.process), order.to_json())
                    pipe.execute()
                    return order
                except redis.WatchError:
                    continue
        raise DirectoryBusyError("reassignment kept losing to concurrent writers")

    def drop_room(self, session: str, process: str) -> None:
        """A room its process could not take on (an adoption that failed): it leaves the directory."""
        pipe = self.client.pipeline()
        pipe.srem(self._k("rooms", process), session)
        pipe.delete(self._k("room", session))
        pipe.execute()

    def status(self) -> list[dict[str, Any]]:
        """Every process as plain dicts (for the join service's /api/fleet and the load runs)."""
        return [
            {
                "process": c.process,
                "alive": c.alive,
                "draining": c.draining,
                "capacity": c.capacity,
                "rooms": c.rooms,
                "pending": c.pending,
                "scenarios": sorted(c.scenarios),
            }
            for c in self.candidates()
        ]
