"""The debrief of a real short session with a cut: it agrees with the stored result, its timeline holds the
cut and the mentor's actions, its series are sampled at 10 Hz, and its 3D track decodes with the project's
snapshot decoder to the same surface whether a decoder plays it through or starts at a keyframe."""

from pathlib import Path

import numpy as np
import pytest

from netcode.sync.snapshot_decode import SnapshotDecoder
from rehearsal.debrief import PRELUDE, SERIES_HZ, build_debrief, read_track
from rehearsal.results_store import RESULTS_FILE, ResultsStore
from tests.rehearsal.debrief_helpers import cut_session


@pytest.fixture(scope="module")
def debrief(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("debrief") / "data"
    cut_session(data_dir, seconds=4.5)  # long enough for three keyframes
    store = ResultsStore(data_dir / RESULTS_FILE)
    try:
        stored = store.session("s-cut")
    finally:
        store.close()
    return build_debrief(Path(stored["recording"]), stored)


def test_it_agrees_with_the_stored_result_and_lists_what_happened(debrief):
    s = debrief.summary
    assert s["agrees"] and not s["mismatches"]
    stored = {str(p["participant"]): p["skills"] for p in s["stored"]["participants"] if p["skills"]}
    assert s["replayed"]["participants"] == stored
    kinds = [e["kind"] for e in s["timeline"]]
    assert "cut" in kinds and "complication_started" in kinds
    annotation = next(e for e in s["timeline"] if e["kind"] == "annotation")
    assert annotation["name"] == "Mentor" and annotation["detail"]["text"] == "cut here"
    cut = next(e for e in s["timeline"] if e["kind"] == "cut")
    assert cut["participant"] == 1 and cut["hand"] == "right" and cut["name"] == "Dr. Lead"
    times = [e["t"] for e in s["timeline"]]
    assert times == sorted(times)
    t = s["series"]["t"]
    assert len(t) == pytest.approx(s["simulated_seconds"] * SERIES_HZ, abs=1)
    lanes = s["series"]["participants"]["1"]["right"]
    assert {"force_n", "path_length_m", "mean_squared_jerk"} <= set(lanes)
    assert all(len(v) == len(t) for v in lanes.values())
    path = lanes["path_length_m"]
    assert path == sorted(path) and path[-1] == pytest.approx(
        stored["1"]["hands"]["right"]["metrics"]["path_length_m"], rel=0.05
    )


def _decode(messages, start, stop, skip_prelude_after):
    decoder = SnapshotDecoder()
    for i in range(start, stop + 1):
        flag, data = messages[i]
        if flag == PRELUDE and i > skip_prelude_after:
            continue
        decoder.on_message(data)
    return decoder


def test_the_track_decodes_the_same_from_any_keyframe(debrief):
    messages = read_track(debrief.track)
    index = debrief.summary["track"]
    assert len(messages) == index["messages"] and len(debrief.track) == index["bytes"]
    frames, keyframes = index["frames"], index["keyframes"]
    assert keyframes[0] == 0 and len(keyframes) >= 3
    gaps = np.diff([frames[k][0] for k in keyframes])
    assert np.all((gaps >= 1.9) & (gaps <= 2.2))
    last = len(frames) - 1
    through = _decode(messages, 0, frames[last][1], skip_prelude_after=frames[0][1])
    k = keyframes[-1]
    start = frames[k][1]
    while start > 0 and messages[start - 1][0] == PRELUDE:
        start -= 1
    assert start < frames[k][1]  # the keyframe has its prelude
    seeked = _decode(messages, start, frames[last][1], skip_prelude_after=frames[k][1])
    np.testing.assert_array_equal(seeked.surface()[0], through.surface()[0])
    assert seeked.epoch == through.epoch > 1  # cuts made new epochs
    assert seeked.surface()[1].all()
    first = _decode(messages, 0, frames[0][1], skip_prelude_after=frames[0][1])
    assert first.epoch == 1 and not np.array_equal(first.layout.vertex_ids, through.layout.vertex_ids)  # cut
