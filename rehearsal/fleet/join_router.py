"""The fleet's join service: stateless, in front of every game-server process; several may run.

The same API as one server's (``rehearsal.http_api``), answered by the right process:

    POST /api/sessions  (admin)  a slot is reserved on the least-loaded process that offers the scenario
                                 (``Directory.place``, atomic), the request goes to that process, and the new
                                 session is confirmed in the directory (its route)
    POST /api/join, /api/rejoin  the code's keyed hash names its session (``code:<digest>``), the session names its
                                 process (``room:<S>``): the request goes there, and its ticket (a connect token
                                 for that process's address) comes back
    GET  /api/fleet     (admin)  the processes as the directory sees them
    GET  /healthz                ``ok``

Answers: a room whose process stopped beating is being placed again (``failover``): 503 with ``retry_after``
(the client retries with the same code). A Redis that is down: placement and routing wait for it up to
``WAIT_SECONDS``, then 503; nothing is spent. No process can take the scenario: 503. Every Redis and HTTP call
runs in the reactor's thread pool (``deferToThread``), never on the reactor. The admin credential is the
fleet's (compared in constant time); the process checks it again.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import threads
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from rehearsal.fleet.directory import CodeRoute, Directory, DirectoryBusyError, Placement
from rehearsal.invites import MAX_CODE_CHARS, REFUSED

log = logging.getLogger("rehearsal.fleet.join_router")

MAX_BODY_BYTES = 4096
WAIT_SECONDS = 10.0  # how long a request waits for Redis to come back before 503
RETRY_SECONDS = 0.1
FORWARD_TIMEOUT_SECONDS = 10.0
MAX_PLACEMENT_TRIES = 3  # processes tried for one new session (one that refuses is skipped)
REJOIN_ROUTE_SECONDS = 24 * 3600  # a rejoin code's life (InviteBook.issue's default); the heartbeat has the exact one
MOVING = "the room is moving to another process: retry in a moment with the same code"


@dataclass(frozen=True)
class Answer:
    status: int
    payload: dict[str, Any]


class JoinRouter:
    """The blocking side of the join service (tests call it directly; ``site`` serves it over HTTP)."""

    def __init__(
        self,
        directory: Directory,
        code_key: bytes,
        admin_credential: str,
        *,
        wait_seconds: float = WAIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self._code_key = code_key
        self._credential = admin_credential
        self.wait_seconds = wait_seconds
        self.clock = clock
        self.counters: Counter[str] = Counter()

    def __repr__(self) -> str:  # never show the keys
        return f"JoinRouter({self.directory!r})"

    def admin_ok(self, authorization: str | None) -> bool:
        given = (authorization or "").removeprefix("Bearer ").strip()
        return bool(given) and hmac.compare_digest(given.encode(), self._credential.encode())

    def patiently(self, call: Callable[[], Any]) -> Any:
        """``call()`` again while Redis is down or busy, up to ``wait_seconds``; then the last error."""
        deadline = self.clock() + self.wait_seconds
        while True:
            try:
                return call()
            except Exception as exc:  # only the directory's errors are waited out
                if not _directory_error(exc) or self.clock() >= deadline:
                    raise
                self.counters["directory_retries"] += 1
                time.sleep(RETRY_SECONDS)

    # --- sessions ----------------------------------------------------------------------------------------

    def create_session(self, body: dict[str, Any], authorization: str | None) -> Answer:
        if not self.admin_ok(authorization):
            self.counters["unauthorized"] += 1
            return Answer(401, {"error": "unauthorized"})
        scenario = body.get("scenario")
        if not isinstance(scenario, str) or not scenario:
            return Answer(400, {"error": 'give {"scenario": "<name>"}'})
        tried: list[str] = []
        for _ in range(MAX_PLACEMENT_TRIES):
            try:
                placement = self.place(scenario, tried)
            except Exception as exc:
                return self._unavailable(exc)
            if placement is None:
                self.counters["no_capacity"] += 1
                return Answer(503, {"error": f"no process can take a room of {scenario!r} now: try again later"})
            answer = self._forward(placement.http, "/api/sessions", body, authorization)
            if answer.status == 201 and isinstance(answer.payload.get("session"), str):
                self._confirm(placement, answer.payload["session"], scenario)
                invites = answer.payload.get("invites")
                expires = answer.payload.get("invite_expires_in", 24 * 3600)
                if isinstance(invites, dict) and isinstance(expires, int | float):
                    self._publish(
                        answer.payload["session"], [c for c in invites.values() if isinstance(c, str)], expires
                    )
                self.counters["placed"] += 1
                answer.payload["process"] = placement.process
                return answer
            self._cancel(placement)
            if answer.status in (400, 401, 429):  # the request's fault, not the process's
                return answer
            tried.append(placement.process)
        return Answer(503, {"error": "no process took the session: try again later"})

    def place(self, scenario: str, exclude: list[str]) -> Placement | None:
        """A slot for a new room, waiting out a Redis that is down, and one that came back empty (restarted):
        while no process at all is registered the heartbeats have not refilled it yet, so placement waits for them
        (up to ``wait_seconds``) instead of answering that nobody can take the room."""
        deadline = self.clock() + self.wait_seconds
        while True:
            placement = self.patiently(lambda: self.directory.place(scenario, exclude=exclude))
            if placement is not None or self.clock() >= deadline:
                return placement
            if any(c.alive for c in self.patiently(self.directory.candidates)):
                return None  # processes are there: they are full, draining, or do not offer it
            self.counters["waited_for_heartbeats"] += 1
            time.sleep(RETRY_SECONDS)

    def _confirm(self, placement: Placement, session: str, scenario: str) -> None:
        try:
            self.patiently(lambda: self.directory.confirm(placement, session, scenario))
        except Exception as exc:  # its process's next beat registers the room all the same
            log.warning("fleet: could not confirm %s on %s (%s)", session, placement.process, type(exc).__name__)

    def _cancel(self, placement: Placement) -> None:
        try:
            self.directory.cancel(placement)
        except Exception:  # the reservation expires by itself
            self.counters["cancel_failed"] += 1

    # --- joining -----------------------------------------------------------------------------------------

    def join(self, path: str, body: dict[str, Any]) -> Answer:
        """``/api/join`` (``invite``) or ``/api/rejoin`` (``rejoin_code``): forwarded to the room's process."""
        code = body.get("invite" if path == "/api/join" else "rejoin_code")
        if not isinstance(code, str) or not code or len(code) > MAX_CODE_CHARS:
            return Answer(403, {"error": REFUSED})
        digest = self.digest(code)
        try:
            session = self.patiently(lambda: self.directory.code_session(digest))
            route = self.patiently(lambda: self.directory.route(session)) if session else None
        except Exception as exc:
            return self._unavailable(exc)
        if session is None:
            self.counters["refused"] += 1
            return Answer(403, {"error": REFUSED})
        if route is None:
            return Answer(403, {"error": "this session has ended"})
        if not route.alive or route.moving:  # dead, or its new process has not resumed it yet
            self.counters["moving"] += 1
            return Answer(503, {"error": MOVING, "retry_after": 0.5})
        answer = self._forward(route.http, path, body, None)
        if answer.status in (502, 504):  # it died between the route and the call: its rooms move
            return Answer(503, {"error": MOVING, "retry_after": 0.5})
        self.counters["routed"] += 1
        rejoin = answer.payload.get("rejoin_code") if answer.status == 200 else None
        if path == "/api/join" and isinstance(rejoin, str) and rejoin:
            self._publish(session, [rejoin], REJOIN_ROUTE_SECONDS)
        return answer

    def _publish(self, session: str, codes: list[str], seconds: float) -> None:
        """Routes for codes the process just issued, before the reply goes out, so a client that uses one at once
        finds it (the process's heartbeat publishes them too, with their exact expiry, within a beat)."""
        until = time.time() + float(seconds)
        routes = [CodeRoute(self.digest(code), session, until) for code in codes if len(code) <= MAX_CODE_CHARS]
        try:
            self.directory.publish_codes(routes)
        except Exception as exc:  # the heartbeat's copy arrives anyway
            self.counters["publish_failed"] += 1
            log.warning("fleet: could not publish %d code routes (%s)", len(routes), type(exc).__name__)

    def digest(self, code: str) -> bytes:
        """A code's keyed hash, as every process of the fleet computes it (``InviteBook.digest``)."""
        return hmac.new(self._code_key, code.encode("utf-8", "replace"), "sha256").digest()

    def fleet(self, authorization: str | None) -> Answer:
        if not self.admin_ok(authorization):
            return Answer(401, {"error": "unauthorized"})
        try:
            return Answer(200, {"processes": self.patiently(self.directory.status)})
        except Exception as exc:
            return self._unavailable(exc)

    # --- plumbing ----------------------------------------------------------------------------------------

    def _unavailable(self, exc: Exception) -> Answer:
        self.counters["directory_unavailable"] += 1
        log.warning("fleet: the directory is unavailable: %s", type(exc).__name__)
        return Answer(503, {"error": "the room directory is unavailable: try again in a moment", "retry_after": 1})

    def _forward(self, base: str, path: str, body: dict[str, Any], authorization: str | None) -> Answer:
        headers = {"Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=FORWARD_TIMEOUT_SECONDS) as response:
                return Answer(response.status, _json(response.read(1 << 16)))
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, _json(exc.read(1 << 16)))
        except (OSError, ValueError) as exc:
            self.counters["forward_failed"] += 1
            log.warning("fleet: %s%s did not answer: %s", base, path, type(exc).__name__)
            return Answer(502, {"error": "the room's process did not answer"})


