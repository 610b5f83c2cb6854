"""The watch page and mentor console in real Chromium against the real server (a subprocess, loopback): it joins
with a code, draws the tissue (pixels read back from the canvas), follows a bot that grasps and lifts, and its
mentor controls act on the server while an observer's page has none and its forged commands are refused."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from physics.instruments import look_rotation
from rehearsal.bots import Headset, ServerProcess, SurgeonScript, get, post, pump
from rehearsal.wire import DEVICE_HEAD, DEVICE_RIGHT
from tests.rehearsal.e2e_helpers import new_session, running_server
from tests.rehearsal.web.conftest import ARTIFACTS_DIR
from tests.rehearsal.web.ws_client import WsClient, is_message

WAIT_MS = 30_000  # SwiftShader on a loaded 2-core machine draws slowly


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("page") / "data") as proc:
        yield proc


def room(server: ServerProcess, session: str) -> dict:
    status, body = get(server.http_port, f"/admin/rooms/{session}", server.credential())
    assert status == 200, body
    return json.loads(body)


def open_page(page, server: ServerProcess, code: str, name: str) -> None:
    """The page opened from a link holding the code (and the name), joined and drawing snapshots."""
    page.goto(f"http://127.0.0.1:{server.http_port}/?code={code}&name={name}")
    page.wait_for_function(
        "() => window.rehearsal && window.rehearsal.state.snapshots > 3 && window.rehearsal.scene.triangleCount > 0"
        " && window.rehearsal.scene.frames > 2",
        timeout=WAIT_MS,
    )


def pixels(page) -> dict:
    return page.evaluate("() => { const s = window.rehearsal.scene; s.render(); return s.pixelSummary(4); }")


TOP_JS = (
    "() => { const p = window.rehearsal.decoder.surface().positions; let y = -1e9;"
    " for (let i = 1; i < p.length; i += 3) y = Math.max(y, p[i]); return y; }"
)


def top_of_tissue(page) -> float:
    """The highest decoded surface vertex (m) the page holds."""
    return page.evaluate(TOP_JS)


def test_an_observer_page_joins_and_the_canvas_draws_the_tissue(page, server):
    session = new_session(server)
    open_page(page, server, session["invites"]["observer"], "Olive")
    assert page.locator("#join").is_hidden()
    assert "observer" in page.locator("#who").inner_text()
    summary = pixels(page)
    cells = summary["width"] * summary["height"]
    assert summary["tissue"] > 0.02 * cells, summary["tissue"]  # the block is on screen, lit
    assert summary["nonBackground"] > 0.05 * cells
    steps = page.locator("#steps li")
    assert steps.count() >= 3  # the procedure panel from the welcome
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "observer_view.png"))
    assert not [e for e in page.js_errors if "pageerror" in e], page.js_errors


def test_the_tissue_on_screen_moves_when_a_bot_grasps_and_lifts(page, server):
    session = new_session(server)
    status, ticket = post(server.http_port, "/api/join", {"invite": session["invites"]["lead_surgeon"], "name": "Lea"})
    assert status == 200, ticket
    surgeon = Headset(base64.b64decode(ticket["token"]), name="Lea")
    try:
        assert pump([surgeon], lambda: surgeon.welcome is not None and surgeon.snapshots_applied > 2, 15.0)
        open_page(page, server, session["invites"]["observer"], "Olive")
        before_top = top_of_tissue(page)
        before = pixels(page)
        script = SurgeonScript(x=-0.01, lift=0.015)
        t0 = time.monotonic()

        def frame() -> None:
            position, jaw = script.pose(time.monotonic() - t0)
            surgeon.send_pose(position, script.rotation, jaw)

        pump([surgeon], lambda: time.monotonic() - t0 > 4.2, 8.0, each_frame=frame)
        page.wait_for_function(f"() => ({TOP_JS})() > {before_top + 0.005}", timeout=WAIT_MS)
        after = pixels(page)
        changed = sum(abs(a - b) > 24 for a, b in zip(before["gray"], after["gray"], strict=True))
        assert top_of_tissue(page) > before_top + 0.005
        assert changed > 0.005 * len(before["gray"]), changed  # the lifted flap is drawn where it now is
        assert page.evaluate("() => [...window.rehearsal.decoder.rigid().values()].some(o => o.kind === 'instrument')")
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS_DIR / "grasp_and_lift.png"))
    finally:
        surgeon.close()


def test_the_view_through_a_participants_eyes_follows_their_headset(page, server):
    session = new_session(server)
    status, ticket = post(server.http_port, "/api/join", {"invite": session["invites"]["lead_surgeon"], "name": "Lea"})
    assert status == 200, ticket
    surgeon = Headset(base64.b64decode(ticket["token"]), name="Lea", devices=(DEVICE_HEAD, DEVICE_RIGHT))
    try:
        assert pump([surgeon], lambda: surgeon.welcome is not None, 15.0)
        open_page(page, server, session["invites"]["observer"], "Olive")
        t0 = time.monotonic()

        def frame() -> None:
            surgeon.send_pose([0.0, 0.3, 0.25], look_rotation(forward=(0.0, -0.77, -0.64)), device=DEVICE_HEAD)

        pump([surgeon], lambda: time.monotonic() - t0 > 2.5, 6.0, each_frame=frame)
        option = page.locator("#view-from option", has_text="Lea's eyes")
        option.wait_for(state="attached", timeout=WAIT_MS)
        page.select_option("#view-from", option.get_attribute("value"))
        page.wait_for_timeout(300)
        camera = page.evaluate("() => window.rehearsal.scene.camera.position.toArray()")
        assert camera == pytest.approx([0.0, 0.3, 0.25], abs=0.002)  # the camera sits where her headset is
        assert pixels(page)["tissue"] > 0  # and she looks at the block
        page.screenshot(path=str(ARTIFACTS_DIR / "through_her_eyes.png"))
    finally:
        surgeon.close()


def test_the_mentor_pause_button_pauses_the_room_on_the_server(page, server):
    session = new_session(server)
    open_page(page, server, session["invites"]["mentor"], "Mina")
    assert page.locator("#console").is_visible()
    assert room(server, session["session"])["state"] == "running"  # a mentor joining starts the room
    page.click("#btn-pause")
    deadline = time.monotonic() + 10
    while room(server, session["session"])["state"] != "paused" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert room(server, session["session"])["state"] == "paused"
    page.wait_for_function("() => document.getElementById('room-state').textContent === 'paused'", timeout=WAIT_MS)
    assert page.locator("#events li[data-kind=pause]").count() == 1
    # the event's time is on the session's clock (m:ss since the room began), not the server's monotonic seconds
    assert re.match(r"^\d+:\d\d  ", page.locator("#events li[data-kind=pause]").text_content())
    page.select_option("#complication", "bleeder")
    page.click("#btn-resume")
    page.click("#btn-inject")
    page.wait_for_function(
        "() => window.rehearsal.state.events.some(e => e.kind === 'complication_started')", timeout=WAIT_MS
    )
    assert room(server, session["session"])["state"] == "running"
    page.wait_for_function("() => window.rehearsal.state.health !== null", timeout=WAIT_MS)  # the live panels' data
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "mentor_console.png"))


def test_the_mentor_annotates_by_clicking_the_tissue_and_everyone_sees_it(page, server):
    session = new_session(server)
    watcher = WsClient(server.http_port)
    try:
        open_page(page, server, session["invites"]["mentor"], "Mina")
        watcher.join(session["invites"]["observer"], "Walter")
        page.fill("#annotation-text", "incise here")
        page.click("#btn-annotate")
        box = page.locator("#view canvas").bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # the block fills the middle
        event = watcher.until(is_message("event", kind="annotate"), 15.0)
        assert event.fields["detail"]["text"] == "incise here" and event.fields["detail"]["kind"] == "marker"
        x, y, z = event.fields["detail"]["position"]
        assert -0.031 < x < 0.031 and -0.001 < y < 0.021 and -0.021 < z < 0.021  # on the 6 x 2 x 4 cm block
        page.wait_for_function("() => window.rehearsal.scene.annotations.length === 1", timeout=WAIT_MS)
        assert page.locator(".label.annotation").inner_text() == "incise here"
    finally:
        watcher.close()


def test_the_mentor_removes_a_participant_from_the_participants_panel(page, server):
    session = new_session(server)
    open_page(page, server, session["invites"]["mentor"], "Mina")
    watcher = WsClient(server.http_port)
    try:
        joined = watcher.join(session["invites"]["observer"], "Walter")
        row = page.locator(f"#participants tr[data-participant='{joined['participant']}']")
        row.wait_for(timeout=WAIT_MS)  # a 63-bit id, exact in the page
        page.on("dialog", lambda dialog: dialog.accept())
        row.locator("button").click()
        frames = watcher.messages_until_closed(15.0)
        assert any(is_message("refused", request="connect")(f) and "removed" in f.fields["reason"] for f in frames)
        page.wait_for_function("() => window.rehearsal.state.events.some(e => e.kind === 'remove_participant')")
        assert joined["participant"] not in [str(p["id"]) for p in room(server, session["session"])["participants"]]
    finally:
        watcher.close()


def test_an_observer_sees_no_controls_and_its_forged_pause_is_refused(page, server):
    session = new_session(server)
    mentor = WsClient(server.http_port)  # a mentor elsewhere has started the room
    try:
        mentor.join(session["invites"]["mentor"], "Mina")
        mentor.until(is_message("welcome"))
        open_page(page, server, session["invites"]["observer"], "Oscar")
        assert page.locator("#console").is_hidden()
        assert page.locator("#btn-pause").is_hidden()
        page.evaluate("() => window.rehearsal.command('pause')")  # what a hand-edited page would send
        page.wait_for_function(
            "() => window.rehearsal.state.refusals.some(r => r.request === 'command:pause')", timeout=WAIT_MS
        )
        reason = page.evaluate("() => window.rehearsal.state.refusals.find(r => r.request === 'command:pause').reason")
        assert "observer" in reason
        assert page.locator("#notice").inner_text().startswith("refused")
        assert room(server, session["session"])["state"] == "running"
    finally:
        mentor.close()


def test_a_wrong_code_shows_the_refusal_on_the_join_form(page, server):
    assert f"watch page and mentor console: http://localhost:{server.http_port}/" in server.log()  # serve says where
    page.goto(f"http://127.0.0.1:{server.http_port}/watch")
    page.fill("#join-code", "not-a-real-code")
    page.fill("#join-name", "Eve")
    page.click("#join-button")
    page.wait_for_function("() => document.getElementById('join-error').textContent.length > 0", timeout=WAIT_MS)
    assert "invite" in page.locator("#join-error").inner_text().lower()
    assert page.locator("#join").is_visible()


def test_a_mentor_who_ends_the_session_gets_a_link_that_opens_its_debrief(page, server):
    import urllib.error
    import urllib.parse
    import urllib.request

    session = new_session(server)
    open_page(page, server, session["invites"]["mentor"], "Mina")
    assert page.locator("#debrief-link").is_hidden()  # only once the session ended
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#btn-end")
    page.wait_for_function("() => !document.getElementById('debrief-link').hidden", timeout=WAIT_MS)
    for button in ("#btn-pause", "#btn-reset", "#btn-inject", "#btn-takeover", "#btn-end"):
        assert page.locator(button).is_disabled(), button  # an ended room takes no command
    href = urllib.parse.urlsplit(page.get_attribute("#debrief-link", "href"))
    assert href.path == "/debrief" and urllib.parse.parse_qs(href.query)["session"] == [session["session"]]
    key = urllib.parse.parse_qs(href.fragment)["key"][0]  # in the fragment: never sent to a server
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/debrief/api/{session['session']}")
    request.add_header("Authorization", f"Debrief {key}")
    deadline, status = time.monotonic() + 90, None
    while time.monotonic() < deadline:  # the result is stored a moment after the end, then re-simulated once
        try:
            with urllib.request.urlopen(request, timeout=90) as response:
                status = response.status
                assert json.loads(response.read())["session"] == session["session"]
                break
        except urllib.error.HTTPError as exc:
            status = exc.code
            assert status == 404, exc.read()  # not stored yet; never a refusal of the key
            time.sleep(0.5)
    assert status == 200
