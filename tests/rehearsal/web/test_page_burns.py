"""Burns on the page, in real Chromium against the real server (a subprocess, loopback): a bot surgeon handed the
cautery hook burns the tissue block, and the watching page colours the burned surface (its mesh's colour attribute
and the pixels it draws); a page that joins afterwards shows the same burns (the newcomer's full state)."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest

from physics.instruments import look_rotation
from rehearsal.bots import Headset, post, pump
from tests.rehearsal.e2e_helpers import running_server
from tests.rehearsal.web.conftest import ARTIFACTS_DIR
from tests.rehearsal.web.test_page import WAIT_MS, new_session, open_page
from tests.rehearsal.web.ws_client import WsClient

DOWN = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))  # the hook points at the table
HEIGHT = 0.026  # m: the hinge 6 mm above the block's top (0.02), so the hook's bend is in the tissue
STROKE = 0.004  # m/s along x: after burning through in one place, the energized hook draws a burn line

# The page's burned vertices: how many it holds with a level, the highest, and the colours its mesh shows for the
# hottest ones against a healthy one's (from the geometry's colour attribute, linear RGB).
BURNS_JS = """() => {
  const s = window.rehearsal.scene;
  const colour = s.tissueGeometry.getAttribute('color');
  let max = 0, hot = 0, hotSum = 0, healthySum = null, shown = 0;
  for (const [id, row] of s.indexOf) {
    const level = s.burnLevel(id);
    const rgb = colour.getX(row) + colour.getY(row) + colour.getZ(row);
    if (level > 0) shown += 1;
    if (level > max) max = level;
    if (level >= 200) { hot += 1; hotSum += rgb; }
    if (level === 0 && healthySum === null) healthySum = rgb;
  }
  return { held: s.burns.size, shown, max, hot, hotMean: hot ? hotSum / hot : null, healthy: healthySum,
           messages: window.rehearsal.state.burnMessages };
}"""

# Pixels that look burned: lit, not the background, and not the tissue's red (blanched tan or charred brown).
BURNT_PIXELS_JS = """() => {
  const s = window.rehearsal.scene;
  s.render();
  const canvas = s.renderer.domElement;
  const scratch = document.createElement('canvas');
  scratch.width = Math.ceil(canvas.width / 2);
  scratch.height = Math.ceil(canvas.height / 2);
  const ctx = scratch.getContext('2d');
  ctx.drawImage(canvas, 0, 0, scratch.width, scratch.height);
  const d = ctx.getImageData(0, 0, scratch.width, scratch.height).data;
  let burnt = 0;
  for (let i = 0; i < d.length; i += 4) {
    const r = d[i], g = d[i + 1], b = d[i + 2];
    if (r >= g && g >= b && r > b + 6 && r - g < 0.3 * r && !(r > g + 30)) burnt += 1;
  }
  return burnt;
}"""


def sent_burn_level(headset: Headset) -> int:
    """The highest burn level the server's ``surface_damage`` messages gave a vertex that is on the surface
    now (the participant's decoder's layout: a burn-through removes vertices), as the page must show it."""
    levels: dict[int, int] = {}
    for m in headset.messages["surface_damage"]:
        if m.get("reset"):
            levels.clear()
        ids = np.frombuffer(m["vertices"], "<u4")
        levels.update(zip(ids.tolist(), np.frombuffer(m["levels"], np.uint8).tolist(), strict=True))
    layout = headset.decoder.layout
    surface = set() if layout is None else set(np.asarray(layout.vertex_ids).tolist())
    return max((level for vid, level in levels.items() if vid in surface), default=0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("burns") / "data") as proc:
        yield proc


def test_the_page_colours_the_tissue_the_cautery_hook_burns(page, server):
    session = new_session(server)
    status, ticket = post(server.http_port, "/api/join", {"invite": session["invites"]["lead_surgeon"], "name": "Lea"})
    assert status == 200, ticket
    surgeon = Headset(base64.b64decode(ticket["token"]), name="Lea")
    nurse = WsClient(server.http_port)  # the scrub nurse hands the hook over
    try:
        assert pump([surgeon], lambda: surgeon.welcome is not None and surgeon.snapshots_applied > 2, 15.0)
        nurse.join(session["invites"]["scrub_nurse"], "Nina")
        who = surgeon.welcome["participant"]
        nurse.send_message(
            "command", {"action": "hand_instrument", "args": {"to": who, "hand": "right", "kind": "cautery_hook"}}
        )
        assert pump([surgeon], lambda: surgeon.events["hand_instrument"] > 0, 10.0)
        open_page(page, server, session["invites"]["observer"], "Olive")
        before = page.evaluate(BURNS_JS)
        assert before["held"] == 0 and before["messages"] == 0  # nothing burned yet: nothing sent
        burnt_before = page.evaluate(BURNT_PIXELS_JS)

        t0 = time.monotonic()
        lifted = [0.0]

        def stroke(energy: bool) -> None:
            at = time.monotonic()
            x = -0.006 + STROKE * min(max(at - t0 - 1.2, 0.0), 2.0)
            y = HEIGHT + (0.0 if energy else 0.06 * max(at - lifted[0], 0.0))  # then lifted off, to show the burn
            surgeon.send_pose((x, y, 0.0), DOWN, 0.0, energy=energy, at=at)

        # Burn until the server has told the room what the page must show, a level of 200 and a burn-through
        # (a loaded machine ticks slower, so a fixed stroke time may burn less), for at least the 3.2 s stroke;
        # then lift off and wait for the page.
        assert pump(
            [surgeon],
            lambda: time.monotonic() - t0 > 3.2 and sent_burn_level(surgeon) >= 200 and surgeon.events["burn"] > 0,
            60.0,
            each_frame=lambda: stroke(True),
        ), f"the server sent burn levels up to {sent_burn_level(surgeon)}, {surgeon.events['burn']} burn events"
        lifted[0] = time.monotonic()
        pump([surgeon], lambda: time.monotonic() - lifted[0] > 1.0, 2.0, each_frame=lambda: stroke(False))
        try:
            page.wait_for_function(f"() => ({BURNS_JS})().max >= 200 && ({BURNS_JS})().hot > 0", timeout=WAIT_MS)
        except Exception as exc:
            raise AssertionError(f"the page shows {page.evaluate(BURNS_JS)}; sent {sent_burn_level(surgeon)}") from exc
        after = page.evaluate(BURNS_JS)
        assert after["messages"] > 0 and after["shown"] > 0
        assert after["hotMean"] < 0.75 * after["healthy"], after  # charring vertices are drawn dark
        assert surgeon.events["burn"] > 0  # the hook burned through some tets: the surface was rebuilt
        burnt_after = page.evaluate(BURNT_PIXELS_JS)
        assert burnt_after > burnt_before + 20, (burnt_before, burnt_after)  # the burn is on screen
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS_DIR / "burns.png"))

        late = page.context.new_page()  # a page that joins after the burn is told all of it
        try:
            open_page(late, server, session["invites"]["observer"], "Otto")
            late.wait_for_function(f"() => ({BURNS_JS})().held > 0", timeout=WAIT_MS)
            assert late.evaluate(BURNS_JS)["held"] == page.evaluate(BURNS_JS)["held"]
            assert late.evaluate("() => window.rehearsal.state.burnMessages") >= 1
        finally:
            late.close()
        assert not [e for e in page.js_errors if "pageerror" in e], page.js_errors
    finally:
        nurse.close()
        surgeon.close()
