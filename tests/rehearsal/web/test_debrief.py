"""The debrief page in real Chromium against the real server (a subprocess, loopback) for a real short session
with a cut (a Room driven directly, recorded and saved in the server's data directory): it seeks to the cut
and shows it, its pass/fail table is the stored result, and bad ids and missing credentials get clear errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from rehearsal.bots import ServerProcess, get
from rehearsal.results_store import RESULTS_FILE, ResultsStore
from tests.rehearsal.debrief_helpers import cut_session
from tests.rehearsal.e2e_helpers import running_server
from tests.rehearsal.web.conftest import ARTIFACTS_DIR

WAIT_MS = 120_000  # the first open re-simulates the session (and SwiftShader draws slowly on a loaded machine)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("debrief") / "data"
    cut_session(data_dir)
    with running_server(data_dir) as proc:
        yield proc


@pytest.fixture(scope="module")
def stored(server):
    store = ResultsStore(server.data_dir / RESULTS_FILE)
    try:
        return store.session("s-cut")
    finally:
        store.close()


def open_debrief(page, server: ServerProcess, session: str = "s-cut", credential: str | None = None) -> None:
    base = f"http://127.0.0.1:{server.http_port}"
    page.goto(f"{base}/debrief")
    secret = server.credential() if credential is None else credential
    page.evaluate("(c) => sessionStorage.setItem('rehearsal.admin', c)", secret)
    page.goto(f"{base}/debrief?session={session}")
    page.wait_for_function("() => document.body.dataset.ready", timeout=WAIT_MS)


ROWS_JS = """() => [...document.querySelectorAll('#results tr[data-hand]')].map((r) => ({
  participant: r.dataset.participant, hand: r.dataset.hand, passed: r.dataset.passed,
  cells: Object.fromEntries([...r.querySelectorAll('td[data-metric]')]
    .map((c) => [c.dataset.metric, c.dataset.value || c.textContent])),
}))"""


def canvas_image(page) -> str:
    return page.evaluate("() => document.querySelector('#view canvas').toDataURL('image/png')")


def test_the_debrief_seeks_to_a_cut_and_shows_it(page, server):
    open_debrief(page, server)
    assert page.evaluate("() => document.body.dataset.ready") == "true", page.inner_text("#error")
    summary = page.evaluate("() => window.debrief.state.summary")
    assert summary["agrees"] is True, summary["mismatches"]
    cuts = [e["t"] for e in summary["timeline"] if e["kind"] == "cut"]
    assert cuts, [e["kind"] for e in summary["timeline"]]
    kinds = {e["kind"] for e in summary["timeline"]}
    assert {"annotation", "command", "complication_started"} <= kinds  # mentor and nurse actions are there

    page.evaluate("(t) => window.debrief.seek(t)", max(0.0, cuts[0] - 0.2))
    before = page.evaluate("() => [window.debrief.triangleCount(), window.debrief.sceneTriangles()]")
    image_before = canvas_image(page)
    # click the last cut's marker on the timeline: the view seeks there
    page.locator("#timeline .marker[data-kind=cut]").last.click()
    assert page.evaluate("() => window.debrief.state.time") == pytest.approx(cuts[-1])
    page.evaluate("(t) => window.debrief.seek(t)", cuts[-1] + 0.3)
    after = page.evaluate("() => [window.debrief.triangleCount(), window.debrief.sceneTriangles()]")
    assert before[0] > 0 and after[0] > 0 and after != before  # the cut changed the surface
    assert canvas_image(page) != image_before  # ... and what is drawn
    page.screenshot(path=str(ARTIFACTS_DIR / "debrief_after_cut.png"))
    # seeking back decodes from the nearest keyframe again: the uncut surface returns
    page.evaluate("(t) => window.debrief.seek(t)", max(0.0, cuts[0] - 0.2))
    assert page.evaluate("() => [window.debrief.triangleCount(), window.debrief.sceneTriangles()]") == before
    # play runs the replay forward
    page.evaluate("() => window.debrief.seek(0)")
    page.click("#play")
    page.wait_for_function("() => window.debrief.state.time > 0.3", timeout=WAIT_MS)
    assert page.locator("#plots .plot .uplot canvas").count() >= 2  # drawn by uPlot (vendored)
    plots = page.evaluate("() => window.debrief.plots()")
    forces = [p for p in plots if p["plot"] == "force"]
    assert forces and all(p["labels"][0].startswith("force_n") for p in forces)
    assert any(p["points"][0] > 10 for p in forces), plots  # the held instruments' force over time
    metrics = [p for p in plots if p["plot"] == "metrics"]
    assert metrics and any(sum(p["points"]) > 10 for p in metrics), plots
    assert not page.js_errors, page.js_errors


def test_the_pass_fail_table_equals_the_stored_result(page, server, stored):
    open_debrief(page, server)
    rows = page.evaluate(ROWS_JS)
    expected = [
        (str(p["participant"]), hand, entry)
        for p in stored["participants"]
        for hand, entry in (p["skills"].get("hands") or {}).items()
    ]
    assert expected, "the surgeon was scored"
    assert [(r["participant"], r["hand"]) for r in rows] == [(pid, hand) for pid, hand, _ in expected]
    for row, (_, _, entry) in zip(rows, expected, strict=True):
        assert row["passed"] == str(entry["passed"]).lower()
        assert row["cells"]["passed"] == ("pass" if entry["passed"] else "fail")
        for name in entry["checks"]:
            assert float(row["cells"][name]) == entry["metrics"][name], name  # the very number stored
    replayed = page.evaluate("() => window.debrief.state.summary.replayed.participants")
    assert replayed == {str(p["participant"]): p["skills"] for p in stored["participants"] if p["skills"]}


def test_bad_ids_unknown_sessions_and_missing_credentials_get_clear_errors(page, server):
    port, secret = server.http_port, server.credential()
    status, body = get(port, "/debrief/api/s-cut")
    assert status == 401 and "admin credential" in json.loads(body)["error"]
    status, body = get(port, "/debrief/api/s-cut", "wrong" * 8)
    assert status in (401, 403)
    status, body = get(port, "/debrief/api/no-such-session", secret)
    assert status == 404 and "no finished session" in json.loads(body)["error"]
    status, body = get(port, "/debrief/api/bad%20id!", secret)
    assert status == 400 and "session id" in json.loads(body)["error"]
    status, _ = get(port, "/debrief/api/s-cut/other", secret)
    assert status == 404
    request = urllib.request.Request(f"http://127.0.0.1:{port}/debrief?session=s-cut")
    with urllib.request.urlopen(request, timeout=10) as response:  # the page itself needs no credential
        assert response.status == 200 and b"debrief.js" in response.read()

    page.goto(f"http://127.0.0.1:{port}/debrief?session=s-cut")  # no credential in this tab
    assert page.locator("#login").is_visible()
    assert "admin credential" in page.inner_text("#error")
    open_debrief(page, server, session="no-such-session")
    assert page.evaluate("() => document.body.dataset.ready") == "error"
    assert "404" in page.inner_text("#error") and "no finished session" in page.inner_text("#error")
    # the session list links each finished session
    page.goto(f"http://127.0.0.1:{port}/debrief")
    page.wait_for_function("() => document.body.dataset.ready", timeout=WAIT_MS)
    assert page.locator("#session-list a[href='/debrief?session=s-cut']").count() == 1


def fetch(port: int, path: str, authorization: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_mentors_debrief_key_opens_its_session_only_and_a_bad_one_nothing(page, server):
    from rehearsal.web.debrief_access import DebriefAccess

    port, access = server.http_port, DebriefAccess.from_data_dir(server.data_dir)  # the server's secret
    key = access.issue("s-cut")
    status, body = fetch(port, "/debrief/api/s-cut", f"Debrief {key}")
    assert status == 200 and json.loads(body)["session"] == "s-cut"
    status, track = fetch(port, "/debrief/api/s-cut/track", f"Debrief {key}")
    assert status == 200 and len(track) > 0
    refused = {
        "another session's": f"Debrief {access.issue('s-other')}",
        "expired": f"Debrief {access.issue('s-cut', seconds=-1)}",
        "forged": f"Debrief {key[:-4]}0000",
        "another server's": f"Debrief {DebriefAccess(b'x' * 32).issue('s-cut')}",
        "malformed": "Debrief nonsense",
    }
    for why, header in refused.items():
        status, body = fetch(port, "/debrief/api/s-cut", header)
        assert status == 403, why
        assert json.loads(body)["error"], why
    status, _ = fetch(port, "/admin/results", f"Debrief {key}")  # read-only and debrief-only: not admin
    assert status in (401, 403)
    assert key not in "\n".join(server.lines)  # never logged

    page.goto(f"http://127.0.0.1:{port}/debrief?session=s-cut#key={key}")  # a mentor's link, no admin credential
    page.wait_for_function("() => document.body.dataset.ready", timeout=WAIT_MS)
    assert page.evaluate("() => document.body.dataset.ready") == "true", page.inner_text("#error")
    assert not page.locator("#login").is_visible()
