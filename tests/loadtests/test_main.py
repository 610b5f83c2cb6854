"""``python -m loadtests``: every run gets the common flags, its own, and an exit code from its checks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from loadtests.__main__ import COMMANDS, RunCommand, main

CALLS: list[dict] = []


def fake_run(out: Path | None = None, *, scenario: str, level: int, say=print) -> dict:
    CALLS.append({"out": out, "scenario": scenario, "level": level})
    say("progress, not the report")
    return {"run": "fake", "passed": level < 3, "bots": ["not printed"]}


FAKE = RunCommand(
    "fake", "a probe", f"{__name__}:fake_run", "basic_skills", lambda p: p.add_argument("--level", type=int, default=1)
)


def test_the_common_flags_and_the_runs_own_reach_the_run_and_its_checks_set_the_exit_code(tmp_path, capsys):
    CALLS.clear()
    assert main([FAKE], ["fake", "--out", str(tmp_path)]) == 0
    assert [{"out": tmp_path, "scenario": "basic_skills", "level": 1}] == CALLS
    out = capsys.readouterr()
    assert "not printed" not in out.out  # the report is printed without its bots
    assert json.loads(out.out)["run"] == "fake"  # stdout is the JSON report alone; progress went to stderr
    assert "progress, not the report" in out.err
    assert main([FAKE], ["fake", "--scenario", "block_5k", "--level", "3"]) == 1
    assert CALLS[-1] == {"out": None, "scenario": "block_5k", "level": 3}


DOCUMENTED = [  # loadtests/README.md
    "capacity --physics-threads 2",
    "capacity --process-per-room",
    "capacity --observer-snapshot-hz 30 --max-rooms 2 --phase-seconds 10 --participants 2 --observers 1",
    "capacity --observer-step 2 --max-observer-steps 1 --scenario basic_skills --out runs",
    "impaired --seconds 20 --seed 3",
    "soak --seconds 300 --rooms 1",
    "faults --flood-seconds 5",
    "crash --out runs",
    "fleet --processes 3 --capacity 3 --sessions 6",
    "capacity --processes 2",
    "capacity --max-rooms 4 --max-observer-steps 0 --profile --required-rooms 4",
    "attack --attack-seconds 4 --only nested_json,huge_body",
]


def test_every_run_has_the_documented_flags():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="run", required=True)
    for command in COMMANDS:
        command.add_to(sub)
    for line in DOCUMENTED:
        args = vars(parser.parse_args(line.split()))
        assert "scenario" in args and "out" in args, line
    with pytest.raises(SystemExit):
        main(COMMANDS, ["capacity", "--no-such-flag"])
    assert {c.name for c in COMMANDS} == {"capacity", "impaired", "soak", "faults", "crash", "fleet", "attack"}
    for command in COMMANDS:
        assert callable(command.resolve())
