"""The run skeleton: one teardown however a run's body ends, the report written only when it returns."""

from __future__ import annotations

import json

import pytest

from loadtests.run import load_run


def test_a_run_that_returns_is_torn_down_and_writes_its_report(tmp_path):
    closed = []
    with load_run("probe", tmp_path, say=lambda line: None, scenario="none") as run:
        run.on_close.append(lambda: closed.append("relay"))
        run.report["passed"] = True
        assert run.folder.parent == tmp_path and run.folder.name.startswith("probe-")
        run.plots(None)
    assert closed == ["relay"]
    written = json.loads((run.folder / "probe.json").read_text())
    assert written["run"] == "probe" and written["scenario"] == "none" and written["passed"] is True
    assert written["server_exit"] == [] and written["plots"] == [None]  # no server was started
    run.close()  # idempotent: the callbacks ran once
    assert closed == ["relay"]


def test_a_run_that_fails_is_torn_down_and_writes_nothing(tmp_path):
    closed = []
    with pytest.raises(RuntimeError, match="join refused"), load_run("probe", tmp_path, say=print) as run:
        run.on_close.append(lambda: closed.append(True))
        raise RuntimeError("join refused")
    assert closed == [True] and not (run.folder / "probe.json").exists()
