"""Scenario files: the shipped ones load and build a stable world; bad files get errors naming the key."""

import numpy as np
import pytest

from physics import Control, new_state, step
from rehearsal.scenario import (
    DEFAULT_MAX_PARTICIPANTS,
    ScenarioError,
    build_world,
    load_scenario,
    packaged_scenarios,
    resolve_scenario,
)

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
    assert scenario.solver == "xpbd"
    assert (
        load_scenario(_write(tmp_path, GOOD.replace("[anatomy]", '[physics]\nsolver = "implicit"\n[anatomy]'))).solver
        == "implicit"
    )
    assert scenario.steps[0].check.distance == 0.01
    assert build_world(scenario).n_tets == 4 * 2 * 2 * 6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("schema = 1", "schema = 7"), "2: schema: version 7 is not supported (this server reads 1)"),
        (('kind = "tissue_block"', 'kind = "spleen"'), "6: anatomy.kind: unknown 'spleen' (known: 'tissue_block'"),
        (("cells = [4, 2, 2]", "cells = [4, 2]"), "8: anatomy.cells: expected a list of 3 items, got 2"),
        (("cells = [4, 2, 2]", "cells = [4, 2, 900]"), "8: anatomy.cells[2]: 900 is not in [1, 200]"),
        (
            ('preset = "liver"', 'preset = "liver"\nyoung = -5'),
            "12: materials[0].young: -5 is not in [1.0, 10000000000.0]",
        ),
        (
            ('preset = "liver"', 'preset = "liver"\nyung = 5'),
            "12: materials[0].yung: unknown key 'yung' (did you mean 'young'?)",
        ),
        (
            ('preset = "liver"', 'preset = "liver"\npoisson = "half"'),
            "12: materials[0].poisson: expected float, got string 'half'",
        ),
        (("region = 0", "region = true"), "10: materials[0].region: expected int, got boolean True"),
        (('instruments = ["grasper"]', 'instruments = ["laser"]'), "4: instruments[0]: unknown 'laser'"),
        (('kind = "displacement"', 'kind = "teleport"'), "15: steps[0].check.kind: unknown 'teleport'"),
        (("distance = 0.01, ", ""), "15: steps[0].check.distance: missing"),
        (
            ("distance = 0.01, ", "distance = 0.01, radius = 2, "),
            "15: steps[0].check.radius: unknown key 'radius' "
            "(valid: kind, box, distance, target, knot, tolerance, tail)",
        ),
        (("hi = [1, 1, 1]", "hi = [-2, 1, 1]"), "15: steps[0].check.box: hi must be >= lo"),
        (("region = 0", "region = 1"), "9: materials: need one [[materials]] entry per region"),
        (("size = [0.02, 0.01, 0.01]", 'size = "big"'), "7: anatomy.size: expected list, got string 'big'"),
        (("size = [0.02, 0.01, 0.01]", "size = [0.02, nan, 0.01]"), "7: anatomy.size[1]: numbers must be finite"),
        (
            ("[anatomy]", "[physics]\nsubstep = 15\n[anatomy]"),
            "6: physics.substep: unknown key 'substep' (did you mean 'substeps'?)",
        ),
        (("[anatomy]", "[physics]\nsubsteps = 2.5\n[anatomy]"), "6: physics.substeps: expected int, got float 2.5"),
        (("[anatomy]", "[physics]\ntick_hz = 1000\n[anatomy]"), "6: physics.tick_hz: 1000 is not in [10, 240]"),
        (
            ("[anatomy]", '[physics]\nsolver = "newton"\n[anatomy]'),
            "6: physics.solver: unknown 'newton' (known: 'xpbd' or 'implicit')",
        ),
        (("[anatomy]", "recording = true\n[anatomy]"), "5: recording: unknown key 'recording'"),
        (
            ("cells = [4, 2, 2]", "cells = [4, 2, 2]\nresolution = 0.01"),
            "9: anatomy.resolution: not a key of a tissue_block anatomy (its keys: size, cells, incision)",
        ),
        (
            ('preset = "liver"', "young = 5000"),
            "9: materials[0].poisson: missing (give it, or a preset to start from)",
        ),
        (
            ("[[steps]]", "[skill_limits]\npath_lenght_m = 2\n[[steps]]"),
            "13: skill_limits.path_lenght_m: unknown key 'path_lenght_m' (did you mean 'path_length_m'?)",
        ),
        (
            ("[[steps]]", "[skill_limits]\ncollisions = -1\n[[steps]]"),
            "13: skill_limits.collisions: -1 is not in [0, 100000]",
        ),
    ],
)
def test_bad_files_name_the_line_and_the_key(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(ScenarioError) as caught:
        load_scenario(_write(tmp_path, GOOD.replace(old, new, 1)))
    assert str(caught.value).startswith("s.toml:" + message), str(caught.value)


def test_a_missing_key_names_the_key(tmp_path):
    with pytest.raises(ScenarioError, match=r"^s\.toml: title: missing$"):
        load_scenario(_write(tmp_path, GOOD.replace('title = "t"\n', "", 1)))


def test_skill_limits_default_and_can_be_set(tmp_path):
    from rehearsal.skill_metrics import DEFAULT_THRESHOLDS

    assert load_scenario(_write(tmp_path, GOOD)).skill_limits == DEFAULT_THRESHOLDS
    text = GOOD.replace("[[steps]]", "[skill_limits]\npath_length_m = 2\ncollisions = 1\n[[steps]]")
    limits = load_scenario(_write(tmp_path, text)).skill_limits
    assert (limits.path_length_m, limits.collisions, limits.peak_force_n) == (2.0, 1, DEFAULT_THRESHOLDS.peak_force_n)


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
        ("max_participants = 2.5", "room.max_participants: expected int, got float 2.5"),
        ('max_participants = "many"', "room.max_participants: expected int, got string 'many'"),
    ],
)
def test_room_capacity_is_validated(tmp_path, room, message):
    with pytest.raises(ScenarioError, match=r"s\.toml:\d+: " + message):
        load_scenario(_write(tmp_path, GOOD + f"\n[room]\n{room}\n"))


