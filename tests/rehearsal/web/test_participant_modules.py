"""The participant client's pure JavaScript modules in real Chromium, each against the Python thin client on the
same inputs: input packets byte for byte (input_sender.js), the server clock (clock_sync.js), the adaptive
delay and interpolation (interpolation.js), held-tissue prediction and reconciliation (prediction.js); and the
XR and desktop input mappings on their own (xr_input.js, desktop_input.js)."""

from __future__ import annotations

import base64
import itertools
import math
import random

import numpy as np
import pytest

from netcode.protocol.inputs import InputAck
from netcode.protocol.poses import RigidPose, rotvec_to_quat
from netcode.protocol.response_model import ResponseModel
from netcode.protocol.schema import response_model_fields
from netcode.thin_client.clock_sync import ClockSync
from netcode.thin_client.input_sender import InputSender
from netcode.thin_client.interpolation import AdaptiveDelay, InterpolationBuffer
from netcode.thin_client.prediction import HeldTissue

JS = "/static/js/"


def run(page, module: str, body: str, arg=None):
    """``body`` is a JS function (m, arg) => value, given the imported module."""
    return page.evaluate(f"async (arg) => {{ const m = await import('{JS}{module}'); return ({body})(m, arg); }}", arg)


def pose_json(pose: RigidPose | None):
    if pose is None:
        return None
    return {
        "position": pose.position.tolist(),
        "rotation": pose.rotation.tolist(),
        "jaw": pose.jaw,
        "energy": pose.energy,
    }


def test_input_packets_are_byte_for_byte_pythons_with_redundancy_and_acks(harness):
    rng = random.Random(7)
    devices = (0, 1, 2)
    py = InputSender(devices)
    frames, expected = [], []
    for i in range(30):
        poses = {}
        for d in devices:
            if d == 1 and i % 7 == 3:
                poses[d] = None  # untracked this frame
                continue
            q = rotvec_to_quat([rng.uniform(-2, 2) for _ in range(3)])
            jaw = 0.00005 * (2 * i + 1) if d == 2 else rng.uniform(0, 1)  # exact halves of the jaw unit
            poses[d] = RigidPose([rng.uniform(-0.2, 0.2) for _ in range(3)], q, jaw, energy=(i + d) % 4 == 0)
        t = 100.0 + i / 90
        py.add_sample(t, poses)
        ack = {"seq": i - 5, "server_time": 5.0, "hold": 0.001} if i % 6 == 5 else None
        expected.append(base64.b64encode(py.packet(t)).decode())
        if ack:
            py.on_ack(InputAck(ack["seq"], ack["server_time"], ack["hold"]))
        frames.append({"t": t, "poses": {str(d): pose_json(p) for d, p in poses.items()}, "ack": ack})
    got = run(
        harness,
        "input_sender.js",
        """(m, frames) => {
          const s = new m.InputSender([0, 1, 2]);
          const out = [];
          const b64 = (u8) => btoa(String.fromCharCode(...u8));
          for (const f of frames) {
            s.addSample(f.t, f.poses);
            out.push(b64(s.packet(f.t)));
            if (f.ack) s.onAck(f.ack);
          }
          return {out, window: s.window, pending: s.pending.length};
        }""",
        frames,
    )
    assert got["window"] == py.window == 14
    assert got["out"] == expected
    assert got["pending"] == len(py.unacked())
    sizes = {len(base64.b64decode(p)) for p in expected}
    assert max(sizes) <= 1100 and len(sizes) > 3  # redundant: packets carry several samples


def test_the_clock_sync_matches_pythons_on_the_same_exchanges(harness):
    rng = random.Random(3)
    true_offset, exchanges, reads = 12.5, [], []
    local = 0.0
    for i in range(60):
        local += rng.uniform(0.01, 0.03)
        up, down, hold = 0.025 + rng.expovariate(1 / 0.005), 0.025 + rng.expovariate(1 / 0.03), 0.001
        if i == 40:
            true_offset -= 0.2  # a backward server step: slewed, never jumps back
        t0 = local
        t1 = t0 + up + true_offset
        t2 = t1 + hold
        t3 = t0 + up + hold + down
        exchanges.append([t0, t1, t2, t3])
        reads.append(t3 + 0.004)
        local = t3
    py = ClockSync()
    expected = []
    for (t0, t1, t2, t3), r in zip(exchanges, reads, strict=True):
        py.add_exchange(t0, t1, t2, t3)
        expected.append(py.server_now(r))
    got = run(
        harness,
        "clock_sync.js",
        """(m, a) => {
          const c = new m.ClockSync();
          return a.ex.map((e, i) => { c.addExchange(...e); return c.serverNow(a.reads[i]); });
        }""",
        {"ex": exchanges, "reads": reads},
    )
    assert got == pytest.approx(expected, abs=1e-12)
    assert all(b >= a for a, b in itertools.pairwise(got))  # never backwards
    assert got[-1] - reads[-1] == pytest.approx(true_offset, abs=0.25)


