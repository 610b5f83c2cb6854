"""The join HTTP API on twisted.web, driven with in-memory requests."""

import base64
import io
import json

from twisted.web.test.requesthelper import DummyRequest

from netcode.transport.address import Address
from netcode.transport.connect_token import ConnectToken
from ops.auth import AUTH_FAILURES_ALLOWED, AdminGate
from rehearsal.http_api import api_root
from rehearsal.invites import InviteBook
from rehearsal.join_service import JoinService

ADMIN = "s3cret-admin-credential"


def _app():
    sessions: list[str] = []

    def create_session(scenario: str) -> str:
        if scenario != "basic_skills":
            raise ValueError(f"no scenario named {scenario!r}")
        sessions.append(f"s-{len(sessions) + 1}")
        return sessions[-1]

    service = JoinService(bytes(32), 0x1234, [Address.parse("127.0.0.1:40000")], session_exists=sessions.__contains__)
    return api_root(service, AdminGate(ADMIN), create_session)


def _post(root, path: str, body, auth: str | None = None, client: str = "127.0.0.1"):
    parts = [p.encode() for p in path.strip("/").split("/")]
    request = DummyRequest(parts)
    request.method = b"POST"
    request.client = type("Addr", (), {"host": client, "port": 5555})()
    request.content = io.BytesIO(body if isinstance(body, bytes) else json.dumps(body).encode())
    if auth is not None:
        request.requestHeaders.addRawHeader(b"authorization", auth.encode())
    resource = root
    for part in parts:
        resource = resource.getChildWithDefault(part, request)
    out = resource.render_POST(request)
    return request.responseCode or 200, json.loads(out)


def test_admin_creates_a_session_and_a_surgeon_joins():
    root = _app()
    status, created = _post(root, "api/sessions", {"scenario": "basic_skills"}, auth=f"Bearer {ADMIN}")
    assert status == 201 and set(created["invites"]) >= {"lead_surgeon", "mentor", "observer"}
    status, ticket = _post(root, "api/join", {"invite": created["invites"]["lead_surgeon"], "name": "Alice"})
    assert status == 200 and ticket["role"] == "lead_surgeon" and ticket["session"] == created["session"]
    token = ConnectToken.decode(base64.b64decode(ticket["token"]))
    assert token.expire_timestamp - token.create_timestamp == ticket["expires_in"]
    status, again = _post(root, "api/rejoin", {"rejoin_code": ticket["rejoin_code"]})
    assert status == 200 and again["participant"] == ticket["participant"]


def test_an_admin_sizes_the_invites_for_a_class_of_observers():
    root = _app()
    status, created = _post(root, "api/sessions", {"scenario": "basic_skills", "invite_uses": 2}, f"Bearer {ADMIN}")
    assert status == 201 and created["invite_uses"] == 2
    code = created["invites"]["observer"]
    assert [_post(root, "api/join", {"invite": code, "name": f"S{k}"})[0] for k in range(3)] == [200, 200, 403]
    for bad in (0, 1001, "5", True, 2.5):
        status, body = _post(root, "api/sessions", {"scenario": "basic_skills", "invite_uses": bad}, f"Bearer {ADMIN}")
        assert status == 400 and "invite_uses" in body["error"], bad


def test_bad_requests_get_clear_errors():
    root = _app()
    assert _post(root, "api/join", {"invite": "nope", "name": "x"}) == (
        403,
        {"error": "invite code not valid (unknown, used up or expired)"},
    )
    assert _post(root, "api/join", b"{not json")[0] == 400
    assert _post(root, "api/join", b"[1, 2]")[0] == 400
    assert _post(root, "api/join", b"x" * 5000)[0] == 413


