"""Shared scenes, the demo's command line and the benchmark's JSON (small, fast settings)."""

import json

import meshio
import numpy as np
import pytest

from physics import bench, demo
from physics.instruments import grasper
from physics.model import inverted_tets, live_volume
from physics.scenes import (
    GRASPER_ID,
    SCISSORS_ID,
    Key,
    Track,
    block_cantilever_scene,
    block_cells,
    block_grasp_scene,
    liver_scene,
)
from physics.solver import step


def test_block_cells_are_roughly_cubic_and_near_the_target():
    for target in (5_000, 20_000, 80_000):
        cells = block_cells(target)
        tets = 6 * int(np.prod(cells))
        assert abs(tets / target - 1) < 0.15
        edges = np.array([0.12, 0.04, 0.06]) / np.array(cells)
        assert edges.max() / edges.min() < 1.3
    assert block_cells(6, (1.0, 1.0, 1.0)) == (1, 1, 1)
    with pytest.raises(ValueError):
        block_cells(0)


def test_track_interpolates_between_keys_and_is_absent_outside():
    track = Track(
        3,
        grasper(),
        [Key(10, (0.0, 0.0, 0.0), (0.0, -1.0, 0.0), 1.0), Key(20, (0.1, 0.0, 0.0), (0.0, -1.0, 0.0), 0.0)],
    )
    assert track.input(9) is None and track.input(21) is None
    mid = track.input(15)
    assert mid.id == 3 and np.allclose(mid.position, [0.05, 0.0, 0.0]) and mid.jaw == pytest.approx(0.5)
    assert np.isclose(np.linalg.norm(mid.orientation), 1.0)
    assert np.allclose(track.input(20).position, [0.1, 0.0, 0.0])
    with pytest.raises(ValueError):
        Track(0, grasper(), [Key(5, (0, 0, 0), (0, 0, 1), 0.0), Key(1, (0, 0, 0), (0, 0, 1), 0.0)])


def test_block_grasp_scene_grasps_and_pulls_with_contact():
    scene = block_grasp_scene(1_000, pull_frames=4)
    model, state = scene.model, scene.state
    assert list(scene.phases) == ["settle", "approach", "close", "pull"]
    assert scene.phases["pull"][1] == scene.n_frames
    kinds, contacts = [], 0
    for f in range(scene.n_frames):
        report = step(model, state, scene.control(f), substeps=10)
        kinds += [e.kind for e in report.events]
        contacts += report.counts["instrument_contacts"]
    assert "grasp" in kinds and "tear" not in kinds
    inst = state.instruments[GRASPER_ID]
    assert inst.grasp is not None and inst.grasp.vertices.shape[0] >= 1
    assert 0.0 < float(np.linalg.norm(inst.grasp.force)) < inst.grasp.tear_force
    assert contacts > 0
    assert np.all(np.isfinite(state.x))
    assert inverted_tets(model, state.x) == 0
    assert live_volume(model, state.x) == pytest.approx(live_volume(model, model.rest_positions), rel=0.02)


def test_cantilever_sags_at_its_free_end():
    scene = block_cantilever_scene(600)
    model, state = scene.model, scene.state
    tip = scene.info["tip_vertices"]
    assert tip.size > 0 and np.allclose(model.rest_positions[tip, 0], model.rest_positions[:, 0].max())
    assert np.all(model.inv_mass[model.rest_positions[:, 0] <= model.rest_positions[:, 0].min() + 1e-9] == 0)
    for f in range(5):
        step(model, state, scene.control(f), substeps=10)
    assert np.mean(state.x[tip, 1] - model.rest_positions[tip, 1]) < -1e-4


def test_liver_scene_builds_and_runs_a_few_frames():
    scene = liver_scene(0.012)
    model, state = scene.model, scene.state
    assert model.anchor_vertex.size > 0 and model.environment.planes.shape[0] == 1
    starts = [scene.phases[k][0] for k in ("settle", "approach", "grasp", "pull", "cut", "withdraw")]
    assert starts == sorted(starts) and scene.phases["withdraw"][1] == scene.n_frames
    ids = {c.id for c in scene.control(scene.phases["grasp"][0]).instruments}
    assert ids == {GRASPER_ID}
    ids = {c.id for c in scene.control(scene.phases["cut"][0]).instruments}
    assert ids == {GRASPER_ID, SCISSORS_ID}
    assert scene.control(scene.n_frames + 5).instruments == []
    for f in range(3):
        step(model, state, scene.control(f), substeps=5)
    assert np.all(np.isfinite(state.x))