def test_the_adaptive_delay_and_interpolation_match_pythons(harness):
    rng = random.Random(5)
    arrivals, renders = [], []
    for i in range(120):
        ts = i / 60
        arrivals.append([ts, ts + 0.03 + rng.uniform(0, 0.03)])
        renders.append(ts + 0.035)
    kept = [rng.random() > 0.05 for _ in range(120)]  # the same 5% loss on both sides
    delay = AdaptiveDelay()
    buffer = InterpolationBuffer(lambda a, b, u: a + (b - a) * u)
    expected = []
    for (ts, arrive), r, keep in zip(arrivals, renders, kept, strict=True):
        if keep:
            delay.on_snapshot(ts, arrive)
            buffer.insert(ts, math.sin(ts))
        lag = delay.lag(r)
        sampled = buffer.sample(r - lag)
        expected.append([lag, sampled[0] if sampled else None, sampled[1].value if sampled else None])
    got = run(
        harness,
        "interpolation.js",
        """(m, a) => {
          const d = new m.AdaptiveDelay();
          const b = new m.InterpolationBuffer((x, y, u) => x + (y - x) * u);
          return a.arrivals.map(([ts, arrive], i) => {
            if (a.kept[i]) { d.onSnapshot(ts, arrive); b.insert(ts, Math.sin(ts)); }
            const lag = d.lag(a.renders[i]);
            const s = b.sample(a.renders[i] - lag);
            return [lag, s ? s[0] : null, s ? s[1] : null];
          });
        }""",
        {"arrivals": arrivals, "renders": renders, "kept": kept},
    )
    assert [g[2] for g in got] == [e[2] for e in expected]
    assert [g[0] for g in got] == pytest.approx([e[0] for e in expected], abs=1e-12)
    assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], abs=1e-12)
    assert max(g[0] for g in got[60:]) < 0.03 + 0.03 + 0.05 + 1e-9  # latency + at most the 50 ms delay


def model(columns: int = 6) -> ResponseModel:
    rng = np.random.default_rng(11)
    k = 6
    return ResponseModel(
        grasp_id=4,
        instrument=9,
        device=2,
        objects=np.array([0, 0, 1, 1, 1, 0]),
        vertices=np.array([0, 2, 1, 3, 0, 4]),
        matrices=rng.normal(0, 0.4, (k, 3, columns)).astype(np.float32),
        baseline=RigidPose([0.0, 0.03, 0.0], rotvec_to_quat([0.1, 0.2, -0.1]), 0.0),
        server_time=1.0,
        epoch=1,
    )


def test_held_tissue_prediction_and_reconciliation_match_pythons(harness):
    m = model()
    fields = response_model_fields(m)
    wire = {k: (base64.b64encode(v).decode() if isinstance(v, bytes) else v) for k, v in fields.items()}
    rng = np.random.default_rng(2)
    patches = {0: rng.normal(0, 0.01, (5, 3)), 1: rng.normal(0, 0.01, (4, 3))}
    held = HeldTissue(m)
    steps, expected = [], []
    for i in range(40):
        t = 2.0 + i / 90
        jaw_now = RigidPose([0.001 * i, 0.03 + 0.0005 * i, 0.0], rotvec_to_quat([0.1, 0.2 + 0.01 * i, -0.1]), 0.0)
        step = {"t": t, "jaw": pose_json(jaw_now), "auth": None}
        if i % 6 == 0:  # an authoritative state, as of the jaw the server applied 50 ms earlier
            lag = max(0, i - 5)
            jaw_auth = RigidPose([0.001 * lag, 0.03 + 0.0005 * lag, 0.0], rotvec_to_quat([0.1, 0.2 + 0.01 * lag, -0.1]))
            auth = {p: v + 0.0003 * i for p, v in patches.items()}
            for p, v in auth.items():
                held.on_authoritative(p, t - 0.05, v, jaw_auth, t, display_before=v + 0.002 if i == 0 else None)
            step["auth"] = {
                "jaw": pose_json(jaw_auth),
                "patches": {str(p): v.ravel().tolist() for p, v in auth.items()},
            }
        shown = held.display(jaw_now, t + 0.005)
        expected.append({str(p): v.ravel().tolist() for p, v in sorted(shown.items())})
        steps.append(step)
    got = run(
        harness,
        "prediction.js",
        """(m, a) => {
          const bytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
          const w = a.fields;
          const f = { ...w, objects: bytes(w.objects), vertices: bytes(w.vertices), matrices: bytes(w.matrices) };
          const held = new m.HeldTissue(m.responseModelFromFields(f));
          return a.steps.map((s, i) => {
            if (s.auth) {
              for (const [p, v] of Object.entries(s.auth.patches)) {
                const before = i === 0 ? Float64Array.from(v, (x) => x + 0.002) : null;
                held.onAuthoritative(Number(p), s.t - 0.05, Float64Array.from(v), s.auth.jaw, s.t, before);
              }
            }
            const out = {};
            for (const [p, v] of held.display(s.jaw, s.t + 0.005)) out[p] = [...v];
            return out;
          });
        }""",
        {"fields": wire, "steps": steps},
    )
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.keys() == e.keys()
        for p in e:
            assert g[p] == pytest.approx(e[p], abs=1e-12)
    moved = np.abs(np.array(got[5]["1"]) - np.array(steps[0]["auth"]["patches"]["1"])).max()
    assert moved > 1e-4  # the prediction moves the held vertices between authoritative states


