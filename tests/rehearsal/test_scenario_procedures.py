"""The packaged scenarios' procedures, done by scripted hands in a Room under each scenario's own solver: the
stiff ones run the implicit solver, and their retraction, division and cautery still work there (the grasp
does not tear, the cut divides, the hook coagulates, nothing inverts)."""

import numpy as np
import pytest

from physics.instruments import SPECS, Kind, look_rotation, quat_to_matrix
from physics.model import inverted_tets
from rehearsal.bots import CutScript, SurgeonScript
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario

DOWN = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))
# The hook's energised tip below its hinge when it points down (the hinge goes this much above the tissue).
TIP_BELOW = -float((quat_to_matrix(DOWN) @ np.asarray(SPECS[Kind.CAUTERY_HOOK]().energy_tip))[1])
SECONDS = 8.5  # retraction by 3.4 s, four snips by 6.1 s, the hook energised 6.8-7.8 s


def _ramp(t: float, t0: float, t1: float, a: float, b: float) -> float:
    """a before t0, b after t1, linear between."""
    return a if t <= t0 else b if t >= t1 else a + (b - a) * (t - t0) / (t1 - t0)


def _scripts(name: str, lo: np.ndarray, hi: np.ndarray):
    """(grasp script, its height offset, cut script, its height offset, hook point) for this anatomy."""
    if name == "cholecystectomy":  # the fundus at +x (top 1 cm), the duct at -x (2 mm radius at y = 0)
        grasp = SurgeonScript(x=0.036, z=0.0, lift=0.025)
        cut = CutScript(x=-0.056, zs=[-0.001, 0.0, 0.001, 0.0], start=0.4)
        return grasp, 0.01 - 0.02, cut, 0.002 - 0.02, (0.0, hi[1], 0.0)
    c, half = (lo + hi) / 2, (hi - lo) / 2
    lift = hi[1] - 0.02  # the scripts' heights assume a top at y = 0.02
    grasp = SurgeonScript(x=c[0] - 0.25 * half[0], z=c[2], lift=0.015)
    cut = CutScript(x=c[0] + 0.05 * half[0], zs=[c[2] + f * half[2] for f in (-0.75, -0.25, 0.25, 0.75)], start=0.4)
    return grasp, lift, cut, lift, (c[0] + 0.5 * half[0], hi[1], c[2] + 0.75 * half[2])  # off the vessel


def run_procedure(name: str) -> tuple[Room, list[str], int]:
    """The lead retracts with the grasper, the assistant snips across, then touches the hook down energised."""
    scenario = load_scenario(name)
    room = Room("procedure", scenario)
    room.join(Identity(room.session, 1, Role.LEAD_SURGEON, "lead")).hands["right"] = Kind.GRASPER
    assistant = room.join(Identity(room.session, 2, Role.ASSISTANT_SURGEON, "assistant"))
    assistant.hands["right"] = Kind.SCISSORS
    assistant.hands["left"] = Kind.CAUTERY_HOOK
    room.start()
    rest = room.model.rest_positions
    grasp, grasp_dy, cut, cut_dy, hook = _scripts(name, rest.min(axis=0), rest.max(axis=0))
    dt = 1.0 / scenario.tick_hz
    kinds, inverted = [], 0
    for tick in range(1, int(SECONDS * scenario.tick_hz) + 1):
        t = tick * dt
        p, jaw = grasp.pose(t)
        room.instrument_input(1, "right", [p[0], p[1] + grasp_dy, p[2]], DOWN, jaw, False, t, received_at=t)
        p, jaw = cut.pose(t)
        room.instrument_input(2, "right", [p[0], p[1] + cut_dy, p[2]], DOWN, jaw, False, t, received_at=t)
        y = TIP_BELOW + _ramp(t, 6.3, 6.8, hook[1] + 0.03, hook[1] - 0.001) + _ramp(t, 7.8, 8.2, 0.0, 0.03)
        room.instrument_input(2, "left", [hook[0], y, hook[2]], DOWN, 0.0, 6.8 <= t <= 7.8, t, received_at=t)
        report = room.advance(dt)
        kinds += [e.kind for e in report.events]
        if tick % 30 == 0:
            inverted = max(inverted, inverted_tets(room.model, room.physics.x))
    return room, kinds, inverted


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cholecystectomy", "vessel_in_parenchyma"])
def test_a_stiff_scenario_runs_implicitly_and_its_procedure_still_works(name):
    room, kinds, inverted = run_procedure(name)
    assert room.scenario.solver == "implicit"
    steps = {s["id"]: s["status"] for s in room.progress()["steps"]}
    goals = [s.id for s in room.procedure.steps if s.kind != "no_energy_near"]
    assert all(steps[g] == "done" for g in goals), steps
    assert all(status in ("ok", "done") for status in steps.values()), steps
    assert "grasp" in kinds and "tear" not in kinds and "cut" in kinds
    assert room.physics.damage.max() > 0.0 and room.physics.counters["energy_frames"] > 0  # the hook coagulated
    assert inverted == 0 and inverted_tets(room.model, room.physics.x) == 0
    assert np.all(np.isfinite(room.physics.x)) and room.counters["solver_nonfinite_resets"] == 0
