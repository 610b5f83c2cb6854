"""The twisted.web resources of the browser side: the page at ``/`` and ``/watch``, its files, the WebSocket.

    GET /, /watch            the watch page and mentor console (``static/index.html``; ``?code=...`` fills the code)
    GET /static/...          its CSS and JavaScript (ES modules; three.js vendored under ``static/vendor``)
    GET /ws                  the live link (``rehearsal.web.websocket``)

Every answer says ``no-referrer`` (a URL with an invite code must not leak to other sites), ``nosniff`` and may
not be framed; directory listings are off.
"""

from __future__ import annotations

from pathlib import Path

from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.static import File

from rehearsal.web.websocket import WatchEndpoint

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX = STATIC_DIR / "index.html"


def _secure_headers(request: Request) -> None:
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")


class StaticFiles(File):
    """The page's files: JavaScript as ``text/javascript`` (module scripts need it), no directory listings."""

    contentTypes = {  # noqa: N815, RUF012 (twisted's class attribute)
        **File.contentTypes,
        ".js": "text/javascript; charset=utf-8",
        ".mjs": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".html": "text/html; charset=utf-8",
        ".png": "image/png",
    }

    def directoryListing(self) -> Resource:  # noqa: N802 (twisted's name)
        return self.childNotFound

    def render_GET(self, request: Request) -> bytes | int:  # noqa: N802
        _secure_headers(request)
        request.setHeader(b"cache-control", b"no-cache")  # revalidate: a new server version is seen at once
        return super().render_GET(request)


class PageResource(Resource):
    """``index.html`` for ``/`` and ``/watch`` (whatever the query string)."""

    isLeaf = True  # noqa: N815

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        _secure_headers(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return INDEX.read_bytes()


def mount_web(root: Resource, endpoint: WatchEndpoint) -> Resource:
    """Put the page, its files and the WebSocket on ``root`` (the server's HTTP site); returns ``root``."""
    page = PageResource()
    root.putChild(b"", page)
    root.putChild(b"watch", page)
    root.putChild(b"static", StaticFiles(str(STATIC_DIR)))
    root.putChild(b"ws", endpoint.resource())
    return root
