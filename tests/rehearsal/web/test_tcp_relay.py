"""rehearsal.web.tcp_relay: the loss-as-delay rule on its own, and the relay carrying a stream intact, late."""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from rehearsal.web.tcp_relay import MSS, Shaper, TcpRelay


def test_the_shaper_delays_keeps_order_and_holds_back_a_lost_segments_chunk():
    shaper = Shaper(delay=0.05, loss=0.0, retransmit=0.3, rng=random.Random(1))
    assert shaper.offer(1.0, 100) == pytest.approx(1.05)
    lossy = Shaper(delay=0.05, loss=0.999, retransmit=0.3, rng=random.Random(1))
    late = lossy.offer(1.0, 100)
    assert late == pytest.approx(1.35)
    lossy.loss = 0.0
    assert lossy.offer(1.01, 100) == pytest.approx(1.35)  # behind the lost one: head-of-line blocked
    assert lossy.offer(2.0, 100) == pytest.approx(2.05)


def test_the_shapers_loss_is_per_segment():
    shaper = Shaper(delay=0.0, loss=0.02, retransmit=0.3, rng=random.Random(4))
    for i in range(20_000):
        shaper.offer(float(i), 10 * MSS)  # ten segments a chunk: 1 - 0.98^10 = 18% of chunks hit
    assert shaper.lost / shaper.chunks == pytest.approx(1 - 0.98**10, abs=0.02)


def test_the_relay_carries_a_stream_intact_and_late():
    upstream = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def echo() -> None:
        conn, _ = upstream.accept()
        with conn:
            while data := conn.recv(65536):
                received.append(data)
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    payload = bytes(range(256)) * 400
    with TcpRelay(upstream.getsockname()[1], rtt=0.1, loss=0.05, seed=3) as relay:
        client = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        t0 = time.monotonic()
        client.sendall(payload)
        back = b""
        while len(back) < len(payload):
            back += client.recv(65536)
        elapsed = time.monotonic() - t0
        client.close()
        assert relay.stats()["chunks"] >= 2
    upstream.close()
    assert back == payload and b"".join(received) == payload
    assert elapsed >= 0.1  # the round trip it adds
    with pytest.raises(ValueError):
        TcpRelay(1, rtt=-1, loss=0)
