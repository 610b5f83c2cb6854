"""The page as a participant's client in real Chromium against the real server (a subprocess, loopback): an assistant
joins with their code, drives their grasper with synthetic keyboard input (Playwright), grasps and pulls the tissue
(the server broadcasts the grasp; the tissue moves on screen, in pixels), and draws their own instrument from local
input; an observer's page has no instrument controls, and an input forged from it is refused by the server."""

from __future__ import annotations

import time

import pytest

from tests.rehearsal.e2e_helpers import new_session, running_server
from tests.rehearsal.web.conftest import ARTIFACTS_DIR
from tests.rehearsal.web.test_page import WAIT_MS, open_page, pixels
from tests.rehearsal.web.ws_client import WsClient, is_message

RIG = "window.rehearsal.rig.hands.get('right')"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("participant-page") / "data") as proc:
        yield proc


DRAWN_TOP_JS = (
    "() => { const a = window.rehearsal.scene.tissueGeometry.getAttribute('position').array; let y = -1e9;"
    " for (let i = 1; i < a.length; i += 3) y = Math.max(y, a[i]); return y; }"
)


def hold_key_until(page, key: str, condition: str, timeout_ms: int = WAIT_MS) -> None:
    """Hold a key down (synthetic keyboard input) until a JS condition holds, then release it."""
    page.keyboard.down(key)
    try:
        page.wait_for_function(f"() => {condition}", timeout=timeout_ms)
    finally:
        page.keyboard.up(key)


def test_an_assistant_grasps_and_pulls_tissue_from_the_keyboard(page, server):
    session = new_session(server)
    watcher = WsClient(server.http_port)  # hears what the server broadcasts to the room
    try:
        watcher.join(session["invites"]["observer"], "Otto")
        open_page(page, server, session["invites"]["assistant_surgeon"], "Asa")
        assert page.locator("#instruments").is_visible()
        assert page.evaluate("() => window.rehearsal.participant !== null")
        me = page.evaluate("() => window.rehearsal.state.me")  # decimal text (ids are 63-bit)
        hand = page.evaluate("() => window.rehearsal.state.hands.right")
        page.locator("#view canvas").focus()
        before_top = page.evaluate(DRAWN_TOP_JS)
        before = pixels(page)
        # own instrument drawn from local input in the frame that took it, before any server echo
        page.keyboard.down("KeyA")
        page.wait_for_timeout(150)
        page.keyboard.up("KeyA")
        # one input a frame: on a loaded machine SwiftShader may draw fewer than ten frames in 150 ms
        page.wait_for_function("() => window.rehearsal.state.inputsSent > 10", timeout=WAIT_MS)
        drawn = page.evaluate(
            f"() => [window.rehearsal.scene.objects.get({hand}).position.x, {RIG}.position[0],"
            " window.rehearsal.state.lastRender && window.rehearsal.state.inputsSent]"
        )
        assert drawn[0] == pytest.approx(drawn[1], abs=1e-6) and drawn[1] < 0 and drawn[2] > 10
        hold_key_until(page, "KeyF", f"{RIG}.position[1] <= 0.03")  # down to the working height, jaws open
        page.keyboard.down("Space")  # close the jaws on the tissue, and keep them closed
        try:
            page.wait_for_function(f"() => {RIG}.jaw === 0 && window.rehearsal.state.grasps > 0", timeout=WAIT_MS)
            hold_key_until(page, "KeyR", f"{RIG}.position[1] >= 0.045")  # pull up 1.5 cm
            page.wait_for_function(f"() => ({DRAWN_TOP_JS})() > {before_top + 0.006}", timeout=WAIT_MS)
            predicted = page.evaluate("() => window.rehearsal.state.lastRender.sources.predicted")
            after = pixels(page)
            ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS_DIR / "participant_pull.png"))
        finally:
            page.keyboard.up("Space")
        grasp = watcher.until(is_message("event", kind="grasp"), 10.0)
        assert str(grasp.fields["by"]) == me and grasp.fields["instrument"] == hand  # the server's grasp, ours
        assert predicted >= 1  # the held patches were predicted from the response model while pulling
        changed = sum(abs(a - b) > 24 for a, b in zip(before["gray"], after["gray"], strict=True))
        assert changed > 0.005 * len(before["gray"]), changed  # the pulled tissue is drawn where it now is
        assert not [e for e in page.js_errors if "pageerror" in e], page.js_errors
        refusals = page.evaluate("() => window.rehearsal.state.refusals.map((r) => r.reason)")
        assert not refusals, refusals
    finally:
        watcher.close()


def test_an_observer_page_has_no_instrument_controls_and_its_forged_input_is_refused(page, server):
    session = new_session(server)
    open_page(page, server, session["invites"]["observer"], "Olive")
    assert page.locator("#instruments").is_hidden()
    assert page.evaluate("() => window.rehearsal.participant === null && window.rehearsal.rig === null")
    page.keyboard.press("Space")  # keys drive nothing here
    sent = page.evaluate(
        """async () => {
          const { InputSender } = await import('/static/js/input_sender.js');
          const s = new InputSender([2]);
          s.addSample(performance.now() / 1000, { 2: { position: [0, 0.03, 0], rotation: [0, 0, 0, 1], jaw: 0 } });
          return window.rehearsal.link.send('input', { p: s.packet(performance.now() / 1000) });
        }"""
    )
    assert sent
    page.wait_for_function("() => window.rehearsal.state.refusals.some((r) => r.request === 'input')", timeout=WAIT_MS)
    reason = page.evaluate("() => window.rehearsal.state.refusals.find((r) => r.request === 'input').reason")
    assert "observer" in reason
    assert page.locator("#notice").inner_text().startswith("refused")


def test_the_page_offers_no_xr_button_without_webxr_and_keeps_driving(page, server):
    session = new_session(server)
    open_page(page, server, session["invites"]["lead_surgeon"], "Lea")
    time.sleep(0.5)
    modes = page.evaluate("() => window.rehearsal.state.xrModes")
    assert page.locator("#btn-xr-vr").is_hidden() == ("immersive-vr" not in modes)
    assert page.evaluate("() => window.rehearsal.state.inputsSent") > 0