def test_room_capacity_defaults_and_can_be_set(tmp_path):
    assert load_scenario(_write(tmp_path, GOOD)).max_participants == DEFAULT_MAX_PARTICIPANTS
    assert load_scenario(_write(tmp_path, GOOD + "\n[room]\nmax_participants = 40\n")).max_participants == 40


def test_a_scenario_is_resolved_by_name_or_by_its_path_in_the_scenario_folder(tmp_path):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    mine = _write(folder, GOOD, "my_flap.toml")
    elsewhere = _write(tmp_path, GOOD, "stray.toml")
    assert resolve_scenario("my_flap", folder) == ("my_flap", mine)
    assert resolve_scenario(str(mine), folder) == ("my_flap", mine)
    assert resolve_scenario("basic_skills", folder) == ("basic_skills", packaged_scenarios()["basic_skills"])
    with pytest.raises(ScenarioError, match=r"^unknown scenario 'my_flop' \(did you mean 'my_flap'\?\)$"):
        resolve_scenario("my_flop", folder)
    with pytest.raises(
        ScenarioError, match=f"stray.toml: not in the server's scenario folder: it offers the scenario folder {folder}"
    ):
        resolve_scenario(str(elsewhere), folder)
    with pytest.raises(
        ScenarioError, match=r"not in the server's scenario folder: it offers no scenario folder \(set scenario_dir\)"
    ):
        resolve_scenario(str(mine), None)
    with pytest.raises(ScenarioError, match=r"gone\.toml: no such scenario file"):
        resolve_scenario(str(folder / "gone.toml"), folder)
    shadow = _write(folder, GOOD, "basic_skills.toml")
    with pytest.raises(ScenarioError, match="its name 'basic_skills' is a packaged scenario's, which takes precedence"):
        resolve_scenario(str(shadow), folder)


def test_the_shipped_scenarios_use_only_documented_keys():
    """Every key the schema knows is in SCENARIOS.md, and the shipped files load under the strict schema."""
    from rehearsal.scenario_schema import ScenarioSpec

    doc = (packaged_scenarios()["basic_skills"].parent / "SCENARIOS.md").read_text(encoding="utf-8")

    def keys(model, prefix=""):
        for name, info in model.model_fields.items():
            key = prefix + (info.alias or name)
            yield key
            inner = info.annotation
            for candidate in (inner, *getattr(inner, "__args__", ())):
                candidate = (
                    getattr(candidate, "__args__", (candidate,))[0] if hasattr(candidate, "__origin__") else candidate
                )
                if (
                    isinstance(candidate, type)
                    and hasattr(candidate, "model_fields")
                    and candidate.__name__ != "BoxSpec"
                ):
                    yield from keys(candidate, key + ".")

    for key in keys(ScenarioSpec):
        assert any(f"`{form}`" in doc for form in (key, f"[{key}]", f"[[{key}]]")), f"{key} is not in SCENARIOS.md"
    for name in packaged_scenarios():
        load_scenario(name)


NIFTI = GOOD.replace(
    'kind = "tissue_block"\nsize = [0.02, 0.01, 0.01]\ncells = [4, 2, 2]',
    'kind = "nifti"\npath = "seg.nii"\nlabels = { 7 = 0 }',
)


