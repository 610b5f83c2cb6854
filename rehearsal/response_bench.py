"""How well the grasp response model predicts held tissue under latency (prints JSON).

    python -m rehearsal.response_bench [--rtt-ms 50,100,200]

A lead surgeon's grasper, driven through a real ``Room`` of the basic-skills scenario, descends onto the
block, grasps it, then pulls it up and sways it sideways. Every frame's surface and jaw pose are kept.
With a round trip of L frames, a headset shows at frame k the authoritative surface of frame k - L
(without prediction), or that surface moved by the response model times the jaw's motion since then
(with prediction: ``netcode.thin_client.prediction.predicted_delta`` with the model that
``rehearsal.response_model.probe_response`` measured at the grasp); the truth it should show is the
surface of frame k. Errors are measured at the grasp (surface vertices within ``GRASP_RADIUS`` of the
grasped points) and around it (``AROUND_RADIUS``), averaged over the frames after the grasp.
Issue goal: with 100 ms of round trip, error at the grasp with prediction <= 30% of the error without.

``codec`` reports the same measurement as the snapshot codec's motion predictor (``netcode.sync.motion_predictor``)
on this real tissue: snapshot bytes per frame after the grasp, with and without the predictor, for one
client that acknowledges a round trip later (the synthetic ``netcode.sync.snapshot_bench`` trace is exactly
linear in the grasp; this one is not).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from netcode.protocol.poses import RigidPose
from netcode.protocol.response_model import ResponseModel
from netcode.sync.patches import make_patches
from netcode.sync.snapshot_codec import SnapshotServer
from netcode.sync.snapshot_decode import SnapshotDecoder
from netcode.thin_client.prediction import predicted_delta
from physics.instruments import look_rotation
from rehearsal.identity import Identity
from rehearsal.response_model import PROBE_FRAMES, probe_response
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario

TICK = 1 / 60
GRASP_RADIUS = 0.01  # m: 'at the grasp': the surface the jaws hold and its rim
AROUND_RADIUS = 0.03  # m: the tissue around it that a surgeon sees move
DOWN = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))


def jaw_script(t: float) -> tuple[np.ndarray, float]:
    """Hinge position and jaw opening at time t: descend, close, then pull up 2 cm while swaying 1 cm."""
    descend = min(t / 1.0, 1.0)
    y = 0.06 + (0.03 - 0.06) * descend
    jaw = 1.0 if t < 1.1 else max(0.0, 1.0 - (t - 1.1) / 0.3)
    u = max(0.0, t - 1.6)
    y += 0.02 * min(u / 1.5, 1.0)
    x = -0.015 + 0.01 * math.sin(2 * math.pi * u / 1.5) * min(u / 0.5, 1.0)
    return np.array([x, y, 0.0]), jaw


def run_trace(seconds: float = 3.6, frames: int = PROBE_FRAMES):
    """Frames of positions and jaw positions, the grasp frame, the grasped points and the probed response."""
    room = Room("bench", load_scenario("basic_skills"))
    room.join(Identity("bench", 1, Role.LEAD_SURGEON, "lead"))
    room.start()
    xs, jaws, grasp_frame, grasped, probed = [], [], None, np.zeros((0, 3)), None
    for k in range(int(seconds / TICK)):
        position, opening = jaw_script(k * TICK)
        room.instrument_input(1, "right", position, DOWN, opening, sample_time=k * TICK)
        report = room.advance(TICK)
        inst = next(iter(room.physics.instruments.values()))
        xs.append(room.physics.x.copy())
        jaws.append(inst.position.copy())
        if grasp_frame is None and any(e.kind == "grasp" for e in report.events) and inst.grasp is not None:
            grasp_frame = k
            g = inst.grasp
            grasped = np.einsum("gk,gkd->gd", g.weights, room.physics.x[g.vertices])
            surface = room.surface_vertices()
            layout = make_patches(surface, room.physics.x[surface])
            key = next(iter(room.physics.instruments))
            substeps = room.scenario.substeps
            probed = (layout, probe_response(room.model, room.physics, key, surface, TICK, substeps, frames))
    return room, xs, jaws, grasp_frame, grasped, probed


def prediction_errors(room: Room, xs, jaws, grasp_frame: int, grasped: np.ndarray, lag: int, probed) -> dict:
    """Mean displayed error (m) with and without prediction, at the grasp and around it."""
    layout, response = probed
    surface = layout.vertex_ids
    objects, vertices, matrices = response.strongest().on_layout(layout)
    model = ResponseModel(0, 0, 2, objects, vertices, matrices, RigidPose(jaws[grasp_frame]))
    modelled = layout.vertex_ids[layout.offsets[objects] + vertices]
    distance = np.min(np.linalg.norm(xs[grasp_frame][surface][:, None] - grasped[None], axis=2), axis=1)
    regions = {"grasp": surface[distance <= GRASP_RADIUS], "around": surface[distance <= AROUND_RADIUS]}
    sums: dict[str, list[float]] = {f"{r}_{w}_m": [] for r in regions for w in ("without", "with")}
    for k in range(grasp_frame + lag, len(xs)):
        shown = xs[k - lag].copy()
        predicted = shown.copy()
        predicted[modelled] += predicted_delta(model, RigidPose(jaws[k]), RigidPose(jaws[k - lag]))
        for region, ids in regions.items():
            sums[f"{region}_without_m"].append(float(np.linalg.norm(shown[ids] - xs[k][ids], axis=1).mean()))
            sums[f"{region}_with_m"].append(float(np.linalg.norm(predicted[ids] - xs[k][ids], axis=1).mean()))
    out: dict[str, float | int] = {key: float(np.mean(v)) for key, v in sums.items()}
    for region, ids in regions.items():
        out[f"{region}_ratio"] = out[f"{region}_with_m"] / out[f"{region}_without_m"]
        out[f"{region}_vertices"] = int(ids.size)
    out["model_vertices"] = int(modelled.size)
    return out


def codec_bytes(xs, grasp_frame: int, probed, lag: int, predictor: bool) -> dict:
    """Mean snapshot bytes per frame after the grasp (one client, acks ``lag`` frames later, no loss), the
    largest error of the patches received against their frame's truth (the codec's bound) and of the whole
    surface shown (patches not resent may be older)."""
    layout, response = probed
    server = SnapshotServer(layout)
    decoder = SnapshotDecoder()
    for message in server.join_messages():
        decoder.on_message(message)
    server.add_client(0)
    acks: list[tuple[int, int]] = []
    sizes, errors, received = [], [], [0.0]
    for k, x in enumerate(xs):
        if predictor and k == grasp_frame:
            decoder.on_message(server.add_predictor(response.vertex_ids, response.matrices))
        truth = x[layout.vertex_ids]
        server.begin_frame(k * TICK, truth)
        data = server.encode(0)
        snap = decoder.decode(data)
        for obj in snap.objects:
            if obj.kind == "patch":
                received.append(float(np.abs(obj.positions - truth[layout.patch(obj.id)]).max()))
        acks.append((k + lag, snap.sequence))
        for _, seq in [a for a in acks if a[0] == k]:
            server.on_ack(0, seq)
        acks = [a for a in acks if a[0] > k]
        if k > grasp_frame:
            sizes.append(len(data))
            errors.append(float(np.abs(decoder.surface()[0] - truth).max()))
    return {
        "bytes_per_frame": round(float(np.mean(sizes)), 1),
        "max_error_received_mm": round(max(received) * 1e3, 5),
        "max_error_shown_mm": round(max(errors) * 1e3, 5),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal.response_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rtt-ms", default="50,100,200", help="round trips to emulate, comma-separated (ms)")
    args = parser.parse_args(argv)
    try:
        rtts = [float(r) for r in args.rtt_ms.split(",")]
    except ValueError:
        parser.error("--rtt-ms must be comma-separated numbers")
    if not all(0 < r <= 2000 for r in rtts):
        parser.error("--rtt-ms values must be in (0, 2000]")
    room, xs, jaws, grasp_frame, grasped, probed = run_trace()
    if grasp_frame is None or probed[1] is None:
        print(json.dumps({"error": "the scripted grasper never grasped"}))
        return 1
    by_rtt = {}
    for rtt in rtts:
        lag = max(1, round(rtt / 1000 / TICK))
        by_rtt[f"{rtt:g}"] = {"lag_frames": lag, **prediction_errors(room, xs, jaws, grasp_frame, grasped, lag, probed)}
    goal = by_rtt.get("100")
    lag = max(1, round(0.1 / TICK))
    plain, predicted = (codec_bytes(xs, grasp_frame, probed, lag, p) for p in (False, True))
    codec = {
        "rtt_ms": 100,
        "surface_vertices": probed[0].vertex_count,
        "predictor_vertices": len(probed[1].vertex_ids),
        "without_predictor": plain,
        "with_predictor": predicted,
        "bytes_ratio": round(predicted["bytes_per_frame"] / plain["bytes_per_frame"], 3),
    }
    report = {
        "scenario": room.scenario.name,
        "tets": room.model.n_tets,
        "grasp_frame": grasp_frame,
        "frames": len(xs),
        "probe_frames": PROBE_FRAMES,
        "by_rtt_ms": by_rtt,
        "goal": "at 100 ms round trip, error at the grasp with prediction <= 30% of the error without",
        "goal_met": None if goal is None else goal["grasp_ratio"] <= 0.3,
        "codec": codec,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
