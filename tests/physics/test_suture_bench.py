import json
import math

import pytest

from physics import suture_bench


def test_the_quick_bench_prints_one_json_document_with_the_extra_frame_time(capsys):
    assert suture_bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)  # stdout is the JSON alone
    assert doc["benchmark"] == "physics.suture_bench"
    (entry,) = doc["timing"]
    assert entry["segments"] == 40 and entry["threads"] == 1 and entry["frames"] == 6
    assert entry["base_median_ms"] > 0 and entry["suturing_median_ms"] > 0
    assert len(entry["extra_ms_per_repeat"]) == entry["repeats"] == 2 and math.isfinite(entry["extra_ms"])
    assert set(entry["parts_ms"]) == {"before_step", "solver", "after_step", "needle", "thread", "knot_check", "frozen"}
    assert set(entry["parts_alone_ms"]) == {"needle", "thread", "knot_check", "frozen"}
    parts = entry["parts_ms"]
    assert parts["needle"] > 0 and parts["thread"] > 0 and parts["frozen"] > 0  # timed inside the frames
    assert parts["knot_check"] is None and entry["knot_check_ms_per_frame"] is None  # 6 frames: no check ran
    assert parts["needle"] + parts["thread"] + parts["frozen"] <= parts["after_step"]
    assert len(entry["frozen_hold_forces_n_end"]) == 2  # the tied stitch beside it: its two points
    assert entry["parts_ms"]["after_step"] > 0 and "extra_ms_by_parts" in entry
    assert entry["slides_end"] == 2 and entry["finite"]  # the thread still runs through both tissue points
    assert all(f > 0 for f in entry["hold_forces_n_end"])  # and pulls on them


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        suture_bench.main(["--sizes", "lots"])
    with pytest.raises(SystemExit):
        suture_bench.main(["--threads", "0"])
    assert "bad" in capsys.readouterr().err