def test_a_nifti_anatomy_maps_labels_to_regions(tmp_path):
    import nibabel

    labels = np.zeros((3, 2, 2), np.uint8)
    labels[:2] = 7
    labels[2] = 8  # not named in the scenario: background
    image = nibabel.Nifti1Image(labels, np.diag([10.0, 10.0, 10.0, 1.0]))
    image.header.set_xyzt_units("mm")
    nibabel.save(image, str(tmp_path / "seg.nii"))
    scenario = load_scenario(_write(tmp_path, NIFTI))
    assert scenario.anatomy["labels"] == {7: 0}
    model = build_world(scenario)
    assert model.n_tets == 2 * 2 * 2 * 6
    with pytest.raises(ScenarioError, match=r"s\.toml:8: anatomy\.labels\.x: a label value is an integer"):
        load_scenario(_write(tmp_path, NIFTI.replace("labels = { 7 = 0 }", "labels = { 7 = 0, x = 1 }")))
    with pytest.raises(ScenarioError, match=r"s\.toml:8: anatomy\.labels: the regions must be 0, 1, 2"):
        load_scenario(_write(tmp_path, NIFTI.replace("labels = { 7 = 0 }", "labels = { 7 = 1 }")))
    with pytest.raises(ScenarioError, match=r"s\.toml: anatomy: seg\.nii: labels \[9\] are not in the volume"):
        build_world(load_scenario(_write(tmp_path, NIFTI.replace("{ 7 = 0 }", "{ 7 = 0, 9 = 0 }"))))
    with pytest.raises(ScenarioError, match=r"s\.toml:5: anatomy\.labels: missing \(needed by a nifti anatomy\)"):
        load_scenario(_write(tmp_path, NIFTI.replace("labels = { 7 = 0 }\n", "")))


def test_a_dicom_seg_anatomy_builds_one_material_per_segment(tmp_path):
    from physics.anatomy import write_example_dicom_seg

    write_example_dicom_seg(tmp_path / "seg.dcm")
    text = NIFTI.replace(
        'kind = "nifti"\npath = "seg.nii"\nlabels = { 7 = 0 }',
        'kind = "dicom_seg"\npath = "seg.dcm"\nlabels = { 2 = 0 }',
    )
    model = build_world(load_scenario(_write(tmp_path, text)))
    assert model.n_tets == 12 * 2 * 2 * 6  # the example's vessel: 2 x 2 voxels along 12 columns


SUTURE = GOOD.replace('instruments = ["grasper"]', 'instruments = ["grasper", "needle_driver"]').replace(
    "[[steps]]",
    """[suture]
hand = "left"
[suture.needle]
radius = 0.008
arc = 0.5
[suture.thread]
length = 0.06
segment_length = 0.002
material = "silk"
[[suture.targets]]
id = "a"
entry = [-0.005, 0.01, 0.0]
exit = [0.005, 0.01, 0.0]
[[steps]]
id = "stitch"
title = "stitch"
check = { kind = "stitch_placed", target = "a" }
[[steps]]""",
    1,
)


def test_a_suture_section_gives_the_needle_the_thread_and_the_targets(tmp_path):
    scenario = load_scenario(_write(tmp_path, SUTURE))
    suture = scenario.suture
    assert suture.hand == "left" and suture.loaded and suture.needle_position is None
    assert suture.needle.radius == 0.008 and abs(suture.needle.arc_angle - np.pi) < 1e-12
    assert suture.thread.segments == 30 and suture.thread.segment_length == 0.002
    assert suture.thread.bend_compliance > load_scenario("suturing").suture.thread.bend_compliance  # silk is supple
    assert suture.target("a").entry == (-0.005, 0.01, 0.0) and suture.target("a").tolerance == 0.003
    assert scenario.steps[0].check.target == "a" and scenario.steps[0].check.box is None
    assert load_scenario(_write(tmp_path, GOOD)).suture is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("radius = 0.008", "radius = 0.2"), "suture.needle.radius: 0.2 is not in [0.002, 0.05]"),
        (("arc = 0.5", "arc = 1.5"), "suture.needle.arc: 1.5 is not in [0.1, 0.9]"),
        (('hand = "left"', 'hand = "third"'), "suture.hand: unknown 'third'"),
        (('material = "silk"', 'material = "wire"'), "suture.thread.material: unknown 'wire'"),
        (
            ("length = 0.06\nsegment_length = 0.002", "length = 0.015\nsegment_length = 0.01"),
            "suture.thread.length: at least two segments long",
        ),
        (
            ("length = 0.06\nsegment_length = 0.002", "length = 1.5\nsegment_length = 0.0005"),
            "suture.thread.segment_length: at most",
        ),
        (('target = "a"', 'target = "b"'), "steps[0].check.target: no stitch target 'b'"),
        (('target = "a"', 'target = "a", box = { lo = [0, 0, 0], hi = [1, 1, 1] }'), "steps[0].check.box: not a key"),
        (('{ kind = "stitch_placed", target = "a" }', '{ kind = "stitch_placed" }'), "steps[0].check.target: missing"),
        (("exit = [0.005, 0.01, 0.0]", "exit = [-0.005, 0.01, 0.0]"), "suture.targets[0].exit: must differ"),
        (('instruments = ["grasper", "needle_driver"]', 'instruments = ["grasper"]'), "instruments: a scenario with"),
    ],
)
def test_bad_suture_sections_name_the_key(tmp_path, change, message):
    old, new = change
    assert old in SUTURE
    with pytest.raises(ScenarioError, match=r"^s\.toml:\d+: ") as caught:
        load_scenario(_write(tmp_path, SUTURE.replace(old, new, 1)))
    assert message in str(caught.value), str(caught.value)


