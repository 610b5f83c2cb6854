"""ops/alerts.yml and ops/dashboards/*.json only use metrics the server exports; the rules are valid."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ops.metrics import OpsMetrics, exported_names

OPS = Path(__file__).resolve().parents[2] / "ops"
ALERTS = OPS / "alerts.yml"
DASHBOARDS = sorted((OPS / "dashboards").glob("*.json"))
RUNBOOK = OPS / "RUNBOOK.md"
# A metric name, not part of a recording-rule name such as job:rehearsal_x:rate5m.
METRIC = re.compile(r"(?<![\w:])(?:rehearsal|process)_[a-z_]+(?![\w:])")

yaml = pytest.importorskip("yaml")


def exported() -> set[str]:
    return exported_names(OpsMetrics().registry)


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs(path: Path) -> list[str]:
    doc = json.loads(path.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in doc.get("templating", {}).get("list", []) if v.get("type") == "query"]
    return exprs


def test_alerts_yaml_is_valid_rules():
    doc = yaml.safe_load(ALERTS.read_text())
    alerts = set()
    for group in doc["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule)
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            if "alert" in rule:
                alerts.add(rule["alert"])
                assert "summary" in rule["annotations"]
    assert {
        "RehearsalTickP99OverBudget",
        "RehearsalRoomTickP99OverBudget",
        "RehearsalRoomsDegraded",
        "RehearsalHandshakeFailuresSpiking",
        "RehearsalPacketLossHigh",
        "RehearsalServerDown",
        "RehearsalResultsNotSaved",
        "RehearsalTickLoopFailed",
        "RehearsalPublishFailed",
    } <= alerts


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_every_alert_links_its_runbook_section_and_every_section_is_an_alert():
    headings = re.findall(r"^## (\w+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    names = [rule["alert"] for rule in alert_rules()]
    for rule in alert_rules():
        assert rule["annotations"].get("runbook_url") == f"ops/RUNBOOK.md#{rule['alert'].lower()}", rule["alert"]
    assert sorted(headings) == sorted(names)  # one section per alert, none for an alert that is gone


def test_every_failure_the_server_counts_is_exported_and_has_an_alert():
    from rehearsal.status import FAILURES, WEB_FAILURES

    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    for what in (*FAILURES, *WEB_FAILURES):
        covering = [name for name, expr in exprs.items() if f'rehearsal_failures_total{{what="{what}"}}' in expr]
        assert len(covering) == 1, (what, covering)
    assert "rehearsal_failures_total" in exported()
    assert any("rehearsal_status_errors_total" in expr for expr in exprs.values())


def test_a_server_down_alert_and_process_metrics():
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert re.fullmatch(r'up\{job=~"rehearsal\.\*"\} == 0', exprs["RehearsalServerDown"].strip())
    names = exported()
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds"):
        assert name in names, name
    fleet = " ".join(dashboard_exprs(OPS / "dashboards" / "fleet.json"))
    assert "process_resident_memory_bytes" in fleet and "process_cpu_seconds_total" in fleet


def test_durations_are_aggregated_from_histograms():
    """Fleet-wide, per-process and per-room quantiles come from histograms' buckets, which sum across rooms
    and processes (quantile gauges do not)."""
    exprs = rule_exprs() + [e for p in DASHBOARDS for e in dashboard_exprs(p)]
    for name in ("tick", "physics_step", "publish"):
        assert any(f"rehearsal_{name}_duration_seconds_bucket" in e for e in exprs), name
    room = [e for e in exprs if "rehearsal_room_tick_duration_seconds" in e]
    assert room and not any("quantile=" in e for e in exprs)  # no quantile gauges left to misuse
    assert any("rehearsal_room_tick_duration_seconds_bucket" in e and "histogram_quantile" in e for e in room)


def test_every_metric_in_rules_and_dashboards_is_exported():
    names = exported()
    sources = {ALERTS.name: rule_exprs()} | {p.name: dashboard_exprs(p) for p in DASHBOARDS}
    assert {"fleet.json", "room.json"} <= {p.name for p in DASHBOARDS}
    for source, exprs in sources.items():
        used = {m for e in exprs for m in METRIC.findall(e)}
        assert used, source
        assert used <= names, (source, used - names)
    # Whole-file scan too, so names outside expressions (annotations, titles) are held to it as well.
    for path in [ALERTS, *DASHBOARDS]:
        used = set(METRIC.findall(path.read_text()))
        assert used <= names, (path.name, used - names)


def test_dashboard_is_grafana_json():
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        assert doc["title"] and doc["uid"] and doc["panels"]
        assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])


def test_fleet_dashboard_covers_the_brief():
    exprs = " ".join(dashboard_exprs(OPS / "dashboards" / "fleet.json"))
    for name in (
        "rehearsal_tick_duration_seconds_bucket",
        "rehearsal_rooms",
        "rehearsal_participants",
        "rehearsal_bytes_total",
        "rehearsal_dropped_packets_total",
    ):
        assert name in exprs


def test_room_dashboard_selects_one_session():
    doc = json.loads((OPS / "dashboards" / "room.json").read_text())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    session = variables["session"]
    assert session["type"] == "query" and "rehearsal_room_info" in session["query"] and not session.get("multi")
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    room_exprs = [e for e in exprs if "rehearsal_room_" in e]
    assert room_exprs and all('session="$session"' in e for e in room_exprs)
    joined = " ".join(exprs)
    for name in (
        "rehearsal_room_tick_duration_seconds",
        "rehearsal_room_physics_step_duration_seconds",
        "rehearsal_room_participants",
        "rehearsal_room_tick_overruns_total",
        "rehearsal_room_substeps",
    ):
        assert name in joined


def grafana_free(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, so promtool can parse it.
    A template query ``label_values(selector, label)`` is checked as its selector."""
    selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", expr.strip())
    if selector:
        expr = selector.group(1)
    for var, value in (("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__all", ".*")):
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?(\w+)\}?", r"\1", expr)


@pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"), reason="promtool not on PATH (CI installs it)"
)
def test_dashboard_queries_are_valid_promql(tmp_path):
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": grafana_free(e)}
        for i, e in enumerate(e for p in DASHBOARDS for e in dashboard_exprs(p))
    ]
    path = tmp_path / "dashboard_exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"), reason="promtool not on PATH (CI installs it)"
)
def test_promtool_check_rules():
    result = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"), reason="promtool not on PATH (CI installs it)"
)
def test_promtool_check_metrics():
    from tests.ops.test_metrics import SAMPLE_STATUS  # every family, per-room ones included

    metrics = OpsMetrics(status=lambda: SAMPLE_STATUS)
    metrics.histograms.tick.observe(0.004)
    exposition = metrics.exposition().decode()
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"), reason="promtool not on PATH (CI installs it)"
)
def test_promtool_the_checkpoint_failure_alert_fires_on_failures_and_only_then(tmp_path):
    labels = 'job="rehearsal", instance="a:9100"'
    doc = yaml.safe_load(ALERTS.read_text())
    [rule] = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == "RehearsalCheckpointsFailing"]
    firing = [
        {
            "exp_labels": {"job": "rehearsal", "instance": "a:9100", "severity": "page"},
            "exp_annotations": {
                "runbook_url": "ops/RUNBOOK.md#rehearsalcheckpointsfailing",
                "summary": "Room checkpoints or action-journal writes are failing on a:9100",
                "description": rule["annotations"]["description"],
            },
        }
    ]
    tests = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'rehearsal_checkpoints_total{{outcome="failed", {labels}}}', "values": "0 0 1 1 1 1 1"},
                    {"series": f'rehearsal_checkpoints_total{{outcome="written", {labels}}}', "values": "0+12x30"},
                    {"series": f'rehearsal_journal_writes_total{{outcome="failed", {labels}}}', "values": "0x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "RehearsalCheckpointsFailing", "exp_alerts": []},
                    {"eval_time": "3m", "alertname": "RehearsalCheckpointsFailing", "exp_alerts": []},  # pending
                    {
                        "eval_time": "5m",
                        "alertname": "RehearsalCheckpointsFailing",
                        "exp_alerts": firing,
                    },
                    {"eval_time": "25m", "alertname": "RehearsalCheckpointsFailing", "exp_alerts": []},  # recovered
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'rehearsal_checkpoints_total{{outcome="failed", {labels}}}', "values": "0x30"},
                    {
                        "series": f'rehearsal_journal_writes_total{{outcome="failed", {labels}}}',
                        "values": "0 0 2 2 2 2",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "RehearsalCheckpointsFailing",
                        "exp_alerts": firing,
                    }
                ],
            },
        ],
    }
    path = tmp_path / "checkpoint_alert_test.yml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"), reason="promtool not on PATH (CI installs it)"
)
def test_promtool_unit_tests_of_the_alerts():
    """ops/alerts_test.yml: the server-down, a failure and the tick-budget alerts fire as written, with their
    annotations (the tick alert's summary names its instance)."""
    result = subprocess.run(
        ["promtool", "test", "rules", str(OPS / "alerts_test.yml")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