def test_a_malformed_response_model_is_refused(harness):
    fields = response_model_fields(model(3))
    wire = {k: (base64.b64encode(v).decode() if isinstance(v, bytes) else v) for k, v in fields.items()}
    errors = run(
        harness,
        "prediction.js",
        """(m, w) => {
          const bytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
          const good = { ...w, objects: bytes(w.objects), vertices: bytes(w.vertices), matrices: bytes(w.matrices) };
          const cases = [{ ...good, columns: 4 }, { ...good, matrices: good.matrices.subarray(4) },
            { ...good, vertices: good.vertices.subarray(4) }, { ...good, baseline: [0, 0, 0, 0, 0, 0, NaN, 0] }];
          const out = cases.map((c) => {
            try { m.responseModelFromFields(c); return null; } catch (e) {
              return e instanceof m.ResponseModelError ? e.message : `other ${e}`;
            }
          });
          out.push(m.responseModelFromFields(good).columns);
          return out;
        }""",
        wire,
    )
    assert all(isinstance(e, str) and not e.startswith("other") for e in errors[:4]), errors
    assert errors[4] == 3


def test_the_xr_input_mapping_hands_jaws_energy_head_and_haptics(harness):
    got = run(
        harness,
        "xr_input.js",
        """(m) => {
          const grip = (x) => ({ position: { x, y: 1.0, z: -0.35 }, orientation: { x: 0, y: 0, z: 0, w: 1 } });
          const frame = {
            viewer: { position: [0, 1.6, 0], orientation: [0, 0, 0, 1] },
            controllers: [
              { handedness: 'left', grip: grip(-0.1), buttons: [{ value: 0.0 }, { value: 1.0 }] },
              { handedness: 'right', grip: grip(0.1),
                buttons: [{ value: 0.25 }, { value: 0 }, {}, {}, { pressed: true }] },
              { handedness: 'none', grip: grip(0), buttons: [] },
              { handedness: 'right', grip: null, buttons: [] },
            ],
          };
          const poses = m.xrDevicePoses(frame, [0, 0.9, -0.35]);
          const mapper = new m.HapticMapper();
          const none = mapper.update(new Map([[2, { force: [0, 0, 0], grasp: [0, 0, 0] }]]));
          const touch = mapper.update(new Map([[2, { force: [0, 0.5, 0], grasp: [0, 0, 0] }]]));
          const light = mapper.update(new Map([[2, { force: [0, 0.1, 0], grasp: [0, 0.3, 0] }]]));
          const hard = mapper.update(new Map([[2, { force: [0, 0.1, 0], grasp: [0, 2.4, 0] }]]));
          const huge = mapper.update(new Map([[2, { force: [0, 9, 0], grasp: [0, 9, 0] }]]));
          const off = mapper.update(new Map([[2, { force: [0, 0, 0], grasp: [0, 0, 0] }]]));
          return { keys: Object.keys(poses), poses, none, touch, light, hard, huge, off };
        }""",
    )
    poses = got["poses"]
    assert sorted(got["keys"]) == ["0", "1", "2"]  # the head and two hands; "none" and the untracked one ignored
    assert poses["1"]["position"] == pytest.approx([-0.1, 0.1, 0.0])
    assert poses["2"]["position"] == pytest.approx([0.1, 0.1, 0.0])
    assert poses["1"]["jaw"] == pytest.approx(0.0)  # grip squeezed: closed
    assert poses["2"]["jaw"] == pytest.approx(0.75)  # trigger a quarter in
    assert poses["2"]["energy"] is True and poses["1"]["energy"] is False
    assert poses["0"]["position"] == pytest.approx([0, 0.7, 0.35])
    assert np.abs(poses["0"]["rotation"]) == pytest.approx([0, 1, 0, 0], abs=1e-12)  # looks along +z: half a turn
    assert got["none"] == []
    assert got["touch"] == [{"device": 2, "intensity": 0.8, "durationMs": 40}]  # the contact pulse
    assert got["light"][0]["intensity"] < got["hard"][0]["intensity"] < 1.0  # scales with the grasp's pull
    assert got["huge"][0]["intensity"] == 1.0 and got["off"] == []


