"""The sampler's per-thread figures: CPU and run-queue wait per kind of server thread, and their window."""

import os
import threading

from loadtests.sampler import THREAD_ROLES, thread_times, thread_window
from rehearsal.ticking import name_os_thread


def test_thread_times_tell_the_reactor_room_threads_and_the_rest_apart():
    named, release = threading.Event(), threading.Event()

    def room():
        name_os_thread("room-s-test")
        sum(i * i for i in range(200_000))  # some CPU on the room thread
        named.set()
        release.wait(10)

    worker = threading.Thread(target=room)
    worker.start()
    try:
        assert named.wait(10)
        times = thread_times(os.getpid())
    finally:
        release.set()
        worker.join()
    assert set(times) == set(THREAD_ROLES)
    assert times["reactor"][0] > 0.0  # this (main) thread has run
    assert times["rooms"][0] > 0.0 and all(v >= 0.0 for pair in times.values() for v in pair)


def test_thread_times_of_a_process_that_is_gone_are_empty():
    assert thread_times(2**22 + 12345) == {}


def test_thread_window_gives_percent_of_a_core_per_kind():
    a = {"thread_cpu_seconds": {"reactor": 1.0, "rooms": 2.0}, "thread_wait_seconds": {"reactor": 0.5, "rooms": 1.0}}
    b = {"thread_cpu_seconds": {"reactor": 1.5, "rooms": 3.0}, "thread_wait_seconds": {"reactor": 0.5, "rooms": 3.0}}
    out = thread_window(a, b, 2.0)["thread_times"]
    assert out["reactor"] == {"cpu_percent": 25.0, "runqueue_wait_percent": 0.0}
    assert out["rooms"] == {"cpu_percent": 50.0, "runqueue_wait_percent": 100.0}
    assert out["other"] == {"cpu_percent": 0.0, "runqueue_wait_percent": 0.0}
    assert thread_window({}, b, 2.0) == {}
