"""The ``[[fixtures]]`` scenario keys: bad definitions are refused with the file, the line and the key."""

from pathlib import Path

import pytest

from rehearsal.scenario import ScenarioError, load_scenario

BASE = """schema = 1
title = "Fixtures"
instruments = ["grasper", "cautery_hook"]

[anatomy]
kind = "tissue_block"
size = [0.1, 0.02, 0.04]
cells = [5, 1, 2]

[[materials]]
region = 0
preset = "liver"

"""


def write_scenario(folder: Path, fixtures: str, name: str = "fx.toml") -> Path:
    path = Path(folder) / name
    path.write_text(BASE + fixtures, encoding="utf-8")
    return path


CAPSULE = '[[fixtures]]\nid = "keepout"\nrole = "forbidden"\nshape = "capsule"\na = [0, 0, 0]\nb = [0.1, 0, 0]\n'


@pytest.mark.parametrize(
    ("fixtures", "error"),
    [
        (CAPSULE, r"fx\.toml:14: fixtures\[0\]\.radius: missing \(needed by a capsule fixture\)"),
        (
            CAPSULE + "radius = 0.004\ncenter = [0, 0, 0]\n",
            r"fx\.toml:21: fixtures\[0\]\.center: not a key of a capsule",
        ),
        (CAPSULE + "radius = 2.0\n", r"fx\.toml:20: fixtures\[0\]\.radius: 2\.0 is not in \[0\.0001, 1\.0\]"),
        (
            CAPSULE + "radius = 0.004\nstifness = 5.0\n",
            r"fx\.toml:21: fixtures\[0\]\.stifness: unknown key 'stifness' \(did you mean 'stiffness'\?\)",
        ),
        (CAPSULE.replace("capsule", "cylinder"), r"fx\.toml:17: fixtures\[0\]\.shape: unknown 'cylinder'"),
        (
            CAPSULE.replace('"forbidden"', '"guide"') + "radius = 0.004\n",
            r"fx\.toml:17: fixtures\[0\]\.shape: a guide fixture is a plane or path, not a capsule",
        ),
        (
            '[[fixtures]]\nid = "p"\nrole = "guide"\nshape = "plane"\npoint = [0, 0, 0]\nnormal = [0, 0, 0]\n',
            r"fx\.toml:19: fixtures\[0\]\.normal: must not be zero",
        ),
        (
            '[[fixtures]]\nid = "p"\nrole = "guide"\nshape = "path"\npoints = [[0, 0, 0]]\n',
            r"fx\.toml:18: fixtures\[0\]\.points: expected a list of at least 2 items, got 1",
        ),
        (CAPSULE + "radius = 0.004\nactive = 1\n", r"fx\.toml:21: fixtures\[0\]\.active: expected boolean, got int 1"),
        (
            CAPSULE + "radius = 0.004\n\n" + CAPSULE + "radius = 0.004\n",
            r"fx\.toml:14: fixtures: ids must be unique",
        ),
    ],
)
def test_bad_fixture_definitions_name_the_file_line_and_key(tmp_path, fixtures, error):
    with pytest.raises(ScenarioError, match=error):
        load_scenario(write_scenario(tmp_path, fixtures))


def test_good_fixtures_load_with_their_defaults(tmp_path):
    text = CAPSULE + "radius = 0.004\n\n"
    text += '[[fixtures]]\nid = "zone"\nrole = "no_energy"\nshape = "sphere"\ncenter = [0.05, 0.01, 0.02]\n'
    text += "radius = 0.01\nactive = false\n\n"
    text += '[[fixtures]]\nid = "around"\nrole = "forbidden"\nshape = "mesh"\nregion = 0\n'
    scenario = load_scenario(write_scenario(tmp_path, text))
    keepout, zone, around = scenario.fixtures
    assert keepout.params == {"a": [0, 0, 0], "b": [0.1, 0, 0], "radius": 0.004} and keepout.stiffness == 2000.0
    assert zone.active is False and zone.role == "no_energy"
    assert around.params == {"region": 0, "margin": 0.002}
