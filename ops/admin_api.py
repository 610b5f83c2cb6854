"""The authenticated admin HTTP API for rooms and participants (twisted.web), mounted at ``/admin``.

Every request needs ``Authorization: Bearer <admin credential>`` (checked by the shared
``ops.auth.AdminGate``, before any routing, so nothing about rooms leaks without it)::

    GET  /admin/rooms                                  -> 200 {"rooms": [room summary, ...]}
    GET  /admin/rooms/{session}                        -> 200 room detail
    POST /admin/rooms/{session}/end                    -> 200 {"session", "state"}  (the room ends now)
    POST /admin/rooms/{session}/participants/{id}/remove
                                                       -> 200 {"session", "participant", "removed": true}
    GET  /admin/results                                -> 200 {"results": [finished session summary, ...]}
    GET  /admin/results/{session}                      -> 200 a finished session's full result (debrief)

The shapes of a summary and a detail are the app's (see ``AdminActions``); this module only routes,
authenticates and turns errors into JSON ``{"error": text}``: 401 wrong or missing credential (no
detail), 429 too many failures from one address, 404 unknown path, room or participant, 400 a
malformed id, 405 wrong method (with ``Allow``), 409 a request the room's state refuses, 500 an app bug
(logged without the request's headers).

The app hands in plain callables (``AdminActions``): ops never imports the app.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from ops.auth import AdminGate, denied_body

__all__ = ["AdminActions", "AdminResource", "ConflictError", "admin_root"]

log = logging.getLogger(__name__)

MAX_ID_CHARS = 64  # session ids and participant ids in paths; longer ones are not ids


class ConflictError(Exception):
    """The request is well formed but the room's state refuses it (answered 409 with the message)."""


@dataclass(frozen=True)
class AdminActions:
    """What the app lets an admin see and do. Unknown rooms/participants: ``None`` or ``LookupError``.

    * ``list_rooms()`` -> list of summaries: ``{"session", "state", "scenario", "participants": {role: n},
      "tick_p99_seconds", ...}``
    * ``room(session)`` -> a detail dict, or None if there is no such room
    * ``end_room(session)`` -> a result dict; raises LookupError (unknown) or ConflictError
    * ``remove_participant(session, participant_id)`` -> a result dict; raises LookupError or ConflictError
    * ``list_results()`` -> summaries of finished sessions, newest first; ``result(session)`` -> one in
      full, or None (both empty when the app keeps no results)
    """

    list_rooms: Callable[[], Sequence[dict[str, Any]]]
    room: Callable[[str], dict[str, Any] | None]
    end_room: Callable[[str], dict[str, Any]]
    remove_participant: Callable[[str, int], dict[str, Any]]
    list_results: Callable[[], Sequence[dict[str, Any]]] = tuple
    result: Callable[[str], dict[str, Any] | None] = lambda session: None


class _AnswerError(Exception):
    def __init__(self, status: int, payload: dict[str, Any], allow: Sequence[str] = ()) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload
        self.allow = allow


def _reply(request: Request, status: int, payload: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(payload).encode()


def _segment(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _AnswerError(400, {"error": f"{what} is not UTF-8"}) from None
    if not text or len(text) > MAX_ID_CHARS or not text.isprintable():
        raise _AnswerError(404, {"error": f"no such {what}"})
    return text


def _method(request: Request, allowed: str) -> None:
    method = (request.method or b"").decode("latin-1")
    if method != allowed:
        raise _AnswerError(405, {"error": f"use {allowed}"}, allow=(allowed,))


class AdminResource(Resource):
    """Everything under /admin: authenticate, route on the path, answer JSON."""

    isLeaf = True  # noqa: N815 (twisted's name)

    def __init__(self, gate: AdminGate, actions: AdminActions) -> None:
        super().__init__()
        self.gate = gate
        self.actions = actions

    def render(self, request: Request) -> bytes:
        denied = self.gate.check(request)
        if denied is not None:
            return _reply(request, denied, denied_body(denied))
        try:
            status, payload = self._route(request, [p for p in request.postpath if p])
        except _AnswerError as answer:
            if answer.allow:
                request.setHeader(b"allow", ", ".join(answer.allow).encode())
            status, payload = answer.status, answer.payload
        except Exception as exc:  # an app bug: say so, log the type (never the request's headers)
            route = b"/".join(request.postpath)[:200].decode("utf-8", "replace")
            log.error("admin %s /admin/%s failed: %s", request.method, route, type(exc).__name__)
            status, payload = 500, {"error": "internal error"}
        return _reply(request, status, payload)

    def _route(self, request: Request, path: list[bytes]) -> tuple[int, dict[str, Any]]:
        if path and path[0] == b"results" and len(path) <= 2:
            _method(request, "GET")
            if len(path) == 1:
                return 200, {"results": list(self.actions.list_results())}
            session = _segment(path[1], "session")
            found = self.actions.result(session)
            if found is None:
                raise _AnswerError(404, {"error": f"no finished session {session!r}"})
            return 200, found
        if not path or path[0] != b"rooms" or len(path) > 5:
            raise _AnswerError(404, {"error": "no such endpoint (see /admin/rooms)"})
        if len(path) == 1:
            _method(request, "GET")
            return 200, {"rooms": list(self.actions.list_rooms())}
        session = _segment(path[1], "room")
        if len(path) == 2:
            _method(request, "GET")
            detail = self.actions.room(session)
            if detail is None:
                raise _AnswerError(404, {"error": f"no room {session!r}"})
            return 200, detail
        if len(path) == 3 and path[2] == b"end":
            _method(request, "POST")
            return 200, self._act(self.actions.end_room, session)
        if len(path) == 5 and path[2] == b"participants" and path[4] == b"remove":
            _method(request, "POST")
            raw = _segment(path[3], "participant")
            if not raw.isdigit():
                raise _AnswerError(400, {"error": "a participant id is a non-negative integer"})
            return 200, self._act(self.actions.remove_participant, session, int(raw))
        raise _AnswerError(404, {"error": "no such endpoint (see /admin/rooms)"})

    @staticmethod
    def _act(action: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        try:
            return action(*args)
        except LookupError as exc:
            raise _AnswerError(404, {"error": exc.args[0] if exc.args else "not found"}) from None
        except ConflictError as exc:
            raise _AnswerError(409, {"error": str(exc)}) from None


def admin_root(gate: AdminGate, actions: AdminActions, root: Resource | None = None) -> Resource:
    """Put admin/ on ``root`` (e.g. the app's ``api_root(...)``) or a new one."""
    root = root if root is not None else Resource()
    root.putChild(b"admin", AdminResource(gate, actions))
    return root