def test_demo_cli_writes_readable_surfaces(tmp_path, capsys):
    out = tmp_path / "frames"
    rc = demo.main(
        ["--frames", "3", "--substeps", "4", "--resolution", "0.012", "--out", str(out), "--save-frames", "0,2,9"]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "frame    1" in text and "summary:" in text and "final surface triangles" in text
    files = sorted(p.name for p in out.iterdir())
    assert files == ["liver_0000.obj", "liver_0002.obj"]
    mesh = meshio.read(out / "liver_0002.obj")
    tris = mesh.cells_dict["triangle"]
    assert tris.shape[0] > 100 and np.all(np.isfinite(mesh.points))
    assert tris.max() < mesh.points.shape[0]


def test_demo_cli_vtu_and_save_every(tmp_path, capsys):
    rc = demo.main(["--frames", "2", "--substeps", "2", "--resolution", "0.012", "--out", str(tmp_path), "--format",
                    "vtu", "--save-every", "5", "--quiet"])  # fmt: skip
    assert rc == 0
    assert "frame    1" not in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["liver_0000.vtu", "liver_0002.vtu"]
    assert meshio.read(tmp_path / "liver_0002.vtu").cells_dict["triangle"].shape[0] > 100


@pytest.mark.parametrize(
    "argv",
    [
        ["--frames", "0"],
        ["--frames", "x"],
        ["--format", "stl"],
        ["--save-every", "2", "--save-frames", "1"],
        ["--save-frames", "-1"],
        ["--resolution", "1"],
        ["--threads", "4096"],
    ],
)
def test_demo_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_bench_quick_json_has_the_expected_keys(capsys):
    rc = bench.main(["--quick", "--sag-frames", "5", "--fidelity-sizes", "300", "--fidelity-materials", "8kPa"])
    assert rc == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # one JSON document, nothing else on stdout
    assert {"machine", "config", "timing", "accuracy", "goal", "grasp_ok", "wall_seconds"} <= doc.keys()
    assert {"cores", "numba", "threading_layer", "load_average_start"} <= doc["machine"].keys()
    assert doc["machine"]["threading_layer"] in ("omp", "tbb", "workqueue")
    (entry,) = doc["timing"]
    assert {"tets", "substeps", "threads", "median_ms", "p90_ms", "ns_per_tet_iteration", "grasp", "contacts"} <= (
        entry.keys()
    )
    assert entry["tets"] == 6 * int(np.prod(entry["cells"]))
    assert entry["grasp"]["taken"] and entry["grasp"]["held"] and doc["grasp_ok"]
    assert entry["median_ms"] > 0 and entry["ns_per_tet_iteration"] > 0
    (acc,) = doc["accuracy"]
    assert {"volume_drift_end", "volume_drift_max_abs", "inverted_tets_max"} <= acc["pull"]["20"].keys()
    sag = acc["sag"]
    assert sag["reference_substeps"] == 200 and "relative_error" in sag["by_substeps"]["20"]
    assert {"passed", "measured"} <= doc["goal"].keys() and doc["goal"]["measured"] is None
    fid = doc["fidelity"]
    entry = fid["sizes"]["300"]["8kPa"]
    assert fid["substeps"] == 20 and {"bending", "stretching", "volume", "grasp", "summary"} <= entry.keys()
    assert set(entry["volume"]) == {"nu0.45_stretch20", "nu0.45_compress20", "nu0.49_stretch20", "nu0.49_compress20"}
    assert 0.5 < entry["summary"]["bending_stiffness"] <= 1.05 and entry["bending"]["newton_converged"]
    assert isinstance(fid["passed"], bool) and isinstance(fid["failures"], list)
    topo = doc["topology"]
    assert topo["size"] == 1000 and set(topo) == {"size", "threads", "xpbd"}
    cut = topo["xpbd"]
    assert cut["cut_tets_removed"] > 0 and cut["notify_ms"] > 0 and cut["grasp_held"] and cut["finite"]
    assert {"bending_stiffness", "compression_stiffness", "instrument_force_error"} <= entry["summary"].keys()
    audit = {row["goal"]: row for row in doc["goal_audit"]}
    assert set(audit) == {
        "stiffness", "refinement", "volume", "grasp_force", "instrument_force", "inverted_at_rest", "inverted_yank",
        "deterministic_threads", "compiled_vs_cached", "frame_budget",
    }  # fmt: skip
    assert audit["stiffness"]["passed"] in (None, False) and "5kPa" in audit["stiffness"]["note"]  # one material
    assert audit["refinement"]["passed"] is None and audit["compiled_vs_cached"]["passed"] is None  # not run
    assert isinstance(audit["volume"]["passed"], bool) and audit["volume"]["fields"].startswith("fidelity.")
    det = doc["determinism"]
    assert det["compiled_vs_cached"] is None and len(next(iter(det["digest_by_threads"].values()))) == 64
    assert "size" in captured.err  # progress goes to stderr


def test_the_goal_audit_fails_a_soft_material_and_passes_refinement_only_when_not_softer():
    def entry(stiffness):
        runs = {kind: {"effective_stiffness": stiffness, "inverted_tets_max": 0} for kind in bench.STIFFNESS_KINDS}
        return {
            **runs,
            "volume": {"nu0.45_stretch20": {"inverted_tets_max": 0}},
            "grasp": {"force_error": 0.05, "inverted_tets_max": 0},
            "press": {"error": "the grasper touched no vertex"},
            "yank": {"inverted_tets_at_rest": 0, "inverted_fraction_max": 0.002},
            "summary": {"volume_error_pp_max_abs": 0.2},
        }

    fid = {"sizes": {"1000": {"1MPa": entry(0.99)}, "4000": {"1MPa": entry(0.85)}}}
    rows = {row["goal"]: row for row in bench.goal_audit(fid, None, {"measured": None, "passed": None})}
    assert rows["stiffness"]["passed"] is False and rows["stiffness"]["measured"]["min"] == 0.85
    assert rows["refinement"]["passed"] is False and rows["refinement"]["measured"]["fine"] == 4000
    assert rows["volume"]["passed"] and rows["grasp_force"]["passed"]
    assert rows["instrument_force"]["passed"] is False  # a run that measured nothing fails its row
    assert rows["inverted_yank"]["passed"] is False and rows["inverted_at_rest"]["passed"]
    assert rows["deterministic_threads"]["passed"] is None and rows["frame_budget"]["passed"] is None


def test_bench_fidelity_defaults_to_a_quick_subset_and_full_on_request():
    quick = bench.make_config(bench.build_parser().parse_args([]))
    assert quick.fidelity_sizes == [20000] and quick.fidelity_materials == ["8kPa", "1MPa"]
    full = bench.make_config(bench.build_parser().parse_args(["--fidelity-full"]))
    assert full.fidelity_sizes == [5000, 20000] and full.fidelity_materials == list(bench.MATERIALS)
    implicit = bench.make_config(bench.build_parser().parse_args(["--solver", "implicit", "--cg-iterations", "12"]))
    assert implicit.solver_options() == {"mode": "implicit", "cg_iterations": 12, "newton_steps": 1}


def test_bench_rejects_bad_arguments(capsys):
    for argv in (["--sizes", "abc"], ["--substeps", "0"], ["--threads", "4096"], ["--frames", "-1"]):
        with pytest.raises(SystemExit) as exc:
            bench.main(argv)
        assert exc.value.code == 2
    capsys.readouterr()


@pytest.mark.slow
def test_demo_default_scene_grasps_and_cuts(tmp_path, capsys):
    rc = demo.main(["--out", str(tmp_path), "--quiet", "--save-frames", "0"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "grasps 1" in text and "tears 0" in text and "cuts 0" not in text and "nonfinite resets 0" in text
