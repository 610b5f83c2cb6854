"""`rehearsal demo` end to end: the server subprocess and four scripted bots over loopback UDP.

Slow: the server warms up its physics and snapshot kernels before it listens (~15 s with a warm numba
cache), then the bots operate for 6 s.
"""

from __future__ import annotations

import pytest

from rehearsal.demo import main, run_demo


@pytest.mark.slow
def test_the_demo_team_connects_operates_and_sees_the_mentor(tmp_path):
    lines: list[str] = []
    summary = run_demo(seconds=6, out=lines.append, keep_dir=tmp_path / "kept")

    assert summary["ok"], lines
    assert summary["server_exit"] == 0, summary["server_log_tail"]
    bots = summary["bots"]
    assert set(bots) == {"lead_surgeon", "assistant_surgeon", "scrub_nurse", "mentor"}
    for name, bot in bots.items():
        assert bot["welcomed"] and bot["connected"], name
        assert bot["snapshots"] >= 100 and bot["snapshot_errors"] == 0, (name, bot)
        assert bot["downlink_kbit_s"] > 0, name
        assert bot["events"]["pause"] == 1 and bot["events"]["resume"] == 1, (name, bot["events"])
        assert bot["events"]["inject_complication"] == 1, (name, bot["events"])
        assert bot["events"]["hand_instrument"] == 1, (name, bot["events"])
        assert not bot["refused"], (name, bot["refused"])
    assert summary["unsent_commands"] == 0
    # the lead's thin client drew every frame, its own instrument from local tracking
    view = summary["lead_view"]
    assert view["frames"] > 100 and view["tracked_frames"] == view["frames"], view
    assert summary["bots"]["lead_surgeon"]["clock_rtt_ms"] is not None  # its input acks synchronised its clock
    # a status line per second and a summary were printed
    status = [line for line in lines if line.startswith("t=")]
    assert len(status) >= 5 and "clients=4/4" in status[-1] and "kbit/s" in status[-1] and "lead view=" in status[-1]
    assert "--- summary ---" in lines
    assert any(line.startswith("watch live in a browser: http://localhost:") and "/?code=" in line for line in lines)
    assert any(f"/debrief?session={summary['session']}#key=" in line for line in lines)  # where its debrief opens
    # the scripted surgery happened: the lead's grasper grasped, the assistant's scissors cut
    for name, bot in bots.items():
        assert bot["events"]["grasp"] >= 1 and bot["events"]["cut"] >= 1, (name, bot["events"])
        assert bot["events"]["complication_started"] == 1, (name, bot["events"])
    # the lead's retraction completed the first step, and the server kept the session's result
    assert summary["steps"][0]["id"] == "retract" and summary["steps"][0]["status"] == "done", summary["steps"]
    assert any(line.startswith("t=") and "step=divide" in line for line in lines)
    assert summary["bots"]["assistant_surgeon"]["events"]["cut"] >= 4  # a snip at each of four places
    result = summary["result"]
    assert result["session"] == summary["session"] and result["steps"][0]["status"] == "done"
    lead = next(p for p in result["participants"] if p["role"] == "lead_surgeon")
    assert lead["skills"]["hands"]["right"]["metrics"]["path_length_m"] > 0.01
    # the data is kept, and the demo says how to replay the session and see its results
    data = tmp_path / "kept" / "data"
    session = summary["session"]
    assert (data / "recordings" / f"{session}.rec").is_file()
    assert f"the demo's data is kept in {data}" in lines
    assert any(line.endswith(f"-m rehearsal replay {data / 'recordings' / session}.rec") for line in lines), lines
    assert any(line.endswith(f"-m rehearsal results --data-dir {data} --session {session}") for line in lines)
    print("\n".join(lines))


def test_main_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        main(["--seconds", "not-a-number"])


def test_the_debrief_line_holds_a_key_for_the_session_signed_with_the_data_folders_secret(tmp_path):
    from rehearsal.demo import debrief_line
    from rehearsal.web.debrief_access import DebriefAccess

    line = debrief_line(8080, tmp_path, "s-demo")
    assert "http://localhost:8080/debrief?session=s-demo#key=" in line
    key = line.split("#key=", 1)[1].split()[0]
    assert f"rehearsal serve --data-dir {tmp_path}" in line  # where it opens after the demo (its data kept)
    assert DebriefAccess.from_data_dir(tmp_path).check(key, "s-demo") is None
