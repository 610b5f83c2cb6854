"""The join HTTP API (twisted.web): admins create sessions, participants trade invites for tokens.

    POST /api/sessions   {"scenario": "basic_skills", "invite_uses": 16 (optional, 1..1000: people per role)}
                         admin (Authorization: Bearer <credential>)
                         -> {"session", "scenario", "invite_uses", "invite_expires_in" (s), "invites": {role: code}}
                         ("scenario": a name, or the path of a file in the server's scenario folder)
    POST /api/join       {"invite": code, "name": "Dr. Ada"}  -> a ticket
    POST /api/rejoin     {"rejoin_code": code}                -> a fresh ticket for the same participant
                                                                 (a connection they still hold is closed)

A ticket is {"token" (base64 of the 2048-byte netcode connect token), "session", "participant", "role",
"name", "rejoin_code", "expires_in"}. Errors are JSON {"error": text}: 400 malformed request (not JSON, not an
object, nested deeper than ``MAX_JSON_DEPTH``), 413 body over ``MAX_BODY_BYTES``, 403 refused
invite, 401 bad admin credential (no detail; repeated failures from one address get 429 for a while),
503 while the server drains (no new sessions, joins or rejoins). The admin credential check is the
composition root's ``ops.auth.AdminGate`` (this module only knows its ``check(request)``).
"""

from __future__ import annotations

import base64
import inspect
import json
from collections.abc import Callable
from pathlib import PurePath
from typing import Any, Protocol

from twisted.web.resource import Resource
from twisted.web.server import Request

from rehearsal.identity import IdentityError
from rehearsal.invites import InviteBook, InviteError
from rehearsal.join_service import JoinService, Ticket

MAX_BODY_BYTES = 4096
MAX_JSON_DEPTH = 8  # our bodies are flat objects; a deeper one is refused before it is parsed
DEFAULT_INVITE_USES = 16  # people who may join with each role's invite (a class of observers: ask for more)
MAX_INVITE_USES = 1000
# How long a session's invite codes last (s): the code book's default (``InviteBook.issue``'s ``ttl``).
INVITE_EXPIRES_SECONDS = int(inspect.signature(InviteBook.issue).parameters["ttl"].default)


class AdminCheck(Protocol):
    """The admin credential check the composition root hands in (``ops.auth.AdminGate``)."""

    def check(self, request: Request) -> int | None:
        """None if the request carries the admin credential, else the status to answer (401 or 429)."""


class _RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _nesting(raw: bytes) -> int:
    """The deepest bracket nesting of a JSON text (brackets inside strings count too: an upper bound)."""
    depth = deepest = 0
    for byte in raw:
        if byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _json_body(request: Request) -> dict[str, Any]:
    raw = request.content.read(MAX_BODY_BYTES + 1) if request.content is not None else b""
    if len(raw) > MAX_BODY_BYTES:
        raise _RequestError(413, f"request body over {MAX_BODY_BYTES} bytes")
    if _nesting(raw) > MAX_JSON_DEPTH:  # before parsing: deep nesting would exhaust the parser's recursion
        raise _RequestError(400, f"request body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _RequestError(400, "request body is not JSON") from None
    if not isinstance(body, dict):
        raise _RequestError(400, "request body must be a JSON object")
    return body


def _reply(request: Request, status: int, payload: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(payload).encode()


def _ticket(ticket: Ticket) -> dict[str, Any]:
    who = ticket.identity
    return {
        "token": base64.b64encode(ticket.token).decode(),
        "session": who.session,
        "participant": who.participant,
        "role": who.role.value,
        "name": who.name,
        "rejoin_code": ticket.rejoin_code,
        "expires_in": ticket.expires_in,
    }


Closed = Callable[[], str | None]  # a reason while the server takes no new sessions or joins, else None


def _open() -> str | None:
    return None


class _JsonPost(Resource):
    """A POST-only JSON endpoint; subclasses implement handle(request, body) -> (status, payload).

    While ``closed()`` returns a reason (the server is draining) every request gets 503 with it.
    """

    isLeaf = True  # noqa: N815 (twisted's name)
    closed: Closed = staticmethod(_open)

    def render_POST(self, request: Request) -> bytes:  # noqa: N802 (twisted's name)
        reason = self.closed()
        if reason:
            return _reply(request, 503, {"error": reason})
        try:
            status, payload = self.handle(request, _json_body(request))
        except _RequestError as exc:
            status, payload = exc.status, {"error": str(exc)}
        return _reply(request, status, payload)

    def handle(self, request: Request, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError


class JoinResource(_JsonPost):
    def __init__(self, service: JoinService) -> None:
        super().__init__()
        self.service = service

    def handle(self, request: Request, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            return 200, _ticket(self.service.join(body.get("invite"), body.get("name")))
        except (InviteError, IdentityError) as exc:
            return 403, {"error": str(exc)}


class RejoinResource(_JsonPost):
    def __init__(self, service: JoinService) -> None:
        super().__init__()
        self.service = service

    def handle(self, request: Request, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            return 200, _ticket(self.service.rejoin(body.get("rejoin_code")))
        except InviteError as exc:
            return 403, {"error": str(exc)}


class SessionsResource(_JsonPost):
    """Admin: create a session from a scenario; create_session(scenario) -> session id (ValueError if bad)."""

    def __init__(self, service: JoinService, gate: AdminCheck, create_session: Callable[[str], str]) -> None:
        super().__init__()
        self.service = service
        self.gate = gate
        self.create_session = create_session

    def render_POST(self, request: Request) -> bytes:  # noqa: N802
        denied = self.gate.check(request)
        if denied is not None:  # no detail for a wrong credential
            return _reply(request, denied, {"error": "unauthorized" if denied == 401 else "too many attempts"})
        return super().render_POST(request)

    def handle(self, request: Request, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        scenario = body.get("scenario")
        if not isinstance(scenario, str):
            raise _RequestError(400, 'give {"scenario": "<name>"}')
        uses = body.get("invite_uses", DEFAULT_INVITE_USES)
        if not (isinstance(uses, int) and not isinstance(uses, bool) and 1 <= uses <= MAX_INVITE_USES):
            raise _RequestError(400, f"invite_uses must be an integer in [1, {MAX_INVITE_USES}]")
        try:
            session = self.create_session(scenario)
        except ValueError as exc:
            raise _RequestError(400, str(exc)) from None
        try:
            invites = self.service.invite_team(session, uses=uses)  # on failure the room is discarded
        except InviteError as exc:
            raise _RequestError(503, str(exc)) from None
        return 201, {
            "session": session,
            "scenario": PurePath(scenario).stem if scenario.endswith(".toml") else scenario,  # a path: its name
            "invite_uses": uses,
            "invite_expires_in": INVITE_EXPIRES_SECONDS,
            "invites": {r.value: c for r, c in invites.items()},
        }


def api_root(
    service: JoinService, gate: AdminCheck, create_session: Callable[[str], str], closed: Closed = _open
) -> Resource:
    """The /api tree to mount on a twisted.web Site; ``closed()`` -> reason refuses new sessions and joins
    with 503 (rejoining a room that still runs stays open)."""
    api = Resource()
    children: dict[bytes, _JsonPost] = {
        b"join": JoinResource(service),
        b"rejoin": RejoinResource(service),
        b"sessions": SessionsResource(service, gate, create_session),
    }
    for name, child in children.items():
        if name != b"rejoin":  # while draining, people already in a room may still come back to it
            child.closed = closed
        api.putChild(name, child)
    root = Resource()
    root.putChild(b"api", api)
    return root
