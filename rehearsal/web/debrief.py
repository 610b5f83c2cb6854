"""The debrief over HTTP: the page and, for a finished session, its debrief data (rehearsal.debrief).

    GET /debrief?session=ID     the debrief page (static/debrief.html; no credential needed); without an id
                                its list of finished sessions (from /admin/results)
    GET /debrief/api/ID         200 the debrief summary (JSON: timeline, series, pass/fail, track index)
    GET /debrief/api/ID/track   200 the 3D replay track (application/octet-stream, see rehearsal.debrief)

The data answers need either the session's debrief key (``Authorization: Debrief <key>``: read-only, this
session only, expiring; a mentor's page gets one when it joins and links the debrief with it, see
``rehearsal.web.debrief_access``) or the admin credential (``Authorization: Bearer <credential>``, the same
gate as ``/admin``; it opens any session's). A finished session's invite and rejoin codes are revoked when it
ends, so they open nothing here. Errors are JSON ``{"error": text}``: 400 a malformed id, 401/403/429 the
gate's (403 also a key not genuine, expired or for another session), 404 no finished session or no recording
kept, 422 a recording that cannot be replayed, 503 too many debriefs being built at once.

Each session is re-simulated once, in the reactor's thread pool (never on the reactor thread), and the
result kept in a cache bounded by count and bytes (least recently used goes first); requests for a debrief
being built wait for that one build.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from rehearsal.debrief import Debrief, build_debrief
from rehearsal.recording import RecordingError
from rehearsal.web.debrief_access import DebriefAccess, key_from_header
from rehearsal.web.site import STATIC_DIR

log = logging.getLogger("rehearsal.web.debrief")

PAGE = STATIC_DIR / "debrief.html"
SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_CACHED = 8
MAX_CACHED_BYTES = 256 * 1024 * 1024
MAX_BUILDING = 2


def secure_headers(request: Request) -> None:
    """As the page's (rehearsal.web.site): no referrer (an id in the URL stays here), no sniffing, no frames."""
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")


class DebriefCache:
    """Built debriefs by session, bounded by count and bytes (least recently used leaves first)."""

    def __init__(self, max_items: int = MAX_CACHED, max_bytes: int = MAX_CACHED_BYTES) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict[str, Debrief] = OrderedDict()
        self.bytes = 0

    def get(self, session: str) -> Debrief | None:
        found = self._items.get(session)
        if found is not None:
            self._items.move_to_end(session)
        return found

    def put(self, session: str, debrief: Debrief) -> None:
        if debrief.size > self.max_bytes:
            return  # larger than the whole cache: served once, rebuilt if asked again
        old = self._items.pop(session, None)
        if old is not None:
            self.bytes -= old.size
        self._items[session] = debrief
        self.bytes += debrief.size
        while len(self._items) > self.max_items or self.bytes > self.max_bytes:
            _, gone = self._items.popitem(last=False)
            self.bytes -= gone.size

    def __len__(self) -> int:
        return len(self._items)