def _directory_error(exc: BaseException) -> bool:
    import redis

    return isinstance(exc, redis.RedisError | DirectoryBusyError | ConnectionError | TimeoutError)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {"error": "the process answered something that is not JSON"}
    return value if isinstance(value, dict) else {}


def _body(request: Request) -> dict[str, Any] | None:
    raw = request.content.read(MAX_BODY_BYTES + 1) if request.content is not None else b""
    if len(raw) > MAX_BODY_BYTES:
        return None
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


class _Endpoint(Resource):
    isLeaf = True  # noqa: N815 (twisted's name)

    def __init__(self, router: JoinRouter, path: str) -> None:
        super().__init__()
        self.router = router
        self.path = path

    def _answer(self, request: Request, work: Callable[[], Answer]) -> Any:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))  # the client went away meanwhile

        def done(answer: Answer) -> None:
            if gone or request.finished:
                return
            request.setResponseCode(answer.status)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            request.write(json.dumps(answer.payload).encode())
            request.finish()

        def failed(failure: Any) -> None:
            log.error("fleet: %s failed: %s", self.path, failure.getErrorMessage())
            done(Answer(500, {"error": "internal error"}))

        threads.deferToThread(work).addCallbacks(done, failed)
        return NOT_DONE_YET

    def render_POST(self, request: Request) -> Any:  # noqa: N802 (twisted's name)
        body = _body(request)
        if body is None:
            request.setResponseCode(400)
            return b'{"error": "the body must be a JSON object of at most 4096 bytes"}'
        auth = request.getHeader(b"authorization")
        auth_text = auth.decode("latin-1") if auth else None
        if self.path == "/api/sessions":
            return self._answer(request, lambda: self.router.create_session(body, auth_text))
        return self._answer(request, lambda: self.router.join(self.path, body))

    def render_GET(self, request: Request) -> Any:  # noqa: N802
        if self.path == "/healthz":
            return b"ok"
        if self.path == "/api/fleet":
            auth = request.getHeader(b"authorization")
            return self._answer(request, lambda: self.router.fleet(auth.decode("latin-1") if auth else None))
        request.setResponseCode(405)
        return b""


def join_site_root(router: JoinRouter) -> Resource:
    """The resource tree of the fleet's join service (mount on a twisted.web Site)."""
    root = Resource()
    api = Resource()
    root.putChild(b"api", api)
    for name in ("sessions", "join", "rejoin", "fleet"):
        api.putChild(name.encode(), _Endpoint(router, f"/api/{name}"))
    root.putChild(b"healthz", _Endpoint(router, "/healthz"))
    return root
