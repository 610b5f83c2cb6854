"""loadtests.input_cost: the batch input path leaves the room and the clients exactly as the per-pose one did."""

from __future__ import annotations

import json
import random

from loadtests import input_cost
from loadtests.team import team_roles

ROLES = [role for role, _ in team_roles(4, 0)]
WORKSPACE_SCENARIO = "block_5k"


def _workspace():
    import tempfile
    from pathlib import Path

    from twisted.internet.task import Clock

    from rehearsal.server import RehearsalServer
    from rehearsal.settings import load_settings

    with tempfile.TemporaryDirectory() as data:
        settings = load_settings(None, env={}, data_dir=Path(data), scenario_dir=input_cost.SCENARIO_DIR)
        server = RehearsalServer(settings, Clock())
        try:
            return server.rooms[server.create_session(WORKSPACE_SCENARIO)].room.workspace
        finally:
            server.stop()


def test_both_paths_end_in_the_same_room_state_on_a_stream_with_damaged_packets():
    packets = input_cost.stream(_workspace(), ROLES, 1.0, 3)
    rng = random.Random(7)
    damaged = []
    for frame, n, packet in packets:  # a few cut or flipped packets among the good ones
        if rng.random() < 0.1:
            data = bytearray(packet)
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            packet = bytes(data[: rng.choice([len(data), len(data) - 1])])
        damaged.append((frame, n, packet))
    old = input_cost.replay(WORKSPACE_SCENARIO, ROLES, damaged, False, state=True)
    new = input_cost.replay(WORKSPACE_SCENARIO, ROLES, damaged, True, state=True)
    assert old["state"][0], "some hand input was accepted"
    assert new["state"] == old["state"]
    assert (new["poses"], new["refused"]) == (old["poses"], old["refused"])
    assert new["malformed"] > 0


def test_main_prints_json(capsys):
    assert input_cost.main(["--seconds", "1", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["packets"] == 60 * len(ROLES)
    assert result["batch"]["poses"] == result["per_pose"]["poses"] > 0
