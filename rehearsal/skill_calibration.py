"""Calibrate a scenario's skill-metric limits from measured runs of the bot team.

    python -m rehearsal.skill_calibration basic_skills --runs 5      # JSON on stdout

Each run puts the demo's scripted surgeons (``rehearsal.bots``: the lead surgeon grasps and retracts with
``SurgeonScript``, the assistant snips across with ``CutScript``) into a ``Room`` in this process and steps it in
simulated time at the scenario's tick rate, so a run measures the bots, not the machine's load. Runs differ
by a seeded jitter of where (a few mm) and when (up to 0.3 s) each hand starts. The scripts are placed
relative to the anatomy's rest bounds, so they work the top of whatever the scenario holds.

The proposed limit of each calibrated metric (``CALIBRATED``) is the largest value any run's hand reached times
``MARGIN`` (2), rounded up to two significant figures: the bots are steady, competent operators, and a person
whose path is more than twice as long or as jerky as their worst run is wasteful. Error limits are not
calibrated (a bot's zero errors say nothing about a person's): they stay at ``Thresholds``' proficiency rules.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Sequence

import numpy as np

from physics.instruments import Kind
from rehearsal.bots import CutScript, SurgeonScript
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario
from rehearsal.skill_metrics import EFFICIENCY_METRICS

MARGIN = 2.0
# What a bot run can calibrate: how far and how smoothly a hand moves for this anatomy. Not the times
# (active, idle): a scripted run lasts as long as its script, whoever is skilled; and a metric the scripts
# never exercise (they do not turn the instrument, and each moves in a plane: no rotation, no volume) keeps
# its default rather than a limit of zero.
CALIBRATED = ("path_length_m", "mean_squared_jerk", "angular_path_rad", "volume_m3")
RUN_SECONDS = 7.0  # both scripts are done by then (the cut's four snips end at 5.9 s)
BLOCK_TOP = 0.02  # the scripts' heights assume a block whose top is at y = 0.02 m (basic_skills)


def round_up(value: float, digits: int = 2) -> float:
    """``value`` rounded up to ``digits`` significant figures (0 stays 0)."""
    if value <= 0.0:
        return 0.0
    scale = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return round(math.ceil(value / scale - 1e-9) * scale, 12)


def run_once(scenario_name: str, seed: int) -> list[dict[str, float]]:
    """One bot run in simulated time; the metrics of each hand that worked (lead's grasper, assistant's scissors)."""
    scenario = load_scenario(scenario_name)
    rng = random.Random(seed)
    room = Room(f"calibration-{seed}", scenario)
    lead = room.join(Identity(room.session, 1, Role.LEAD_SURGEON, "lead"))
    assistant = room.join(Identity(room.session, 2, Role.ASSISTANT_SURGEON, "assistant"))
    lead.hands["right"] = Kind.GRASPER
    if Kind.SCISSORS.value in scenario.instruments:
        assistant.hands["right"] = Kind.SCISSORS
    room.start()
    rest = room.model.rest_positions
    lo, hi = rest.min(axis=0), rest.max(axis=0)
    centre = (lo + hi) / 2
    lift = hi[1] - BLOCK_TOP  # move the scripts' heights onto this anatomy's top
    half_x, half_z = (hi[0] - lo[0]) / 2, (hi[2] - lo[2]) / 2

    def jitter() -> float:
        return rng.uniform(-0.003, 0.003)

    scripts = {
        1: SurgeonScript(x=centre[0] - 0.25 * half_x + jitter(), z=centre[2] + jitter(), lift=0.015),
        2: CutScript(
            x=centre[0] + 0.05 * half_x + jitter(),
            zs=[centre[2] + f * half_z for f in (-0.75, -0.25, 0.25, 0.75)],
            start=0.3 + rng.uniform(0.0, 0.3),
        ),
    }
    scripts[1].start = rng.uniform(0.0, 0.3)
    dt = 1.0 / scenario.tick_hz
    for tick in range(1, int(RUN_SECONDS * scenario.tick_hz) + 1):
        t = tick * dt
        for pid, script in scripts.items():
            position, jaw = script.pose(t)
            position = np.array([position[0], position[1] + lift, position[2]])
            room.instrument_input(pid, "right", position, script.rotation, jaw, False, t, received_at=t)
        room.advance(dt)
    hands = []
    for entry in room.skills.report()["participants"].values():
        hands.extend(hand["metrics"] for hand in entry["hands"].values())
    return hands


def calibrate(scenario_name: str, runs: int = 5) -> dict:
    """Every run's hands' worst metrics and the limits they propose (see the module doc)."""
    measured = [hand for seed in range(runs) for hand in run_once(scenario_name, seed)]
    worst = {m: max(hand[m] for hand in measured) for m in EFFICIENCY_METRICS}
    limits = {m: round_up(MARGIN * worst[m]) for m in CALIBRATED if worst[m] > 0.0}
    return {
        "scenario": scenario_name,
        "runs": runs,
        "hands_measured": len(measured),
        "margin": MARGIN,
        "worst": worst,
        "limits": limits,
        "kept_default": [m for m in EFFICIENCY_METRICS if m not in limits],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal.skill_calibration", description=__doc__.split("\n")[0])
    parser.add_argument("scenario", help="a scenario's name or file")
    parser.add_argument("--runs", type=int, default=5, help="bot runs, each with its own seed (default: %(default)s)")
    args = parser.parse_args(argv)
    json.dump(calibrate(args.scenario, max(1, args.runs)), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
