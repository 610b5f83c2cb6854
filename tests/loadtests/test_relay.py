"""The impairment relay: the sans-IO shaper's statistics on seeded runs, and real datagrams through a lane."""

from __future__ import annotations

import itertools
import select
import socket
import struct
import threading
import time

import pytest

from loadtests.relay import Impairment, Relay, Shaper


def offer_many(imp: Impairment, n: int = 20_000, seed: int = 3, gap: float = 0.001):
    shaper = Shaper(imp, seed=seed, start=0.0)
    out = []
    for i in range(n):
        for at, data in shaper.offer(i * gap, struct.pack("!I", i)):
            out.append((at, struct.unpack("!I", data)[0]))
        shaper.queued = 0  # nothing is really queued in this test
    return shaper, out


def test_random_loss_rate_is_as_configured_on_a_seeded_run():
    shaper, out = offer_many(Impairment(loss=0.05))
    assert shaper.stats["lost"] == 20_000 - len(out)
    assert 0.045 <= shaper.stats["lost"] / 20_000 <= 0.055


def test_a_seed_makes_the_decisions_repeatable_and_another_seed_changes_them():
    imp = Impairment(latency=0.05, jitter=0.01, loss=0.1, reorder=0.05, duplicate=0.05)
    assert offer_many(imp, 2000, seed=1)[1] == offer_many(imp, 2000, seed=1)[1]
    assert offer_many(imp, 2000, seed=1)[1] != offer_many(imp, 2000, seed=2)[1]


def test_latency_and_jitter_stay_in_bounds_and_jitter_alone_keeps_the_order():
    _, out = offer_many(Impairment(latency=0.075, jitter=0.015), 5000)
    delays = [at - i * 0.001 for at, i in out]
    assert min(delays) >= 0.075 - 0.015 - 1e-9 and max(delays) <= 0.075 + 0.015 + 0.015
    order = [i for _, i in sorted(out)]
    assert order == sorted(order)


def test_reordering_happens_at_about_the_configured_rate():
    shaper, out = offer_many(Impairment(latency=0.01, reorder=0.02, reorder_delay=0.04), 20_000)
    assert 0.015 <= shaper.stats["held_back"] / 20_000 <= 0.025
    arrival = [i for _, i in sorted(out)]
    overtaken = sum(1 for a, b in itertools.pairwise(arrival) if b < a)
    assert overtaken >= 0.8 * shaper.stats["held_back"]


def test_duplicates_happen_at_about_the_configured_rate():
    shaper, out = offer_many(Impairment(duplicate=0.1), 20_000)
    assert 0.09 <= shaper.stats["duplicated"] / 20_000 <= 0.11
    assert len(out) == 20_000 + shaper.stats["duplicated"]


def test_a_burst_drops_everything_inside_its_window_only():
    shaper, out = offer_many(Impairment(bursts=((2.0, 0.25),)), 5000)
    lost = sorted(set(range(5000)) - {i for _, i in out})
    assert lost == list(range(2000, 2250))
    assert shaper.stats["burst_dropped"] == 250
    manual = Shaper(Impairment(), seed=0)
    manual.burst(10.0, 0.5)
    assert manual.offer(10.2, b"x") == [] and manual.offer(10.6, b"x") != []


def test_queues_are_bounded():
    shaper = Shaper(Impairment(latency=1.0, max_queue=100), seed=0)
    kept = sum(len(shaper.offer(i * 1e-4, b"x")) for i in range(1000))
    assert kept == 100 and shaper.stats["queue_full"] == 900


@pytest.mark.parametrize(
    "bad",
    [
        {"loss": 2},
        {"loss": "x"},
        {"latency": -1},
        {"latency": float("nan")},
        {"bursts": [[1]]},
        {"bursts": [["a", 1]]},
        {"nope": 1},
        {"max_queue": 0},
        "not a mapping",
        [1, 2],
    ],
)
def test_bad_impairment_settings_are_a_value_error_naming_the_problem(bad):
    with pytest.raises(ValueError):
        Impairment.from_mapping(bad)


def test_the_relay_refuses_non_loopback_servers():
    with pytest.raises(ValueError):
        Relay(("10.0.0.1", 9))


def _echo_server(sock: socket.socket, stop: threading.Event) -> None:
    for _ in range(100_000):
        if stop.is_set():
            return
        ready, _, _ = select.select([sock], [], [], 0.05)
        if ready:
            data, addr = sock.recvfrom(2048)
            sock.sendto(data, addr)


def test_datagrams_through_a_lane_are_delayed_lost_reordered_and_duplicated_both_ways():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    stop = threading.Event()
    echo = threading.Thread(target=_echo_server, args=(server, stop), daemon=True)
    echo.start()
    imp = Impairment(latency=0.02, jitter=0.005, loss=0.1, reorder=0.1, reorder_delay=0.03, duplicate=0.1)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    received: list[tuple[int, float]] = []
    with Relay(("127.0.0.1", server.getsockname()[1]), max_seconds=30) as relay:
        lane = relay.add_lane(imp, seed=5)
        clean = relay.add_lane(Impairment(), seed=6)
        sent_at: dict[int, float] = {}

        def drain(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                select.select([client], [], [], max(0.0, min(0.01, deadline - time.monotonic())))
                for _ in range(100):
                    try:
                        data, addr = client.recvfrom(2048)
                    except BlockingIOError:
                        break
                    assert addr[:2] == lane.address
                    received.append((struct.unpack("!I", data)[0], time.monotonic()))

        for i in range(400):
            sent_at[i] = time.monotonic()
            client.sendto(struct.pack("!I", i), lane.address)
            drain(0.002)
        drain(0.5)
        client.sendto(b"ping", clean.address)
        ready, _, _ = select.select([client], [], [], 1.0)
        assert ready and client.recvfrom(2048)[0] == b"ping"  # a clean lane just forwards
        stats = relay.stats()
    stop.set()
    echo.join(timeout=2)
    numbers = [n for n, _ in received]
    unique = set(numbers)
    assert 0.6 * 400 <= len(unique) <= 0.95 * 400  # ~19% lost over the two ways
    assert len(numbers) > len(unique)  # duplicates
    assert any(b < a for a, b in itertools.pairwise(numbers))  # reordering
    rtts = [t - sent_at[n] for n, t in received]
    assert min(rtts) >= 0.03  # 2 x (20 - 5) ms at least
    assert stats[0]["up"]["lost"] > 0 and stats[0]["down"]["lost"] > 0 and stats[1]["up"].get("lost", 0) == 0
    server.close()
    client.close()
