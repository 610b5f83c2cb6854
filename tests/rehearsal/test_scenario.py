"""Scenario files: the shipped ones load and build a stable world; bad files get errors naming the key."""

import numpy as np
import pytest

from physics import Control, new_state, step
from rehearsal.scenario import DEFAULT_MAX_PARTICIPANTS, ScenarioError, build_world, load_scenario, packaged_scenarios

GOOD = """
schema = 1
title = "t"
instruments = ["grasper"]
[anatomy]
kind = "tissue_block"
size = [0.02, 0.01, 0.01]
cells = [4, 2, 2]
[[materials]]
region = 0
preset = "liver"
[[steps]]
id = "lift"
title = "lift"
check = { kind = "displacement", distance = 0.01, box = { lo = [-1, -1, -1], hi = [1, 1, 1] } }
"""


def _write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_at_least_the_two_required_scenarios_ship():
    assert {"basic_skills", "cholecystectomy"} <= set(packaged_scenarios())


@pytest.mark.parametrize("name", sorted(packaged_scenarios()))
def test_shipped_scenarios_build_a_world_that_steps_stably(name):
    scenario = load_scenario(name)
    model = build_world(scenario)
    assert scenario.steps and scenario.complications and scenario.instruments
    state = new_state(model)
    for _ in range(10):
        step(model, state, Control(), substeps=scenario.substeps)
    assert np.all(np.isfinite(state.x)) and np.abs(state.v).max() < 1.0


def test_a_minimal_file_loads(tmp_path):
    scenario = load_scenario(_write(tmp_path, GOOD))
    assert scenario.name == "s" and scenario.substeps == 20 and scenario.tick_hz == 60
    assert scenario.steps[0].check.distance == 0.01
    assert build_world(scenario).n_tets == 4 * 2 * 2 * 6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("schema = 1", "schema = 7"), "schema: version 7 is not supported"),
        (('kind = "tissue_block"', 'kind = "spleen"'), "anatomy.kind: unknown 'spleen'"),
        (("cells = [4, 2, 2]", "cells = [4, 2]"), "anatomy.cells: expected 3 integers"),
        (('preset = "liver"', 'preset = "liver"\nyoung = -5'), "materials[0].young: -5.0 is not in"),
        (('instruments = ["grasper"]', 'instruments = ["laser"]'), "instruments[0]: unknown 'laser'"),
        (('kind = "displacement"', 'kind = "teleport"'), "steps[0].check.kind: unknown 'teleport'"),
        (("distance = 0.01, ", ""), "steps[0].check.distance: missing"),
        (("hi = [1, 1, 1]", "hi = [-2, 1, 1]"), "steps[0].check.box: hi must be >= lo"),
        (("region = 0", "region = 1"), "materials: need one [[materials]] entry per region"),
        (('title = "t"\n', ""), "title: missing"),
        (("size = [0.02, 0.01, 0.01]", 'size = "big"'), "anatomy.size: expected list"),
    ],
)
def test_bad_files_name_the_key(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(ScenarioError, match=r"s\.toml: " + message.replace("[", r"\[").replace("]", r"\]")):
        load_scenario(_write(tmp_path, GOOD.replace(old, new, 1)))


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "nope.toml")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(_write(tmp_path, "schema = = 1"))


def test_attachment_box_that_holds_nothing_is_reported(tmp_path):
    text = GOOD + '[[attachments]]\nkind = "fixed"\nbox = { lo = [5, 5, 5], hi = [6, 6, 6] }\n'
    with pytest.raises(ScenarioError, match="holds no vertex"):
        build_world(load_scenario(_write(tmp_path, text)))


@pytest.mark.parametrize(
    ("room", "message"),
    [
        ("max_participants = 0", r"room.max_participants: 0 is not in \[1, 128\]"),
        ("max_participants = 1000", r"room.max_participants: 1000 is not in \[1, 128\]"),
        ("max_participants = 2.5", "room.max_participants: expected int"),
        ('max_participants = "many"', "room.max_participants: expected int"),
    ],
)
def test_room_capacity_is_validated(tmp_path, room, message):
    with pytest.raises(ScenarioError, match=r"s\.toml: " + message):
        load_scenario(_write(tmp_path, GOOD + f"\n[room]\n{room}\n"))


def test_room_capacity_defaults_and_can_be_set(tmp_path):
    assert load_scenario(_write(tmp_path, GOOD)).max_participants == DEFAULT_MAX_PARTICIPANTS
    assert load_scenario(_write(tmp_path, GOOD + "\n[room]\nmax_participants = 40\n")).max_participants == 40