def test_the_desktop_rig_moves_turns_closes_and_stays_within_speed_and_workspace(harness):
    got = run(
        harness,
        "desktop_input.js",
        """(m) => {
          const rig = new m.DesktopRig(['right', 'left']);
          const start = rig.poses()[2];
          rig.keyDown('KeyD'); rig.keyDown('Space'); rig.keyDown('KeyH');
          for (let i = 0; i < 30; i++) rig.step(1 / 60);
          rig.keyUp('KeyD'); rig.keyUp('Space');
          const moved = rig.poses()[2];
          rig.drag(0, -50000); // a huge drag: spent at MAX_SPEED over many frames, clamped to the workspace
          const steps = [];
          let prev = rig.poses()[2].position;
          for (let i = 0; i < 200; i++) {
            rig.step(1 / 60);
            const p = rig.poses()[2].position;
            steps.push(Math.hypot(p[0] - prev[0], p[1] - prev[1], p[2] - prev[2]));
            prev = p;
          }
          rig.keyDown('Tab'); rig.keyDown('ArrowLeft');
          for (let i = 0; i < 30; i++) rig.step(1 / 60);
          const end = rig.poses()[2];
          const left = rig.poses()[1];
          const maxStep = Math.max(...steps);
          return { start, moved, end, left, active: rig.active, maxStep, MAX: m.MAX_SPEED, WS: m.WORKSPACE };
        }""",
    )
    assert got["moved"]["position"][0] - got["start"]["position"][0] == pytest.approx(0.02, abs=1e-6)  # 4 cm/s, 0.5 s
    assert got["start"]["jaw"] == 1.0 and got["moved"]["jaw"] == 0.0 and got["moved"]["energy"] is True
    assert got["maxStep"] <= got["MAX"] / 60 + 1e-12
    assert got["end"]["position"][2] == pytest.approx(got["WS"]["lo"][2])  # held at the workspace's edge
    assert got["active"] == "left" and got["left"]["rotation"] != got["start"]["rotation"]
    assert got["end"]["rotation"] == pytest.approx(got["start"]["rotation"])  # the right hand did not turn


def test_the_xr_session_glue_reads_an_xr_frame_and_plays_pulses_on_the_right_controller(harness):
    """Headless Chromium has no immersive session (isSessionSupported('immersive-vr') is false and the WebXR Test
    API needs MojoJS bindings only a Chromium build has), so xr_session.js' glue is fed a plain XRFrame lookalike."""
    got = run(
        harness,
        "xr_session.js",
        """async (m) => {
          const played = [];
          const pose = (x) => ({ transform: { position: { x, y: 1, z: 0 }, orientation: { x: 0, y: 0, z: 0, w: 1 } } });
          const pad = (hand) => ({ buttons: [{ value: 0.5, pressed: false }],
            hapticActuators: [{ pulse: (v, ms) => played.push([hand, v, ms]) }] });
          const sources = [{ handedness: 'left', gripSpace: 'L', gamepad: pad('left') },
            { handedness: 'right', gripSpace: 'R', gamepad: pad('right') }, { handedness: 'none', gripSpace: null }];
          const frame = { session: { inputSources: sources }, getViewerPose: () => pose(0),
            getPose: (space) => pose(space === 'L' ? -0.2 : 0.2) };
          const data = m.frameData(frame, 'space');
          const pulses = [{ device: 2, intensity: 0.6, durationMs: 40 }, { device: 1, intensity: 0.2, durationMs: 60 }];
          const n = m.playHaptics(pulses, data.controllers);
          const modes = await m.supportedModes();
          const none = await m.supportedModes(null); // a browser without navigator.xr
          return { viewer: data.viewer, hands: data.controllers.map((c) => [c.handedness, c.grip && c.grip.position[0],
            c.buttons.length]), n, played, modes, none };
        }""",
    )
    assert got["viewer"]["position"] == [0, 1, 0]
    assert got["hands"] == [["left", -0.2, 1], ["right", 0.2, 1], ["none", None, 0]]
    assert got["n"] == 2 and got["played"] == [["right", 0.6, 40], ["left", 0.2, 60]]
    assert got["modes"] == [] and got["none"] == []  # said plainly: no immersive session in headless Chromium
