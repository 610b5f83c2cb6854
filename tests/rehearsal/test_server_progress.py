"""Over real loopback UDP: a retraction completes the first step for everyone, the holder of a grasp gets
its response model (and a release), a complication reaches everyone, and a late joiner is told both."""

from __future__ import annotations

import base64
import time

from netcode.protocol.poses import RigidPose
from netcode.protocol.schema import response_model_from_fields
from netcode.thin_client.adapters import from_decoded_snapshot
from netcode.thin_client.client import ThinClient, ThinClientConfig
from netcode.thin_client.render_state import ObjectKind, Source
from rehearsal.bots import Headset, SurgeonScript, post, pump
from rehearsal.wire import DEVICE_RIGHT, to_wire_quat
from tests.rehearsal.e2e_helpers import metrics


def _join(server, invites: dict, role: str) -> Headset:
    status, ticket = post(server.http_port, "/api/join", {"invite": invites[role], "name": role})
    assert status == 200, ticket
    return Headset(base64.b64decode(ticket["token"]), name=role)


def _events(h: Headset, kind: str) -> list[dict]:
    return [e for e in h.messages["event"] if e["kind"] == kind]


def test_steps_grasp_models_and_complications_reach_the_right_people(e2e_server):
    server = e2e_server
    status, session = post(server.http_port, "/api/sessions", {"scenario": "basic_skills"}, server.credential())
    assert status == 201, session
    lead, observer, mentor = (_join(server, session["invites"], r) for r in ("lead_surgeon", "observer", "mentor"))
    team = [lead, observer, mentor]
    late = None
    try:
        assert pump(team, lambda: all(h.welcome for h in team), 10.0), server.log()
        progress = lead.welcome["progress"]
        assert [s["id"] for s in progress["steps"]] == ["retract", "divide", "no_energy_at_edge"]
        assert progress["current_step"] == "retract" and progress["complications"]["active"] == []
        instrument = lead.welcome["hands"]["right"]
        script = SurgeonScript(x=-0.015, lift=0.015)
        start = time.monotonic()
        opened = {"jaw": None}

        def frame() -> None:
            position, jaw = script.pose(time.monotonic() - start)
            lead.send_pose(position, script.rotation, opened["jaw"] if opened["jaw"] is not None else jaw)

        def retracted() -> bool:
            return all(_events(h, "step_completed") for h in team) and bool(lead.messages["grasp"])

        assert pump(team, retracted, 15.0, frame), server.log()
        [done] = {e["detail"]["id"] for h in team for e in _events(h, "step_completed")}
        assert done == "retract"

        # only the holder gets the grasp's response model, and it is a valid one for the current surface
        assert not observer.messages["grasp"] and not mentor.messages["grasp"]
        model = response_model_from_fields(lead.messages["grasp"][0])
        assert model.instrument == instrument and model.epoch == lead.decoder.epoch
        assert model.columns == 3 and len(model.objects) >= 3
        sizes = lead.decoder.layout.sizes
        assert all(0 <= v < sizes[o] for o, v in zip(model.objects, model.vertices, strict=True))
        # everyone's snapshots predict the grasp's motion with the same measurement (a codec predictor)
        assert all(h.decoder.predictors == [1] for h in team) and not any(h.decoder.rejected for h in team)

        mentor.command("inject_complication", complication="bleeder")
        assert pump(team, lambda: all(_events(h, "complication_started") for h in team), 5.0, frame)
        started = _events(observer, "complication_started")[0]["detail"]
        assert started["complication"] == "bleeder" and len(started["position"]) == 3

        opened["jaw"] = 1.0  # let go: the holder is told the grasp ended
        assert pump(team, lambda: bool(lead.messages["release"]), 5.0, frame), server.log()
        assert lead.messages["release"][0]["grasp_id"] == model.grasp_id

        scraped = metrics(server)  # the connections are sampled once a second: RTTs, loss, tick times
        assert scraped[("rehearsal_rtt_seconds_count", "")] >= 3
        assert scraped[("rehearsal_tick_duration_seconds_count", "")] > 60
        assert ("rehearsal_packet_loss_ratio", "") in scraped

        status, ticket = post(server.http_port, "/api/join", {"invite": session["invites"]["observer"], "name": "late"})
        assert status == 200, ticket
        late = Headset(base64.b64decode(ticket["token"]), name="late")
        assert pump([*team, late], lambda: late.welcome is not None, 10.0), server.log()
        told = late.welcome["progress"]
        assert told["steps"][0]["status"] == "done" and told["current_step"] == "divide"
        assert told["complications"]["active"] == ["bleeder"]
        assert late.decoder.predictors == [1]  # the join messages carry the room's predictors
    finally:
        for h in [*team, *([late] if late else [])]:
            h.close()


def test_the_reference_thin_client_predicts_the_tissue_its_surgeon_holds(e2e_server):
    """The whole prediction chain over UDP: the ThinClient tracks, gets the grasp's response model, and
    draws the held patches PREDICTED (own instrument TRACKED) at once instead of a round trip later."""
    server = e2e_server
    status, session = post(server.http_port, "/api/sessions", {"scenario": "basic_skills"}, server.credential())
    assert status == 201, session
    lead = _join(server, session["invites"], "lead_surgeon")
    try:
        assert pump([lead], lambda: lead.welcome is not None, 10.0), server.log()
        instrument = lead.welcome["hands"]["right"]
        thin = ThinClient(ThinClientConfig(devices=(DEVICE_RIGHT,), own_objects={instrument: DEVICE_RIGHT}))
        lead.on_delivery = lambda delivery: thin.dispatch(delivery, time.monotonic())
        lead.on_snapshots = lambda applied: [
            thin.on_snapshot(from_decoded_snapshot(s), time.monotonic()) for s in applied
        ]
        script = SurgeonScript(x=-0.015, lift=0.015)
        start = time.monotonic()
        drawn: list = []

        def frame() -> None:
            now = time.monotonic()
            position, jaw = script.pose(now - start)
            thin.send_frame(lead.channels, now, {DEVICE_RIGHT: RigidPose(position, to_wire_quat(script.rotation), jaw)})
            drawn.append(thin.render_state(now))

        def predicting() -> bool:
            return bool(thin.grasps) and any(
                o.source is Source.PREDICTED for o in drawn[-1].objects.values() if o.kind is ObjectKind.PATCH
            )

        assert pump([lead], predicting, 15.0, frame), (thin.dropped, lead.messages["grasp"], server.log()[-2000:])
        state = drawn[-1]
        assert state.objects[instrument].source is Source.TRACKED
        assert thin.clock.rtt is not None and thin.dropped["invalid"] == 0 and thin.dropped["kind"] == 0
    finally:
        lead.close()
