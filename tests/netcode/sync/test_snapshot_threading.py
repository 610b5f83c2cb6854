"""The snapshot server encodes on one thread while another takes acks: acks never wait, nothing is lost."""

import queue
import threading

import numpy as np

from netcode.sync.snapshot_codec import SnapshotServer
from tests.netcode.sync.snapshot_helpers import Scene, connect


def test_an_ack_while_another_thread_holds_the_lock_is_queued_and_applied_by_the_next_holder():
    scene = Scene()
    server = SnapshotServer(scene.layout)
    dec = connect(server, 0)
    server.begin_frame(0.0, scene.surface(0), scene.rigid(0))
    seq = dec.decode(server.encode(0)).sequence
    held, release = threading.Event(), threading.Event()

    def encoder_busy():
        with server.lock:
            held.set()
            release.wait(10)

    busy = threading.Thread(target=encoder_busy)
    busy.start()
    assert held.wait(10)
    server.on_ack_fields(0, seq, 0)  # returns at once: queued
    assert server.clients[0].acked_seq.max() == -1
    release.set()
    busy.join(10)
    server.begin_frame(1 / 60, scene.surface(1), scene.rigid(1))
    server.encode(0)  # the next holder applies it first
    assert server.clients[0].acked_seq.min() == seq


def test_encoding_on_a_room_thread_while_the_reactor_acks_keeps_client_and_server_in_step():
    """Frames and snapshots on one thread, decoding and acks (one by one and as ``snap_ack`` fields) on this one at
    the same time (the encoder up to two frames ahead): every snapshot decodes against the baselines the server
    used, and at the end the client shows exactly what the server sent it."""
    scene = Scene(seed=3)
    server = SnapshotServer(scene.layout)
    decoders = {cid: connect(server, cid, budget=900 if cid else None) for cid in range(3)}
    out: queue.Queue = queue.Queue(maxsize=2)  # a few frames ahead at most, like a room thread a tick ahead

    def room_thread():
        for f in range(60):
            with server.lock:
                server.begin_frame(f / 60, scene.surface(f), scene.rigid(f))
                out.put([(cid, server.encode(cid)) for cid in decoders])
        out.put(None)

    worker = threading.Thread(target=room_thread)
    worker.start()
    while (batch := out.get(timeout=30)) is not None:
        for cid, data in batch:
            snap = decoders[cid].decode(data)
            if cid == 2:
                server.on_ack_fields(cid, snap.sequence, 0b11)
            else:
                server.on_ack(cid, snap.sequence)
    worker.join(30)
    for cid, dec in decoders.items():
        assert dec.rejected == 0 and dec.missing_baselines == 0
        received = dec.surface()[1]
        grid = dec.surface_grid()
        assert np.array_equal(grid[received], server.client_grid(cid)[received])
