"""The composition root feeds ops: status in the metrics shape, readiness, and a scrape that parses."""

import os
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock

from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings


def test_metrics_and_readiness_reflect_the_rooms(tmp_path):
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    assert server.ready() is True
    server.create_session("basic_skills")
    status = server.ops_status()
    assert status["rooms"] == {"lobby": 1} and status["substeps"] and status["handshakes"]["accepted"] == 0
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(server.metrics.exposition().decode())
        for s in family.samples
    }
    assert samples[("rehearsal_rooms", (("state", "lobby"),))] == 1
    live = next(iter(server.rooms.values()))
    live.room.counters.update(solver_speed_clamped=3, solver_inverted=2)  # as Room.advance counts them
    server.views.packet_loss = 0.25  # as the once-a-second connection sampler sets it
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(server.metrics.exposition().decode())
        for s in family.samples
    }
    assert samples[("rehearsal_solver_events_total", (("kind", "speed_clamped"),))] == 3
    assert samples[("rehearsal_solver_events_total", (("kind", "inverted"),))] == 2
    assert samples[("rehearsal_packet_loss_ratio", ())] == 0.25
    server.stop()  # closes the room: its ticker and its worker thread
    assert server.ready() == "draining" and not server.rooms


@pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"), reason="promtool not on PATH (CI installs it)"
)
def test_the_servers_metrics_pass_promtool(tmp_path):
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    try:
        session = server.create_session("basic_skills")
        server.rooms[session].ticker.record_tick(0.005)  # a timed tick, as the ticker records it
        exposition = server.metrics.exposition()
        label = server.views.room_label(session)  # opaque: anonymous scrapes see no session ids
        info = f'rehearsal_room_info{{scenario="basic_skills",session="{label}",state="lobby"}} 1.0'
        assert info.encode() in exposition
    finally:
        server.stop()
    result = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkpoints_resumes_and_the_journal_are_on_the_metrics(tmp_path):
    from rehearsal.checkpoints import reactor_part, room_part

    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    try:
        session = server.create_session("basic_skills")
        live = server.rooms[session]
        live.ticker.stop()
        server.journal.append(session, "step", {"id": "retract", "status": "done"})
        server.checkpoints.submit(room_part(live.room, reactor_part(live.room, "basic_skills", live.created_at)))
        assert server.checkpoints.wait_idle()
        server.counters.update(checkpoints_failed=2, sessions_resumed=1, sessions_interrupted=3)
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(server.metrics.exposition().decode())
            for s in family.samples
        }
        assert samples[("rehearsal_checkpoints_total", (("outcome", "written"),))] == 1
        assert samples[("rehearsal_checkpoints_total", (("outcome", "failed"),))] == 2
        assert samples[("rehearsal_checkpoint_duration_seconds_count", ())] == 1
        assert samples[("rehearsal_sessions_resumed_total", ())] == 1
        assert samples[("rehearsal_interrupted_results_total", ())] == 3
        assert samples[("rehearsal_journal_writes_total", (("outcome", "written"),))] == 1
        assert samples[("rehearsal_journal_write_seconds_total", ())] > 0
    finally:
        server.stop()
