"""Status shaping helpers: per-reason groups of a flat counter and nearest-rank quantiles."""

from collections import Counter

from rehearsal.status import by_prefix, nearest_rank


def test_by_prefix_carves_a_flat_counter():
    c = Counter({"dropped_bad_mac": 3, "dropped_replay": 1, "dropped_": 9, "connects": 2})
    assert by_prefix(c, "dropped_") == {"bad_mac": 3, "replay": 1}


def test_nearest_rank():
    assert nearest_rank([], 0.5) is None
    assert nearest_rank([4, 1, 3, 2], 0.5) == 2
    assert nearest_rank(range(1, 101), 0.99) == 99
    assert nearest_rank([7], 0.99) == 7


# --- health and readiness reflect frozen rooms; anonymous metrics name no session ------------------------

import pytest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from rehearsal.server import RehearsalServer  # noqa: E402
from rehearsal.settings import load_settings  # noqa: E402
from rehearsal.status import STUCK_STEP_SECONDS  # noqa: E402


@pytest.fixture
def server(tmp_path):
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    try:
        yield server
    finally:
        server.stop()


def test_a_room_publishing_far_below_its_tick_rate_makes_the_server_not_ready(server):
    session = server.create_session("basic_skills")
    ticker = server.rooms[session].ticker
    views = server.views
    views.sample_rooms(0.0)
    for _ in range(60):
        ticker.record_tick(0.005)
    views.sample_rooms(1.0)
    assert views.snapshot_rates[session] == 60 and server.ready() is True
    ticker.record_tick(0.005)  # one snapshot in the next second: frozen
    views.sample_rooms(2.0)
    reason = server.ready()
    assert isinstance(reason, str) and "frozen: 1 snapshots/s of 60" in reason and session not in reason
    for _ in range(60):
        ticker.record_tick(0.005)
    views.sample_rooms(3.0)
    assert server.ready() is True
    ticker.stop()  # a room whose ticker is stopped is not expected to tick
    views.sample_rooms(4.0)
    assert server.ready() is True


def test_a_room_thread_stuck_in_a_step_makes_the_server_unhealthy(server, monkeypatch):
    session = server.create_session("basic_skills")
    assert server.views.healthy() is True
    monkeypatch.setattr(server.rooms[session].ticker, "busy_for", lambda: STUCK_STEP_SECONDS + 1)
    reason = server.views.healthy()
    assert isinstance(reason, str) and "stuck" in reason and session not in reason


def test_anonymous_metrics_carry_opaque_room_labels_not_session_ids(server):
    session = server.create_session("basic_skills")
    server.counters["budget_refused_input_samples"] += 3
    exposition = server.metrics.exposition().decode()
    assert session not in exposition
    label = server.views.room_label(session)
    assert label.startswith("room-") and label == server.views.room_label(session)
    assert f'session="{label}"' in exposition
    assert {r["session"]: r["metrics_label"] for r in server.views.admin_rooms()} == {session: label}
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    refusals = {s.labels["reason"]: s.value for s in families["rehearsal_refusals"].samples}
    assert refusals == {"input_samples": 3.0}


def test_failures_are_exported_from_the_start_and_never_go_down(server):
    from rehearsal.status import FAILURES

    failures = server.ops_status()["failures"]
    assert failures == dict.fromkeys(FAILURES, 0)  # every kind has a series before its first failure
    server.counters["results_failed"] += 2
    server.counters["publish_failed"] += 1
    session = server.create_session("basic_skills")
    server.rooms[session].room.counters["step_failed"] += 3  # the room's thread counts its own
    failures = server.ops_status()["failures"]
    assert (failures["results_not_saved"], failures["publish_failed"], failures["physics_step_failed"]) == (2, 1, 3)
    server.sessions.discard_session(session)  # the room and its counters go; its failures stay counted
    assert server.ops_status()["failures"]["physics_step_failed"] == 3
    text = server.metrics.exposition().decode()
    values = {
        s.labels["what"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "rehearsal_failures"
        for s in f.samples
        if s.name == "rehearsal_failures_total"
    }
    assert values["results_not_saved"] == 2 and values["physics_step_failed"] == 3


def test_room_durations_become_cumulative_buckets_without_missing_or_repeating_a_tick():
    from collections import deque
    from types import SimpleNamespace

    from rehearsal.status import RoomDurations

    stats = SimpleNamespace(tick_seconds=deque(maxlen=4), timed_ticks=0, step_seconds=deque(maxlen=4), steps=0)
    rooms = {"s-1": SimpleNamespace(ticker=SimpleNamespace(stats=stats))}
    durations = RoomDurations(edges=(0.01, 0.02))

    def tick(seconds):
        stats.tick_seconds.append(seconds)
        stats.timed_ticks += 1

    for seconds in (0.005, 0.015, 0.5):
        tick(seconds)
    durations.update(rooms)
    durations.update(rooms)  # nothing new: nothing counted twice
    tick(0.02)  # exactly on an edge: counts in that bucket (le)
    durations.update(rooms)
    histogram = durations.histograms("s-1")["tick_histogram"]
    assert histogram["buckets"] == [[0.01, 1], [0.02, 3]] and histogram["count"] == 4
    assert histogram["sum"] == pytest.approx(0.54)
    assert durations.histograms("s-1")["physics_step_histogram"]["count"] == 0
    durations.update({})  # the room closed: forgotten
    assert durations.histograms("s-1") == {}


def test_a_rooms_tick_histogram_is_scraped(server):
    session = server.create_session("basic_skills")
    live = server.rooms[session]
    live.ticker.stop()
    for _ in range(3):
        server.sessions.on_report(live.room, live.room.advance(live.ticker.dt))
        live.ticker.record_tick(0.003)
    text = server.metrics.exposition().decode()
    label = server.views.room_label(session)
    assert f'rehearsal_room_tick_duration_seconds_bucket{{le="0.004",session="{label}"}} 3.0' in text
    assert f'rehearsal_room_tick_duration_seconds_count{{session="{label}"}} 3.0' in text
