"""The sampler's per-thread figures: CPU and run-queue wait per kind of server thread, and their window."""

import os
import threading

import numpy as np

from loadtests.sampler import THREAD_ROLES, scrape_overlap, thread_times, thread_window, window
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


def test_scrape_overlap_tells_whether_the_slowest_ticks_ran_during_the_samplers_scrapes():
    # 1,000 ticks of 2 ms every 10 ms; the ten of 30 ms start inside the scrapes (one each 100 ms, 5 ms long)
    starts = np.arange(1000) * 0.01
    seconds = np.full(1000, 0.002)
    slow = np.arange(0, 1000, 100)
    seconds[slow] = 0.03
    ticks = np.column_stack([starts + seconds, seconds, np.zeros(1000), np.zeros(1000)])
    rows = [{"t": t, "scrape": (t, t + 0.005)} for t in starts[slow]]
    out = scrape_overlap(rows, ticks, 0.0, 10.0)
    assert out["scrapes"] == 10 and out["scrape_ms_p50"] == 5.0
    assert out["slowest_1pct_during_share"] == 1.0 and out["ticks_during_share"] == 0.01
    assert scrape_overlap([], ticks, 0.0, 10.0) == {} and scrape_overlap(rows, ticks, 20.0, 30.0) == {}


def test_window_takes_the_metrics_from_the_rows_that_scraped_them():
    def row(t, cpu, ticks, scraped):
        return {"t": t, "cpu_seconds": cpu, "rss_bytes": 0, "fds": 3, "scraped": scraped, "ticks": ticks,
                "overruns": 0, "bytes_out": 1000 * ticks, "bytes_in": 0, "packets_in": 0,
                "substeps_min": 20, "substeps_max": 20}  # fmt: skip

    rows = [row(0.0, 0.0, 0, True), row(1.0, 0.5, 0, False), row(5.0, 2.5, 300, True), row(6.0, 3.0, 300, False)]
    out = window(rows, 0.0, 6.0)
    assert out["seconds"] == 6.0 and out["server_cpu_percent"] == 50.0  # /proc: every row
    assert out["ticks"] == 300 and out["egress_kbit_s"] == 8 * 1000 * 300 / 5 / 1000  # over the 5 s between scrapes
