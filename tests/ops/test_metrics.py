"""ops.metrics: the exposition parses and carries every metric with the right type and labels."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.metrics import (
    HISTOGRAM_NAMES,
    MAX_LABEL_VALUES,
    MAX_ROOM_SERIES,
    ROOM_METRICS,
    STATUS_METRICS,
    OpsMetrics,
    exported_names,
)

SAMPLE_STATUS = {
    "rooms": {"running": 3, "lobby": 1, "paused": 0},
    "participants": {"lead_surgeon": 2, "observer": 5},
    "substeps": {"min": 2, "max": 8},
    "packets": {"in": 1234, "out": 5678},
    "bytes": {"in": 123456, "out": 987654},
    "drops": {"bad_mac": 3, "replay": 1},
    "rejected_inputs": {"nonfinite": 1, "too_fast": 4},
    "handshakes": {"accepted": 10, "refused": 2},
    "refusals": {"input_samples": 7, "commands": 1},
    "solver": {"inverted": 0, "clamped": 2},
    "fixtures": {"violations": 3, "energy_cuts": 1, "energy_cut_ticks": 40, "refused_toggles": 2},
    "ticks": 100000,
    "tick_overruns": 12,
    "tick_budget_utilisation": 0.42,
    "packet_loss_ratio": 0.01,
    "web_observers": 4,
    "websocket_bytes_sent": 123456,
    "page_errors": 2,
    "checkpoints": {"written": 40, "failed": 1},
    "sessions_resumed": 2,
    "interrupted_results": 1,
    "journal_writes": {"written": 12, "failed": 0},
    "journal_write_seconds": 0.03,
    "failures": {"results_not_saved": 1, "tick_loop_failed": 0, "publish_failed": 3},
    "room_stats": {
        "s-abc": {
            "scenario": "basic_skills",
            "state": "running",
            "participants": {"lead_surgeon": 1, "observer": 2},
            "substeps": 15,
            "degraded": True,
            "ticks": 600,
            "tick_overruns": 3,
            "tick_histogram": {"buckets": [[0.004, 300], [0.0167, 590]], "sum": 2.5, "count": 597},
            "physics_step_histogram": {"buckets": [[0.004, 500], [0.0167, 597]], "sum": 1.9, "count": 597},
        }
    },
}


def families(metrics: OpsMetrics) -> dict:
    return {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}


def samples(family) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def test_exposition_has_every_metric_with_type_and_labels():
    fams = families(OpsMetrics(status=lambda: SAMPLE_STATUS))
    for name, kind, label, key, _ in STATUS_METRICS:
        base = name.removesuffix("_total") if kind == "counter" else name
        assert base in fams, name
        fam = fams[base]
        assert fam.type == kind, name
        got = samples(fam)
        value = SAMPLE_STATUS[key]
        if label is None:
            assert got[(name, ())] == pytest.approx(value)
        else:
            assert {labels: v for (n, labels), v in got.items() if n == name} == {
                ((label, k),): pytest.approx(v) for k, v in value.items()
            }
    for name in HISTOGRAM_NAMES:
        assert fams[name].type == "histogram"


def test_counters_are_named_total_and_units_are_base():
    fams = families(OpsMetrics(status=lambda: SAMPLE_STATUS))
    for fam in fams.values():
        assert fam.name.startswith(("rehearsal_", "process_")), fam.name  # process_: prometheus-client's own
        if fam.type == "counter":
            assert any(s.name == fam.name + "_total" for s in fam.samples)
        assert "milliseconds" not in fam.name and "_ms" not in fam.name


def test_process_metrics_come_from_prometheus_clients_collector():
    fams = families(OpsMetrics())
    assert fams["process_resident_memory_bytes"].samples[0].value > 0
    assert fams["process_open_fds"].samples[0].value >= 3
    assert fams["process_cpu_seconds"].type == "counter"


def test_empty_or_failing_status_still_exports_every_name():
    names_ok = exported_names(OpsMetrics(status=lambda: SAMPLE_STATUS).registry)

    def boom():
        raise RuntimeError("nope")

    failing = OpsMetrics(status=boom)
    assert exported_names(failing.registry) == names_ok
    assert exported_names(OpsMetrics().registry) == names_ok
    fams = families(failing)
    assert fams["rehearsal_status_errors"].samples[0].value >= 1


def test_histograms_observe():
    metrics = OpsMetrics()
    h = metrics.histograms
    for v in (0.003, 0.009, 0.020):
        h.tick.observe(v)
    h.physics_step.observe(0.004)
    h.rtt.observe(0.15)
    h.snapshot_bytes.observe(900)
    fams = families(metrics)
    tick = samples(fams["rehearsal_tick_duration_seconds"])
    assert tick[("rehearsal_tick_duration_seconds_count", ())] == 3
    assert tick[("rehearsal_tick_duration_seconds_sum", ())] == pytest.approx(0.032)
    assert tick[("rehearsal_tick_duration_seconds_bucket", (("le", "0.0167"),))] == 2
    assert tick[("rehearsal_tick_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert samples(fams["rehearsal_snapshot_bytes"])[("rehearsal_snapshot_bytes_count", ())] == 1
    assert samples(fams["rehearsal_rtt_seconds"])[("rehearsal_rtt_seconds_count", ())] == 1
    assert (
        samples(fams["rehearsal_physics_step_duration_seconds"])[("rehearsal_physics_step_duration_seconds_count", ())]
        == 1
    )


def test_status_is_read_at_scrape_time():
    state = {"packets": {"in": 1, "out": 0}}
    metrics = OpsMetrics(status=lambda: state)
    assert samples(families(metrics)["rehearsal_packets"])[("rehearsal_packets_total", (("direction", "in"),))] == 1
    state["packets"]["in"] = 7
    assert samples(families(metrics)["rehearsal_packets"])[("rehearsal_packets_total", (("direction", "in"),))] == 7


def test_label_cardinality_is_capped_and_per_room_substeps_reduce_to_min_max():
    status = {
        "drops": {f"reason{i:03d}": 1 for i in range(500)},
        "substeps": {f"room{i}": i + 1 for i in range(50)},
    }
    fams = families(OpsMetrics(status=lambda: status))
    drops = samples(fams["rehearsal_dropped_packets"])
    assert len(drops) <= MAX_LABEL_VALUES * 2  # _total and _created at most
    total = sum(v for (n, _), v in drops.items() if n.endswith("_total"))
    assert total == 500
    subs = samples(fams["rehearsal_substeps"])
    assert subs == {("rehearsal_substeps", (("stat", "max"),)): 50, ("rehearsal_substeps", (("stat", "min"),)): 1}


def test_registry_is_private():
    from prometheus_client import REGISTRY

    metrics = OpsMetrics()
    assert metrics.registry is not REGISTRY
    assert "rehearsal_tick_duration_seconds" not in {f.name for f in REGISTRY.collect()}


def test_per_room_families_carry_the_session_label():
    fams = families(OpsMetrics(status=lambda: SAMPLE_STATUS))
    for name, kind, _, _, _ in ROOM_METRICS:
        assert fams[name.removesuffix("_total") if kind == "counter" else name].type == kind, name
    info = samples(fams["rehearsal_room_info"])
    assert info == {
        ("rehearsal_room_info", (("scenario", "basic_skills"), ("session", "s-abc"), ("state", "running"))): 1
    }
    people = samples(fams["rehearsal_room_participants"])
    assert people[("rehearsal_room_participants", (("role", "observer"), ("session", "s-abc")))] == 2
    tick = samples(fams["rehearsal_room_tick_duration_seconds"])
    assert tick[("rehearsal_room_tick_duration_seconds_bucket", (("le", "0.0167"), ("session", "s-abc")))] == 590
    assert tick[("rehearsal_room_tick_duration_seconds_bucket", (("le", "+Inf"), ("session", "s-abc")))] == 597
    assert tick[("rehearsal_room_tick_duration_seconds_count", (("session", "s-abc"),))] == 597
    assert tick[("rehearsal_room_tick_duration_seconds_sum", (("session", "s-abc"),))] == 2.5
    assert samples(fams["rehearsal_room_degraded"])[("rehearsal_room_degraded", (("session", "s-abc"),))] == 1
    overruns = samples(fams["rehearsal_room_tick_overruns"])
    assert overruns[("rehearsal_room_tick_overruns_total", (("session", "s-abc"),))] == 3


def test_per_room_series_are_capped_and_rooms_without_ticks_export_no_buckets():
    rooms = {f"s-{i:03d}": {"state": "lobby"} for i in range(MAX_ROOM_SERIES + 10)}
    fams = families(OpsMetrics(status=lambda: {"room_stats": rooms}))
    assert len(fams["rehearsal_room_info"].samples) == MAX_ROOM_SERIES
    assert fams["rehearsal_room_tick_duration_seconds"].type == "histogram"
    assert not samples(fams["rehearsal_room_tick_duration_seconds"])  # no tick yet: no buckets
