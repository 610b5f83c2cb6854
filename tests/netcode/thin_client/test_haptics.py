"""The haptic loop: passive against a stiff wall at 100 ms RTT, tracking the server's force, bounded thread."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from netcode.protocol.forces import ForceReport
from netcode.thin_client.haptics import HapticConfig, HapticLoop, LocalForceModel, PassivityController
from netcode.thin_client.haptics_devices import SimulatedHand
from netcode.thin_client.haptics_sim import load_trace, simulate, trace_law, wall_law

TRACE = Path(__file__).parents[3] / "netcode" / "thin_client" / "haptics_pull_trace.json"


def pushing(t: float) -> np.ndarray:
    """A hand meaning to push 4 mm into a wall at y = 0 and back out, every two seconds."""
    return np.array([0.0, 0.004 - 0.008 * (0.5 - 0.5 * np.cos(np.pi * t)), 0.0])


def holding(t: float) -> np.ndarray:
    """A hand that presses into the wall and stays."""
    return np.array([0.0, 0.004 - 0.008 * min(t / 0.5, 1.0), 0.0])


@pytest.mark.parametrize("intent", [pushing, holding])
def test_no_energy_gain_over_10_s_against_a_stiff_wall_at_100_ms_rtt(intent):
    passive = simulate(wall_law(1000.0), intent, duration=10.0, rtt=0.1)
    active = simulate(wall_law(1000.0), intent, duration=10.0, rtt=0.1, config=HapticConfig(passivity=False))
    assert passive.work <= 0.0  # the hand got no energy out of the rendered wall
    assert passive.loop.passivity.energy >= 0.0
    assert active.work > 0.1  # what latency does without the controller: the wall pushes energy out
    assert passive.loop.stats.passivity_cycles > 0  # it acted


def test_no_buzzing_while_holding_against_the_wall():
    passive = simulate(wall_law(1000.0), holding, duration=4.0, rtt=0.1)
    active = simulate(wall_law(1000.0), holding, duration=4.0, rtt=0.1, config=HapticConfig(passivity=False))
    settled = passive.times > 2.0
    y = passive.positions[settled, 1]
    assert y.max() - y.min() < 1e-4  # the hand rests (the uncontrolled loop bounces by centimetres)
    assert passive.buzz(2.0) < 0.01 < active.buzz(2.0)
    f = passive.rendered[settled, 1]
    assert abs(f.mean() - passive.truth[settled, 1].mean()) < 0.02  # and feels the wall's force


def test_rendered_force_tracks_the_servers_force_in_a_grasp_and_pull_at_100_ms_rtt():
    s, forces, direction, meta = load_trace(TRACE)
    assert meta["scenario"] == "basic_skills" and len(s) > 20
    law = trace_law(s, forces, direction)

    def pull(t: float) -> np.ndarray:
        ramp = min(max((t - 0.2) / 0.75, 0.0), 1.0)
        return direction * s[-1] * (0.5 - 0.5 * np.cos(np.pi * ramp))

    local = simulate(law, pull, duration=2.0, rtt=0.1)
    naive = simulate(law, pull, duration=2.0, rtt=0.1, config=HapticConfig(local_model=False, passivity=False))
    assert local.force_error(0.2) < 0.5 * naive.force_error(0.2)  # the local model beats holding the newest force
    assert local.work <= 0.0
    late = local.times > 1.5  # after the pull: the rendered force is the tissue's
    assert np.abs(local.rendered[late] - local.truth[late]).max() < 0.1


def test_the_passivity_controller_stays_out_of_a_passive_slow_contact():
    soft = simulate(wall_law(100.0), holding, duration=2.0, rtt=0.0)
    stats = soft.loop.stats
    assert stats.passivity_cycles < 0.15 * stats.cycles  # only at the contact's onset, building its margin
    assert stats.energy_dissipated < 0.5 * stats.energy_absorbed
    assert soft.force_error(1.0) < 0.05


def test_the_observer_credits_absorbed_energy_and_damps_a_deficit():
    config = HapticConfig(energy_margin=0.0, max_damping=1e3)
    pc = PassivityController(config)
    dt = 1e-3
    assert pc.filter(np.array([1.0, 0, 0]), np.zeros(3), dt).tolist() == [0, 0, 0]  # first cycle: at rest
    out = pc.filter(np.array([1.0, 0, 0]), np.array([-1e-3, 0, 0]), dt)  # pushing into a 1 N force: absorbing
    assert out.tolist() == [1.0, 0, 0] and pc.energy == 0.0
    pc.filter(np.array([1.0, 0, 0]), np.array([-2e-3, 0, 0]), dt)
    assert pc.energy == pytest.approx(1e-3)  # 1 N over 1 mm
    out = pc.filter(np.array([1.0, 0, 0]), np.array([0.0, 0, 0]), dt)  # now the force would push it back fast
    assert out[0] < 1.0 and pc.active_cycles == 1
    assert pc.energy - float(out @ np.array([2.0, 0, 0])) * dt == pytest.approx(0.0, abs=1e-12)


def test_the_controller_leaves_a_force_that_resists_the_motion_alone():
    """W is still below the margin at a pull's start, but a force against the motion only adds to W: no damping
    (damping it cost the grasp-and-pull most of its force error)."""
    pc = PassivityController(HapticConfig())
    dt = 1e-3
    pc.filter(np.array([-0.1, 0, 0]), np.zeros(3), dt)
    for i in range(1, 5):  # pulled along +x at 20 mm/s against a 0.1 N grasp
        out = pc.filter(np.array([-0.1, 0, 0]), np.array([2e-5 * i, 0, 0]), dt)
        assert out.tolist() == [-0.1, 0, 0]
    assert pc.active_cycles == 0 and 0 < pc.energy < HapticConfig().energy_margin
    out = pc.filter(np.array([-0.1, 0, 0]), np.array([0.0, 0, 0]), dt)  # now it pulls the hand back: damped
    assert out[0] > -0.1 and pc.active_cycles == 1


def test_the_local_model_estimates_stiffness_and_never_flips_the_force():
    model = LocalForceModel(HapticConfig())
    for depth in (0.001, 0.002, 0.003, 0.004, 0.005, 0.006):
        model.update(np.array([0.0, 500.0 * depth, 0.0]), np.array([0.0, -depth, 0.0]))
    assert 300 < model.stiffness <= 500
    assert model.at(np.array([0.0, -0.007, 0.0]))[1] > 3.3  # deeper: more force
    assert model.at(np.array([0.0, 0.05, 0.0]))[1] == 0.0  # well out: no pull from a wall
    model.update(np.zeros(3), np.array([0.0, 0.01, 0.0]))
    assert model.stiffness == 0.0  # contact ended
    model.update(np.array([np.nan, 0, 0]), np.zeros(3))  # garbage is not rendered
    assert model.force.tolist() == [0, 0, 0]


def test_forces_messages_feed_the_loop_newest_first():
    hand = SimulatedHand(lambda t: np.zeros(3))
    loop = HapticLoop(hand, 32768, HapticConfig(passivity=False, smoothing=1e-3))
    report = ForceReport(
        5, 1.0, np.array([32768, 32769]), np.array([[0, 1.0, 0], [9, 9, 9]]), np.zeros((2, 3)), np.zeros((2, 3))
    )
    loop.on_forces(report)
    loop.on_forces(
        ForceReport(4, 0.9, np.array([32768]), np.array([[0, 2.0, 0]]), np.zeros((1, 3)), np.zeros((1, 3)))
    )  # older: dropped
    loop.step(0.0)
    for i in range(1, 20):
        f = loop.step(i * 1e-3)
    assert f == pytest.approx([0, 1.0, 0], abs=1e-3)


def test_a_non_finite_device_position_renders_nothing():
    class Glitch(SimulatedHand):
        def read_position(self, now):
            return np.array([np.nan, 0, 0])

    hand = Glitch(lambda t: np.zeros(3))
    loop = HapticLoop(hand, 1)
    loop.on_force(np.array([0, 1.0, 0]), np.zeros(3))
    assert loop.step(0.0).tolist() == [0, 0, 0] and hand.force.tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    "bad", [{"rate_hz": 0}, {"max_force": float("nan")}, {"stiffness_gain": 2.0}, {"energy_margin": 1.0}]
)
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        HapticConfig(**bad)


def test_the_thread_runs_near_its_rate_and_stops_by_itself():
    hand = SimulatedHand(lambda t: np.zeros(3), start=time.perf_counter())
    loop = HapticLoop(hand, 1)
    loop.on_force(np.array([0, 0.5, 0]), np.zeros(3))
    loop.start()
    with pytest.raises(RuntimeError, match="already running"):
        loop.start()
    time.sleep(0.3)
    assert loop.running and loop._thread.daemon
    assert loop.stop(timeout=1.0) and not loop.running
    assert loop.stats.cycles > 50  # ~300 at 1 kHz; a loaded machine gets fewer
    assert hand.force.tolist() == [0, 0, 0]  # stopped: nothing rendered
    assert "haptic-loop" not in [t.name for t in threading.enumerate()]


def test_a_device_error_ends_the_thread_and_is_kept():
    class Broken(SimulatedHand):
        def read_position(self, now):
            raise OSError("device unplugged")

    loop = HapticLoop(Broken(lambda t: np.zeros(3), start=time.perf_counter()), 1)
    loop.start()
    deadline = time.monotonic() + 2.0
    while loop.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not loop.running and isinstance(loop.error, OSError)
    assert loop.stop()


# --- virtual fixtures (netcode.protocol.fixtures): walls and guiding springs at 1 kHz -----------------------

from netcode.protocol.fixture_shapes import Capsule, Plane  # noqa: E402
from netcode.protocol.fixtures import Fixture, FixtureSet, fixture_fields  # noqa: E402

VESSEL = Capsule((-1.0, -0.0103, 0.0), (1.0, -0.0103, 0.0), 0.01)  # a forbidden capsule, its top 0.3 mm down


def _walls(active: bool = True, revision: int = 1) -> FixtureSet:
    return FixtureSet(revision, (Fixture("vessel", "forbidden", VESSEL, 2000.0, active),))


@pytest.mark.parametrize("intent", [pushing, holding])
def test_a_fixture_wall_gains_no_energy_over_10_s_of_contact_at_100_ms_rtt(intent):
    """Soft tissue from the server (100 ms late) and the stiff forbidden capsule rendered locally 0.3 mm below
    its surface: 10 s of simulated contact (not of wall clock) put no energy into the hand, and the wall holds
    it (the tissue alone lets the arm press 1.7 mm deep)."""
    tissue = wall_law(200.0)
    passive = simulate(tissue, intent, duration=10.0, rtt=0.1, fixtures=_walls())
    stats = passive.loop.stats
    assert passive.work <= 0.0 and passive.loop.passivity.energy >= 0.0
    assert stats.fixture_contact_cycles > 1000  # seconds of contact with the wall, not a graze
    depth = -min(VESSEL.distance(x)[0] for x in passive.positions)
    assert 0.0 < depth < 0.0015  # pressed into the wall and held by it (the arm pushes 3 mm beyond its top)
    free = simulate(tissue, intent, duration=10.0, rtt=0.1)
    assert free.positions[:, 1].min() < passive.positions[:, 1].min() - 5e-4  # the wall is what held it


def test_without_the_controller_the_sampled_wall_leaks_energy():
    """What the passivity bookkeeping is for: a zero-order-held stiff wall alone, pushed into and out of."""
    law = wall_law(0.0)  # no tissue force: only the fixture
    active = simulate(law, pushing, duration=10.0, rtt=0.1, fixtures=_walls(), config=HapticConfig(passivity=False))
    passive = simulate(law, pushing, duration=10.0, rtt=0.1, fixtures=_walls())
    assert active.work > 0.0 >= passive.work


def test_a_guide_pulls_the_tip_onto_its_plane_and_switched_off_fixtures_render_nothing():
    loop = HapticLoop(SimulatedHand(lambda t: np.zeros(3)), 1, HapticConfig(passivity=False))  # the forces alone
    guide = Fixture("plane", "guide", Plane((0.0, 0.01, 0.0), (0.0, 1.0, 0.0)), 200.0)
    assert loop.on_fixtures_message(fixture_fields(FixtureSet(2, (guide,))))
    loop.step(0.0)
    force = loop.step(0.001)
    assert force[1] == pytest.approx(200.0 * 0.01, rel=0.05) and abs(force[0]) < 1e-9  # 10 mm below: 2 N up
    loop.set_tip_offset(np.array([0.0, 0.01, 0.0]))  # the tip is on the plane: no pull
    assert np.linalg.norm(loop.step(0.002)) < 0.05
    loop.on_fixtures(_walls(active=False, revision=3))
    loop.set_tip_offset(np.array([0.0, -0.005, 0.0]))  # deep in the (switched off) capsule
    assert np.linalg.norm(loop.step(0.003)) < 0.05 and loop.stats.fixture_contact_cycles == 0
    loop.on_fixtures(_walls(active=True, revision=2))  # older than the set held: ignored
    assert np.linalg.norm(loop.step(0.004)) < 0.05
    assert not loop.on_fixtures_message({"revision": 9}) and loop.stats.fixture_messages_dropped == 1


def test_a_mesh_wall_pushes_out_and_costs_nothing_away_from_its_box(monkeypatch):
    from netcode.protocol.fixture_shapes import TriangleMesh
    from netcode.thin_client.haptics import FixtureForces

    v = np.array([[0, 0, 0], [0.01, 0, 0], [0, 0.01, 0], [0, 0, 0.01]], dtype=float)
    tetra = TriangleMesh(v, np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]), 0.0)
    forces = FixtureForces(HapticConfig())
    assert forces.update(FixtureSet(1, (Fixture("mesh", "forbidden", tetra, 1000.0),)))
    calls = []
    real = TriangleMesh.distance
    monkeypatch.setattr(TriangleMesh, "distance", lambda self, x: calls.append(1) or real(self, x))
    assert np.all(forces.at(np.array([0.05, 0.05, 0.05])) == 0) and calls == []  # outside the box: not evaluated
    f = forces.at(np.array([0.002, 0.001, 0.002]))  # 1 mm above the bottom face (y = 0), inside
    assert calls and forces.contact
    assert f[1] == pytest.approx(-1.0, rel=0.05) and abs(f[0]) < 1e-9  # pushed out through the nearest face
