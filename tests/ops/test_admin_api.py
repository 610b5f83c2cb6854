"""ops.admin_api: authentication first, then routing, JSON answers and clear errors (in-memory requests)."""

from __future__ import annotations

import json

from twisted.web.test.requesthelper import DummyRequest

from ops.admin_api import AdminActions, ConflictError, admin_root
from ops.auth import AUTH_FAILURES_ALLOWED, AdminGate

ADMIN = "admin-credential-for-tests"


class FakeApp:
    """Two rooms; records what the admin did."""

    def __init__(self) -> None:
        self.rooms = {
            "s-1": {"session": "s-1", "state": "running", "participants": {9: "lead_surgeon", 10: "observer"}},
            "s-2": {"session": "s-2", "state": "lobby", "participants": {}},
        }
        self.done: list[tuple] = []

    def list_rooms(self) -> list[dict]:
        return [{"session": s, "state": r["state"], "tick_p99_seconds": 0.01} for s, r in self.rooms.items()]

    def room(self, session: str) -> dict | None:
        room = self.rooms.get(session)
        return None if room is None else {"session": session, "state": room["state"]}

    def end_room(self, session: str) -> dict:
        if session not in self.rooms:
            raise LookupError(f"no room {session!r}")
        if session == "s-2":
            raise ConflictError("this room cannot end now")
        self.done.append(("end", session))
        return {"session": session, "state": "ended"}

    def remove_participant(self, session: str, participant: int) -> dict:
        room = self.rooms.get(session)
        if room is None or participant not in room["participants"]:
            raise LookupError(f"no participant {participant} in room {session!r}")
        self.done.append(("remove", session, participant))
        return {"session": session, "participant": participant, "removed": True}

    def actions(self) -> AdminActions:
        finished = {"s-0": {"session": "s-0", "steps": [{"id": "retract", "status": "done"}]}}
        return AdminActions(
            self.list_rooms,
            self.room,
            self.end_room,
            self.remove_participant,
            list_results=lambda: [{"session": s} for s in finished],
            result=finished.get,
        )


def call(root, method: str, path: str, auth: str | None = f"Bearer {ADMIN}", client: str = "127.0.0.1"):
    parts = [p.encode() for p in path.strip("/").split("/")]
    request = DummyRequest(parts)
    request.method = method.encode()
    request.client = type("Addr", (), {"host": client, "port": 5555})()
    if auth is not None:
        request.requestHeaders.addRawHeader(b"authorization", auth.encode())
    resource = root
    while request.postpath and not resource.isLeaf:
        resource = resource.getChildWithDefault(request.postpath.pop(0), request)
        request.prepath.append(b"")
    out = resource.render(request)
    return request.responseCode or 200, json.loads(out), request


def make():
    app = FakeApp()
    return app, admin_root(AdminGate(ADMIN), app.actions())


def test_lists_rooms_and_shows_one():
    _, root = make()
    status, body, _ = call(root, "GET", "admin/rooms")
    assert status == 200 and [r["session"] for r in body["rooms"]] == ["s-1", "s-2"]
    assert call(root, "GET", "admin/rooms/s-1")[:2] == (200, {"session": "s-1", "state": "running"})
    assert call(root, "GET", "admin/rooms/")[0] == 200  # a trailing slash is the same list


def test_lists_finished_sessions_and_shows_one_result():
    _, root = make()
    assert call(root, "GET", "admin/results")[:2] == (200, {"results": [{"session": "s-0"}]})
    status, body, _ = call(root, "GET", "admin/results/s-0")
    assert status == 200 and body["steps"][0]["status"] == "done"
    assert call(root, "GET", "admin/results/s-9")[:2] == (404, {"error": "no finished session 's-9'"})
    assert call(root, "POST", "admin/results")[0] == 405
    assert call(root, "GET", "admin/results", auth=None)[0] == 401


def test_ends_a_room_and_removes_a_participant():
    app, root = make()
    assert call(root, "POST", "admin/rooms/s-1/end")[:2] == (200, {"session": "s-1", "state": "ended"})
    status, body, _ = call(root, "POST", "admin/rooms/s-1/participants/10/remove")
    assert status == 200 and body == {"session": "s-1", "participant": 10, "removed": True}
    assert app.done == [("end", "s-1"), ("remove", "s-1", 10)]


def test_bad_input_gets_clear_json_errors():
    app, root = make()
    assert call(root, "GET", "admin/rooms/s-404")[:2] == (404, {"error": "no room 's-404'"})
    assert call(root, "POST", "admin/rooms/s-404/end")[:2] == (404, {"error": "no room 's-404'"})
    status, body, _ = call(root, "POST", "admin/rooms/s-1/participants/77/remove")
    assert status == 404 and "77" in body["error"]
    status, body, _ = call(root, "POST", "admin/rooms/s-1/participants/x1/remove")
    assert status == 400 and "integer" in body["error"]
    assert call(root, "POST", "admin/rooms/s-2/end")[:2] == (409, {"error": "this room cannot end now"})
    status, body, request = call(root, "DELETE", "admin/rooms/s-1")
    assert status == 405 and request.responseHeaders.getRawHeaders(b"allow") == [b"GET"]
    assert call(root, "GET", "admin/rooms/s-1/end")[0] == 405
    assert call(root, "GET", "admin/nothing")[0] == 404
    assert call(root, "GET", "admin")[0] == 404
    assert call(root, "GET", "admin/rooms/" + "x" * 200)[0] == 404
    assert app.done == []


def test_an_app_bug_is_a_500_without_detail():
    def broken() -> list:
        raise RuntimeError("secret internals")

    app = FakeApp()
    root = admin_root(AdminGate(ADMIN), AdminActions(broken, app.room, app.end_room, app.remove_participant))
    assert call(root, "GET", "admin/rooms")[:2] == (500, {"error": "internal error"})


def test_wrong_or_missing_credentials_get_401_without_detail_then_429():
    app, root = make()
    for i, auth in enumerate((None, "Bearer wrong", f"Basic {ADMIN}", f"Bearer {ADMIN}x")):
        # authentication comes before routing: unknown paths and rooms tell nothing either
        for path in ("admin/rooms", "admin/rooms/s-404", "admin/nothing"):
            assert call(root, "GET", path, auth=auth, client=f"10.0.1.{i}")[:2] == (401, {"error": "unauthorized"})
    for _ in range(AUTH_FAILURES_ALLOWED):
        call(root, "POST", "admin/rooms/s-1/end", auth="Bearer wrong", client="10.0.0.2")
    wrong = call(root, "POST", "admin/rooms/s-1/end", auth="Bearer wrong", client="10.0.0.2")
    assert wrong[:2] == (429, {"error": "too many attempts"})
    assert call(root, "GET", "admin/rooms", client="10.0.0.3")[0] == 200  # other addresses are unaffected
    assert app.done == []
    assert call(root, "GET", "admin/rooms", client="10.0.0.2")[0] == 200  # nor is the right credential (ops.auth)


def test_the_gate_never_shows_the_credential():
    gate = AdminGate(ADMIN)
    assert ADMIN not in repr(gate) and ADMIN not in str(vars(gate).get("clock"))