class DebriefService:
    """Finds a finished session's result and recording, builds its debrief off the reactor thread, caches it.

    ``result(session)`` is the results store's lookup (called on the reactor thread, where the store lives);
    ``authorize(request)`` (the admin gate) returns None to let the request through or the HTTP status that
    refuses it; ``access`` checks debrief keys (None: only the admin credential opens debriefs)."""

    def __init__(
        self,
        reactor: Any,
        result: Callable[[str], dict[str, Any] | None],
        authorize: Callable[[Request], int | None],
        build: Callable[[Path, dict[str, Any]], Debrief] = build_debrief,
        cache: DebriefCache | None = None,
        access: DebriefAccess | None = None,
    ) -> None:
        self.reactor = reactor
        self.access = access
        self.result = result
        self.authorize = authorize
        self.build = build
        self.cache = cache if cache is not None else DebriefCache()
        self._building: dict[str, list[Deferred]] = {}
        self.counters = {"built": 0, "failed": 0, "served": 0, "keys_accepted": 0, "keys_refused": 0}

    def refusal(self, request: Request, session: str) -> tuple[int, str] | None:
        """None when the request may read ``session``'s debrief, else (status, sentence). A debrief key is
        checked against this session (never logged); anything else goes to the admin gate."""
        key = key_from_header(request.getHeader(b"authorization"))
        if key is not None:
            why = "debrief keys are not accepted here" if self.access is None else self.access.check(key, session)
            if why is None:
                self.counters["keys_accepted"] += 1
                return None
            self.counters["keys_refused"] += 1
            return 403, why
        denied = self.authorize(request)
        if denied is not None:
            return denied, "the debrief needs its debrief link (a mentor's) or the admin credential"
        return None

    def debrief(self, session: str) -> Deferred:
        """A Deferred firing with the session's Debrief, or failing with a DebriefError (status, text)."""
        cached = self.cache.get(session)
        if cached is not None:
            return _succeed(cached)
        waiting = self._building.get(session)
        if waiting is not None:
            d: Deferred = Deferred()
            waiting.append(d)
            return d
        stored = self.result(session)
        if stored is None:
            return _fail(DebriefError(404, f"no finished session {session!r} in the results store"))
        recording = stored.get("recording")
        if not recording or not Path(recording).is_file():
            return _fail(DebriefError(404, f"session {session!r} kept no recording (recording is off, or removed)"))
        if len(self._building) >= MAX_BUILDING:
            return _fail(DebriefError(503, "other debriefs are being built: try again in a minute"))
        self._building[session] = []
        pool = self.reactor.getThreadPool()
        d = deferToThreadPool(self.reactor, pool, self.build, Path(recording), stored)
        d.addBoth(self._built, session)
        return d

    def _built(self, outcome: Debrief | Failure, session: str) -> Debrief | Failure:
        waiting = self._building.pop(session, [])
        if isinstance(outcome, Failure):
            self.counters["failed"] += 1
            if outcome.check(RecordingError):
                outcome = Failure(DebriefError(422, f"the recording cannot be replayed: {outcome.value}"))
            else:
                log.error("debrief of %s failed: %s", session, outcome.getTraceback())
                outcome = Failure(DebriefError(500, "the debrief could not be built (see the server log)"))
        else:
            self.counters["built"] += 1
            self.cache.put(session, outcome)
        for d in waiting:
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)
        return outcome


class DebriefError(Exception):
    """Why a debrief cannot be served: an HTTP status and a sentence for the page."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _succeed(value: Any) -> Deferred:
    d: Deferred = Deferred()
    d.callback(value)
    return d


def _fail(error: Exception) -> Deferred:
    d: Deferred = Deferred()
    d.errback(Failure(error))
    return d


def _json(request: Request, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body).encode()


class DebriefApi(Resource):
    """``/debrief/api/ID`` and ``/debrief/api/ID/track`` (see the module docstring)."""

    isLeaf = True  # noqa: N815

    def __init__(self, service: DebriefService) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Request) -> bytes | int:  # noqa: N802
        secure_headers(request)
        path = [p.decode("utf-8", "replace") for p in request.postpath]
        if not (1 <= len(path) <= 2) or (len(path) == 2 and path[1] != "track"):
            return _json(request, 404, {"error": "use /debrief/api/SESSION or /debrief/api/SESSION/track"})
        session = path[0]
        if not SESSION_ID.match(session):
            return _json(request, 400, {"error": "a session id is 1-64 letters, digits, '.', '_' or '-'"})
        refused = self.service.refusal(request, session)
        if refused is not None:
            return _json(request, refused[0], {"error": refused[1]})
        want_track = len(path) == 2
        finished = {"done": False}

        def gone(_: object) -> None:
            finished["done"] = True

        request.notifyFinish().addBoth(gone)

        def reply(debrief: Debrief) -> None:
            if finished["done"]:
                return
            self.service.counters["served"] += 1
            if want_track:
                request.setHeader(b"content-type", b"application/octet-stream")
                request.setHeader(b"cache-control", b"no-store")
                request.write(debrief.track)
            else:
                request.write(_json(request, 200, debrief.summary))
            request.finish()

        def refuse(failure: Failure) -> None:
            if finished["done"]:
                return
            error = failure.value
            if isinstance(error, DebriefError):
                request.write(_json(request, error.status, {"error": error.text}))
            else:
                log.error("debrief reply failed: %s", failure.getTraceback())
                request.write(_json(request, 500, {"error": "internal error"}))
            request.finish()

        self.service.debrief(session).addCallbacks(reply, refuse)
        return NOT_DONE_YET


class DebriefPage(Resource):
    """``/debrief`` (any query): the page; its script asks ``/debrief/api`` with the credential."""

    def __init__(self, service: DebriefService) -> None:
        super().__init__()
        self.putChild(b"api", DebriefApi(service))

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802 (twisted's name)
        return self if path == b"" else super().getChild(path, request)

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        secure_headers(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return PAGE.read_bytes()


def mount_debrief(root: Resource, service: DebriefService) -> Resource:
    """Put ``/debrief`` (page and data) on ``root``; returns ``root``."""
    root.putChild(b"debrief", DebriefPage(service))
    return root