def test_deeply_nested_json_is_a_clear_400_not_a_500():
    root = _app()
    for body in (
        b"[" * 2000 + b"]" * 2000,
        b'{"a":' * 600 + b"1" + b"}" * 600,
        b'{"invite": ' + b"[" * 20 + b"]" * 20 + b"}",
    ):
        status, reply = _post(root, "api/join", body)
        assert status == 400 and "nested deeper" in reply["error"], body[:20]
    # a shallow nesting is parsed and judged as usual
    assert _post(root, "api/join", {"invite": [[["x"]]], "name": "n"})[0] == 403
    status, body = _post(root, "api/sessions", {"scenario": "unknown"}, auth=f"Bearer {ADMIN}")
    assert status == 400 and "unknown" in body["error"]


def test_wrong_admin_credentials_get_401_without_detail_then_429():
    root = _app()
    for auth in (None, "Bearer wrong", f"Basic {ADMIN}"):
        assert _post(root, "api/sessions", {"scenario": "basic_skills"}, auth=auth, client="127.0.0.9") == (
            401,
            {"error": "unauthorized"},
        )
    for _ in range(AUTH_FAILURES_ALLOWED):
        _post(root, "api/sessions", {"scenario": "basic_skills"}, auth="Bearer wrong", client="127.0.0.9")
    status, _ = _post(root, "api/sessions", {"scenario": "basic_skills"}, auth="Bearer wrong", client="127.0.0.9")
    assert status == 429  # that address's wrong attempts wait out the window
    status, _ = _post(root, "api/sessions", {"scenario": "basic_skills"}, auth=f"Bearer {ADMIN}", client="127.0.0.9")
    assert status == 201  # the right credential is never locked out (ops.auth: the attacker's failures cost it nothing)
    status, _ = _post(root, "api/sessions", {"scenario": "basic_skills"}, auth=f"Bearer {ADMIN}", client="127.0.0.2")
    assert status == 201  # other addresses are unaffected


def test_while_draining_new_sessions_and_joins_get_503_with_the_reason_but_rejoins_work():
    reason = {"now": None}
    sessions: list[str] = ["s-1"]
    service = JoinService(bytes(32), 0x1234, [Address.parse("127.0.0.1:40000")], session_exists=sessions.__contains__)
    root = api_root(service, AdminGate(ADMIN), lambda scenario: "s-1", closed=lambda: reason["now"])
    invite = service.invite_team("s-1")
    code = next(iter(invite.values()))
    first = _post(root, "api/join", {"invite": code, "name": "Early"})[1]
    reason["now"] = "the server is draining"
    assert _post(root, "api/join", {"invite": code, "name": "Late"}) == (503, {"error": "the server is draining"})
    status, again = _post(root, "api/rejoin", {"rejoin_code": first["rejoin_code"]})
    assert status == 200 and again["participant"] == first["participant"]  # those in the room may come back
    assert _post(root, "api/sessions", {"scenario": "basic_skills"}, auth=f"Bearer {ADMIN}")[0] == 503
    assert _post(root, "api/sessions", {"scenario": "basic_skills"}, auth="Bearer wrong")[0] == 401  # auth first
    reason["now"] = None
    assert _post(root, "api/join", {"invite": code, "name": "Late"})[0] == 200  # the invite was not used up


def test_a_session_whose_codes_cannot_be_kept_gets_503_and_its_room_is_discarded():
    rooms: list[str] = []

    def create_session(scenario: str) -> str:
        rooms.append(f"s-{len(rooms) + 1}")
        return rooms[-1]

    service = JoinService(
        bytes(32),
        0x1234,
        [Address.parse("127.0.0.1:40000")],
        invites=InviteBook(max_sessions=1),
        discard_session=rooms.remove,
    )
    root = api_root(service, AdminGate(ADMIN), create_session)
    assert _post(root, "api/sessions", {"scenario": "basic_skills"}, auth=f"Bearer {ADMIN}")[0] == 201
    status, body = _post(root, "api/sessions", {"scenario": "basic_skills"}, auth=f"Bearer {ADMIN}")
    assert status == 503 and "1 sessions" in body["error"] and rooms == ["s-1"]
