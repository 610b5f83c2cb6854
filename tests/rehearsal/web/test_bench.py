"""The observers' benchmark (rehearsal.web.bench) runs end to end and reports what it promises (a short run)."""

from __future__ import annotations

import json
import os

import pytest

from rehearsal.web import bench


def test_a_short_run_reports_tick_p99_with_and_without_observers_and_their_downlink(capsys):
    assert bench.main(["--observers", "2", "--seconds", "1.5", "--in-process-ticks", "20"]) == 0
    report = json.loads(capsys.readouterr().out)
    alone, watched = report["runs"]
    assert (alone["observers"], watched["observers"]) == (0, 2)
    assert alone["tick_p99_ms"] > 0 and watched["tick_p99_ms"] > 0
    assert report["observers_add_tick_p99_ms"] == pytest.approx(watched["tick_p99_ms"] - alone["tick_p99_ms"])
    assert 0 < watched["observer_mbit_s"] < 50 and watched["observer_snapshots_per_s"] > 5
    assert watched["surface_vertices"] > 100
    for run in (alone, watched):  # what the participants saw, and what the server's threads spent
        assert run["participant_snapshots_per_s"] > 5 and run["participant_snapshot_gap_p99_ms"] > 0
        assert run["server_cpu_percent"]["reactor"] >= 0
    cost = report["in_process"]
    assert (cost["alone"]["in_group"], cost["one_observer"]["in_group"], cost["watched"]["in_group"]) == (0, 1, 2)
    assert cost["watched"]["publish_ms_per_tick"] > 0 and cost["watched"]["acks_ms_per_tick"] > 0
    assert cost["observers_add_reactor_ms_per_tick"] == pytest.approx(
        cost["observers_add_publish_ms_per_tick"] + cost["observers_add_acks_ms_per_tick"]
    )
    assert set(cost["each_further_observer_us_per_tick"]) == {"publish", "acks"}
    assert set(report["measured"]) >= {"tick_p99_ms", "participant_snapshot_gap_p99_ms", "in_process"}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--pin needs 2 CPUs")
def test_pinned_the_server_and_the_clients_run_on_separate_cpus_and_the_bench_gives_its_cpus_back(capsys):
    own = os.sched_getaffinity(0)
    assert bench.main(["--pin", "--observers", "1", "--seconds", "1", "--in-process-ticks", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["server_cpus"] == [min(own)]
    assert set(report["client_cpus"]) == own - {min(own)}
    assert report["runs"][1]["observer_mbit_s"] > 0
    assert os.sched_getaffinity(0) == own


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        bench.main(["--observers", "1000"])
    with pytest.raises(SystemExit):
        bench.main(["--cells", "1,2"])
