"""Faults, on a redis-server of this module's own that the tests stop and restart: a Redis that is down never
blocks the caller for long and loses nothing (the heartbeat keeps its changes and refills a restarted, empty
Redis: process, rooms and every code); placement waits for it and recovers; a Redis down for longer than the
wait gets a clear 503; the failover loop moves a silent process's rooms once even with two loops running."""

import threading
import time

import pytest

from rehearsal.fleet.directory import Beat, CodeRoute, Directory, ProcessInfo
from rehearsal.fleet.failover import FailoverLoop
from rehearsal.fleet.heartbeat import HeartbeatThread
from rehearsal.fleet.join_router import JoinRouter
from rehearsal.fleet.redis_process import RedisProcess


@pytest.fixture
def own_redis(tmp_path, redis_server):  # redis_server: the module's skip/fail rule for a missing binary
    with RedisProcess(tmp_path / "redis") as server:
        yield server


def _info(name="p1", capacity=2):
    return ProcessInfo(name, "127.0.0.1:40000", "http://127.0.0.1:1", f"/d/{name}", capacity, ("basic_skills",))


def test_a_heartbeat_through_an_outage_and_a_restart_loses_nothing(own_redis, namespace):
    directory = Directory.from_url(own_redis.url, namespace=namespace, ttl_seconds=2.0)
    stored = [CodeRoute(b"\x01" * 32, "s-a", time.time() + 600)]
    beats = HeartbeatThread(directory, interval=0.05, all_codes=lambda: list(stored))
    beats.offer(Beat(_info(), {"s-a": "basic_skills"}))
    assert beats.beat_once()
    assert directory.code_session(b"\x01" * 32) == "s-a"
    own_redis.stop()  # Redis goes away
    started = time.monotonic()
    beats.offer(Beat(_info(), {"s-a": "basic_skills", "s-b": "basic_skills"}))
    beats.room_closed("s-old")
    late = CodeRoute(b"\x02" * 32, "s-b", time.time() + 600)
    stored.append(late)  # the session store has it (written through on the reactor) ...
    beats.codes_added([late])  # ... and the heartbeat was told
    beats.offer(Beat(_info(), {"s-a": "basic_skills", "s-b": "basic_skills"}))
    assert not beats.beat_once()
    assert time.monotonic() - started < 3.0  # a failed beat is bounded by the socket timeouts
    assert beats.stats["failures"] == 1 and not beats.stats["connected"]
    own_redis.start()  # back, empty (no persistence)
    assert beats.beat_once()
    assert beats.stats["resyncs"] == 2  # the first beat, and the one after the outage
    assert directory.rooms_of("p1") == {"s-a", "s-b"}
    assert directory.route("s-b").process == "p1"
    assert directory.code_session(b"\x01" * 32) == "s-a" and directory.code_session(b"\x02" * 32) == "s-b"


def test_the_heartbeat_thread_never_blocks_the_offering_side(own_redis, namespace):
    directory = Directory.from_url(own_redis.url, namespace=namespace)
    beats = HeartbeatThread(directory, interval=0.05).start()
    own_redis.stop()
    worst = 0.0
    for i in range(200):  # what the reactor does every beat, while Redis is down
        started = time.perf_counter()
        beats.offer(Beat(_info(), {f"s-{i}": "basic_skills"}))
        beats.codes_added([CodeRoute(bytes([i % 256]) * 32, f"s-{i}", time.time() + 60)])
        beats.room_closed(f"s-{i - 1}")
        worst = max(worst, time.perf_counter() - started)
        time.sleep(0.002)
    beats.deregister_on_stop = False
    beats.stop()
    assert worst < 0.05  # a lock, never I/O (generous for a loaded machine)
    assert beats.stats["failures"] >= 1


def test_placement_waits_for_a_restarting_redis_and_recovers(own_redis, namespace):
    directory = Directory.from_url(own_redis.url, namespace=namespace, ttl_seconds=30)
    directory.beat(Beat(_info()))
    router = JoinRouter(directory, b"k" * 32, "cred", wait_seconds=15)
    own_redis.stop()

    def back_soon():
        time.sleep(1.0)
        own_redis.start()
        directory.beat(Beat(_info()))  # the process's next beat refills it

    threading.Thread(target=back_soon).start()
    started = time.monotonic()
    placement = router.place("basic_skills", [])  # what create_session waits in
    assert placement is not None and placement.process == "p1"
    assert 0.9 < time.monotonic() - started < 14
    assert router.counters["directory_retries"] + router.counters["waited_for_heartbeats"] > 0


def test_a_redis_down_longer_than_the_wait_is_a_clear_503(own_redis, namespace):
    directory = Directory.from_url(own_redis.url, namespace=namespace)
    router = JoinRouter(directory, b"k" * 32, "cred", wait_seconds=0.5)
    own_redis.stop()
    answer = router.join("/api/join", {"invite": "some-code", "name": "A"})
    assert answer.status == 503 and "directory is unavailable" in answer.payload["error"]
    assert router.create_session({"scenario": "basic_skills"}, "Bearer cred").status == 503


def test_two_failover_loops_move_a_silent_process_rooms_exactly_once(own_redis, namespace):
    directory = Directory.from_url(own_redis.url, namespace=namespace, ttl_seconds=0.5)
    directory.beat(Beat(_info("p1", capacity=8), {f"s-{i}": "basic_skills" for i in range(6)}))
    for name in ("p2", "p3"):
        directory.beat(Beat(_info(name, capacity=4)))
    keep_alive = threading.Event()

    def beat_p2_p3():
        while not keep_alive.is_set():
            for name in ("p2", "p3"):
                directory.beat(Beat(_info(name, capacity=4)))
            time.sleep(0.1)

    threading.Thread(target=beat_p2_p3, daemon=True).start()
    loops = [
        FailoverLoop(Directory.from_url(own_redis.url, namespace=namespace), interval=0.05).start() for _ in range(2)
    ]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and directory.rooms_of("p1"):
        time.sleep(0.05)
    time.sleep(0.3)
    for loop in loops:
        loop.stop()
    keep_alive.set()
    assert directory.rooms_of("p1") == set()
    orders = directory.take_orders("p2") + directory.take_orders("p3")
    assert sorted(o.session for o in orders) == [f"s-{i}" for i in range(6)]  # each once
    assert len(directory.rooms_of("p2")) == 3 and len(directory.rooms_of("p3")) == 3  # least loaded, in turn
    assert sum(loop.counters["reassigned"] for loop in loops) == 6
    assert "p1" not in {s["process"] for s in directory.status()}  # forgotten once empty