def test_suture_steps_need_a_suture_section_and_incisions_a_plane_of_vertices(tmp_path):
    no_suture = GOOD.replace('{ kind = "displacement", distance = 0.01, box = { lo = [-1, -1, -1], hi = [1, 1, 1] } }',
                             '{ kind = "knot_tied", knot = "square" }')  # fmt: skip
    with pytest.raises(ScenarioError, match=r"steps\[0\]\.check\.kind: needs a \[suture\] section"):
        load_scenario(_write(tmp_path, no_suture))
    incised = GOOD.replace(
        "cells = [4, 2, 2]", "cells = [4, 2, 2]\nincision = { x = 0.0, depth = 0.005, z = [-0.004, 0.004] }"
    )
    scenario = load_scenario(_write(tmp_path, incised))
    model = build_world(scenario)
    assert model.wound_pairs.shape[1] == 2 and model.wound_pairs.shape[0] > 0  # the lips, paired
    off_plane = incised.replace("x = 0.0", "x = 0.0013")
    with pytest.raises(ScenarioError, match=r"anatomy\.incision: slit: no mesh vertex"):
        build_world(load_scenario(_write(tmp_path, off_plane)))
    backwards = incised.replace("z = [-0.004, 0.004]", "z = [0.004, -0.004]")
    with pytest.raises(ScenarioError, match=r"anatomy\.incision\.z: \[from, to\] with to > from"):
        load_scenario(_write(tmp_path, backwards))


CUT = SUTURE.replace(
    'instruments = ["grasper", "needle_driver"]', 'instruments = ["grasper", "needle_driver", "scissors"]'
).replace(
    """check = { kind = "stitch_placed", target = "a" }
[[steps]]""",
    """check = { kind = "stitch_placed", target = "a" }
[[steps]]
id = "cut"
title = "cut the stitch's thread above its knot"
check = { kind = "thread_cut", target = "a", tail = [0.002, 0.004] }
[[steps]]""",
    1,
)


def test_a_thread_cut_step_names_its_stitch_and_the_tails_it_accepts(tmp_path):
    scenario = load_scenario(_write(tmp_path, CUT))
    check = scenario.steps[1].check
    assert check.kind == "thread_cut" and check.target == "a" and check.tail == (0.002, 0.004)
    plain = load_scenario(_write(tmp_path, CUT.replace(', target = "a", tail = [0.002, 0.004]', "")))
    assert plain.steps[1].check.tail == (0.003, 0.005) and plain.steps[1].check.target is None  # 3-5 mm, any
    interrupted = load_scenario("interrupted_closure")
    kinds = [s.check.kind for s in interrupted.steps]
    assert kinds.count("thread_cut") == 2 and kinds.count("stitch_placed") == 2 and kinds.count("knot_tied") == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("tail = [0.002, 0.004]", "tail = [0.004, 0.002]"), "steps[1].check.tail: must be [shortest, longest]"),
        (("tail = [0.002, 0.004]", "tail = [0.0, 0.004]"), "steps[1].check.tail: must be [shortest, longest]"),
        (("tail = [0.002, 0.004]", "tail = [0.002, 0.2]"), "steps[1].check.tail[1]: 0.2 is not in [0.0, 0.05]"),
        (("tail = [0.002, 0.004]", "tail = [0.002]"), "steps[1].check.tail"),
        (('target = "a", tail', 'target = "z", tail'), "steps[1].check.target: no stitch target 'z'"),
        (('"needle_driver", "scissors"]', '"needle_driver"]'), "steps[1].check.kind: a thread_cut step needs scissors"),
        (("tail = [0.002, 0.004]", 'tail = [0.002, 0.004], knot = "square"'), "steps[1].check.knot: not a key"),
    ],
)
def test_bad_thread_cut_steps_name_the_key(tmp_path, change, message):
    old, new = change
    assert old in CUT
    with pytest.raises(ScenarioError, match=r"^s\.toml:\d+: ") as caught:
        load_scenario(_write(tmp_path, CUT.replace(old, new, 1)))
    assert message in str(caught.value), str(caught.value)
