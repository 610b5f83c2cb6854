"""The directory on a real redis-server: registration under a TTL, placement (atomic across join services),
routes of sessions and join codes, failover orders, a Redis that lost its data."""

import threading
import time

from rehearsal.fleet.directory import Beat, CodeRoute, Directory, ProcessInfo


def _info(process, capacity=2, scenarios=("basic_skills",)):
    return ProcessInfo(
        process,
        f"127.0.0.1:4{process[-1]}000",
        f"http://127.0.0.1:80{process[-1]}0",
        f"/d/{process}",
        capacity,
        scenarios,
    )


def test_a_process_registers_and_expires_with_its_heartbeat(directory):
    result = directory.beat(Beat(_info("p1")))
    assert result.fresh and result.lost == ()
    assert not directory.beat(Beat(_info("p1"))).fresh
    [status] = directory.status()
    assert status["process"] == "p1" and status["alive"] and status["capacity"] == 2
    time.sleep(1.2)  # the TTL is 1 s
    assert directory.dead_processes() == {"p1": set()}
    assert directory.forget("p1")
    assert directory.status() == []


def test_placement_reserves_confirms_and_routes(directory):
    directory.beat(Beat(_info("p1")))
    directory.beat(Beat(_info("p2")))
    first = directory.place("basic_skills")
    second = directory.place("basic_skills")
    assert {first.process, second.process} == {"p1", "p2"}  # a reservation counts: the next goes elsewhere
    directory.confirm(first, "s-one", "basic_skills")
    route = directory.route("s-one")
    assert route.process == first.process and route.alive and route.http == first.http
    assert directory.place("cholecystectomy") is None  # nobody offers it
    directory.cancel(second)
    assert directory.place("basic_skills").process == second.process


def test_two_join_services_placing_at_once_never_exceed_capacity(directory, redis_server, namespace):
    for p in ("p1", "p2", "p3"):
        directory.beat(Beat(_info(p, capacity=3)))
    placed, errors = [], []

    def join_service():
        own = Directory.from_url(redis_server.url, namespace=namespace)  # its own connections, like a process
        try:
            while True:
                placement = own.place("basic_skills")
                if placement is None:
                    return
                placed.append(placement)
        except Exception as exc:  # (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=join_service) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(placed) == 9  # 3 processes x 3 slots, each taken exactly once
    for p in ("p1", "p2", "p3"):
        assert sum(1 for x in placed if x.process == p) == 3
    assert len({x.reservation for x in placed}) == 9


def test_draining_stops_placement_on_a_process(directory):
    directory.beat(Beat(_info("p1")), ())
    directory.beat(Beat(_info("p2"), draining=True))
    assert {directory.place("basic_skills").process for _ in range(2)} == {"p1"}
    assert directory.place("basic_skills") is None


def test_closed_rooms_leave_and_codes_route_until_they_expire(directory):
    directory.beat(Beat(_info("p1"), rooms={"s-a": "basic_skills", "s-b": "basic_skills"}))
    assert directory.rooms_of("p1") == {"s-a", "s-b"}
    directory.beat(Beat(_info("p1"), rooms={"s-b": "basic_skills"}), closed=["s-a"])
    assert directory.rooms_of("p1") == {"s-b"} and directory.route("s-a") is None
    directory.publish_codes(
        [CodeRoute(b"\x01" * 32, "s-b", time.time() + 60), CodeRoute(b"\x02" * 32, "s-b", time.time() + 0.2)]
    )
    assert directory.code_session(b"\x01" * 32) == "s-b"
    time.sleep(0.4)
    assert directory.code_session(b"\x02" * 32) is None  # expired with the code
    assert directory.code_session(b"\x03" * 32) is None


def test_a_dead_process_rooms_are_reassigned_once_with_an_order(directory, redis_server, namespace):
    directory.beat(Beat(_info("p1"), rooms={"s-a": "basic_skills"}))
    directory.beat(Beat(_info("p2")))
    assert directory.reassign("s-a", "p1") is None  # p1 is alive: nothing moves
    directory.client.delete(directory.ns + "alive:p1")  # p1 stops beating: its TTL runs out
    assert directory.dead_processes() == {"p1": {"s-a"}}
    other = Directory.from_url(redis_server.url, namespace=namespace)
    order = directory.reassign("s-a", "p1")
    assert order is not None and order.source == "p1" and order.data_dir == "/d/p1"
    assert other.reassign("s-a", "p1") is None  # the second join service finds it moved
    assert directory.route("s-a").process == "p2" and directory.route("s-a").moving  # until p2 runs it
    assert directory.take_orders("p2") == [order]
    assert directory.take_orders("p2") == []
    directory.beat(Beat(_info("p2"), rooms={"s-a": "basic_skills"}))  # p2 resumed it
    assert not directory.route("s-a").moving
    assert directory.forget("p1")


def test_a_process_that_was_thought_dead_learns_its_room_was_lost(directory):
    directory.beat(Beat(_info("p1"), rooms={"s-a": "basic_skills"}))
    directory.beat(Beat(_info("p2")))
    directory.client.delete(directory.ns + "alive:p1")  # p1's heartbeat expired (a long stall)
    assert directory.reassign("s-a", "p1").session == "s-a"
    result = directory.beat(Beat(_info("p1"), rooms={"s-a": "basic_skills"}))
    assert result.lost == ("s-a",)
    assert directory.route("s-a").process == "p2"


def test_a_redis_that_lost_its_data_is_refilled_by_the_next_beat(directory):
    directory.beat(Beat(_info("p1"), rooms={"s-a": "basic_skills"}))
    directory.client.flushdb()
    result = directory.beat(Beat(_info("p1"), rooms={"s-a": "basic_skills"}))
    assert result.fresh
    assert directory.route("s-a").process == "p1"
