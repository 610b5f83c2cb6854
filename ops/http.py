"""twisted.web resources for /metrics, /healthz and /readyz, mountable next to the app's /api.

* ``/metrics``: the registry in the Prometheus text format (``text/plain; version=0.0.4``).
* ``/healthz``: 200 ``ok`` while the reactor turns. A ``Heartbeat`` (a ``LoopingCall`` every 0.5 s)
  stamps the time; if the stamp is older than 2 s the reactor is stuck and the answer is 503; so is it
  when the app's optional ``healthy()`` returns anything but ``True`` (e.g. a room's thread is stuck).
* ``/readyz``: 200 ``ready`` when ``ready()`` returns ``True``; otherwise 503 with the reason.
  ``ready()`` returns ``True``, ``False`` or a reason string such as ``"draining"`` / ``"overloaded"``
  (any value other than ``True`` means not ready).

Every request of an ``ops_site`` is a ``BoundedRequest``: a body over ``MAX_BODY_BYTES`` is answered 413 as
soon as its ``Content-Length`` is known (or, chunked, once that many bytes came), before any byte of it is
stored and before any resource (and its authentication) runs; smaller bodies stay in memory, never on disk.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ops.metrics import EXPOSITION_CONTENT_TYPE, OpsMetrics

__all__ = [
    "MAX_BODY_BYTES",
    "BoundedRequest",
    "HealthResource",
    "Heartbeat",
    "MetricsResource",
    "ReadyResource",
    "ops_root",
    "ops_site",
]

MAX_BODY_BYTES = 64 * 1024  # any request body of this server; the join API's own limit is far smaller
HEARTBEAT_INTERVAL = 0.5
STALE_AFTER = 2.0

ReadyCheck = Callable[[], "bool | str"]


def _text(request: Request, code: int, body: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return body.encode()


class BoundedRequest(Request):
    """A ``Request`` whose body is bounded before it is read (see the module doc)."""

    max_body = MAX_BODY_BYTES
    too_large = False
    _body_bytes = 0

    def gotLength(self, length: int | None) -> None:  # noqa: N802 (twisted's name)
        self._body_bytes = 0
        self.content = io.BytesIO()
        if length is not None and length > self.max_body:
            self._refuse_too_large()

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 (twisted's name)
        if self.too_large:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self.max_body:
            self._refuse_too_large()
            return
        self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        if not self.too_large:  # a refused request was answered already; its connection is closing
            super().requestReceived(command, path, version)

    def finish(self) -> None:
        if 400 <= self.code < 500:
            self._count_refusal(self.code)
        super().finish()

    def _count_refusal(self, code: int) -> None:
        refused = getattr(getattr(self.channel, "site", None), "refused", None)
        if refused is not None:
            with contextlib.suppress(Exception):  # counting must never break an answer
                refused(f"http_{code}")

    def _refuse_too_large(self) -> None:
        self.too_large = True
        self.content = io.BytesIO()
        body = b'{"error": "request body over %d bytes"}' % self.max_body
        head = (
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\ncache-control: no-store\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        self._count_refusal(413)
        transport = self.channel.transport if self.channel is not None else None
        if transport is not None:
            transport.write(head + body)
            transport.loseConnection()


class Heartbeat:
    """Stamps ``clock.seconds()`` every ``interval`` from inside the reactor."""

    def __init__(self, clock: IReactorTime, interval: float = HEARTBEAT_INTERVAL, stale_after: float = STALE_AFTER):
        self.clock = clock
        self.interval = interval
        self.stale_after = stale_after
        self.last = clock.seconds()
        self._loop = LoopingCall(self._beat)
        self._loop.clock = clock

    def _beat(self) -> None:
        self.last = self.clock.seconds()

    def start(self) -> Heartbeat:
        if not self._loop.running:
            self._loop.start(self.interval, now=True)
        return self

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def age(self) -> float:
        return self.clock.seconds() - self.last

    def alive(self) -> bool:
        return self._loop.running and self.age() <= self.stale_after


class MetricsResource(Resource):
    isLeaf = True  # noqa: N815 (twisted's name)

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:  # noqa: N802 (twisted's name)
        request.setHeader(b"content-type", EXPOSITION_CONTENT_TYPE.encode())
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self.registry)


class HealthResource(Resource):
    isLeaf = True  # noqa: N815 (twisted's name)

    def __init__(self, heartbeat: Heartbeat, healthy: ReadyCheck | None = None) -> None:
        super().__init__()
        self.heartbeat = heartbeat
        self.healthy = healthy

    def render_GET(self, request: Request) -> bytes:  # noqa: N802 (twisted's name)
        if not self.heartbeat._loop.running:
            return _text(request, 503, "heartbeat not running\n")
        if not self.heartbeat.alive():
            return _text(request, 503, f"stale: reactor last turned {self.heartbeat.age():.1f} s ago\n")
        try:
            result = True if self.healthy is None else self.healthy()
        except Exception:
            result = "health check failed"
        if result is not True:
            return _text(request, 503, f"{result if isinstance(result, str) and result else 'unhealthy'}\n")
        return _text(request, 200, "ok\n")


class ReadyResource(Resource):
    isLeaf = True  # noqa: N815 (twisted's name)

    def __init__(self, ready: ReadyCheck) -> None:
        super().__init__()
        self.ready = ready

    def render_GET(self, request: Request) -> bytes:  # noqa: N802 (twisted's name)
        try:
            result = self.ready()
        except Exception:
            result = "ready check failed"
        if result is True:
            return _text(request, 200, "ready\n")
        reason = result if isinstance(result, str) and result else "not ready"
        return _text(request, 503, f"{reason}\n")


def ops_root(
    metrics: OpsMetrics | CollectorRegistry,
    heartbeat: Heartbeat,
    ready: ReadyCheck,
    root: Resource | None = None,
    healthy: ReadyCheck | None = None,
) -> Resource:
    """Put metrics/, healthz/, readyz/ on ``root`` (e.g. the app's ``api_root(...)``) or a new one.
    ``healthy()`` (optional, like ``ready()``) adds the app's own liveness to the heartbeat's."""
    registry = metrics.registry if isinstance(metrics, OpsMetrics) else metrics
    root = root if root is not None else Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"healthz", HealthResource(heartbeat, healthy))
    root.putChild(b"readyz", ReadyResource(ready))
    return root


def ops_site(
    metrics: OpsMetrics | CollectorRegistry,
    heartbeat: Heartbeat,
    ready: ReadyCheck,
    root: Resource | None = None,
    healthy: ReadyCheck | None = None,
    refused: Callable[[str], None] | None = None,
) -> Site:
    """A quiet ``Site`` serving ``ops_root(...)``, every request a ``BoundedRequest``; ``refused(reason)`` is
    called for every 4xx answer (reason ``http_<code>``), so the app can count them."""
    site = Site(ops_root(metrics, heartbeat, ready, root, healthy), requestFactory=BoundedRequest)
    site.noisy = False
    site.refused = refused
    return site
