"""ops.http: /metrics, /healthz (heartbeat on a fake Clock) and /readyz via DummyRequest."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from ops.http import Heartbeat, ops_root, ops_site
from ops.metrics import OpsMetrics


def get(root: Resource, path: bytes) -> tuple[int, bytes, DummyRequest]:
    request = DummyRequest(path.strip(b"/").split(b"/"))
    request.method = b"GET"
    resource = getChildForRequest(root, request)
    body = resource.render(request)
    return request.responseCode or 200, body, request


def make(ready=lambda: True, status=None):
    clock = Clock()
    heartbeat = Heartbeat(clock).start()
    metrics = OpsMetrics(status=status or (lambda: {"rooms": {"running": 2}}))
    return clock, heartbeat, metrics, ops_root(metrics, heartbeat, ready)


def test_metrics_endpoint_serves_prometheus_text():
    _, _, metrics, root = make()
    metrics.histograms.tick.observe(0.005)
    code, body, request = get(root, b"/metrics")
    assert code == 200
    assert request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert fams["rehearsal_rooms"].samples[0].value == 2
    assert fams["rehearsal_tick_duration_seconds"].type == "histogram"


def test_healthz_ok_then_stale():
    clock, _, _, root = make()
    for _ in range(10):  # the reactor turns: the loop keeps stamping
        clock.advance(0.5)
    code, body, _ = get(root, b"/healthz")
    assert (code, body) == (200, b"ok\n")
    # The reactor is stuck: time passes but no scheduled call (the LoopingCall) runs.
    clock.rightNow += 2.5
    code, body, _ = get(root, b"/healthz")
    assert code == 503
    assert body.startswith(b"stale")
    clock.advance(0.5)  # it turns again
    assert get(root, b"/healthz")[0] == 200


def test_healthz_503_when_heartbeat_stopped():
    _, heartbeat, _, root = make()
    heartbeat.stop()
    assert get(root, b"/healthz")[0] == 503


def test_readyz_flips_with_the_callable():
    state: dict[str, object] = {"ready": True}
    _, _, _, root = make(ready=lambda: state["ready"])
    assert get(root, b"/readyz")[:2] == (200, b"ready\n")
    state["ready"] = "draining"
    assert get(root, b"/readyz")[:2] == (503, b"draining\n")
    state["ready"] = "overloaded"
    assert get(root, b"/readyz")[:2] == (503, b"overloaded\n")
    state["ready"] = False
    assert get(root, b"/readyz")[:2] == (503, b"not ready\n")
    state["ready"] = True
    assert get(root, b"/readyz")[0] == 200


def test_readyz_503_when_the_check_raises():
    def boom():
        raise RuntimeError

    _, _, _, root = make(ready=boom)
    assert get(root, b"/readyz")[0] == 503


def test_mounts_next_to_an_existing_api_tree():
    api_root = Resource()
    api = Resource()
    api_root.putChild(b"api", api)
    clock = Clock()
    metrics = OpsMetrics()
    root = ops_root(metrics, Heartbeat(clock).start(), lambda: True, root=api_root)
    assert root is api_root
    assert set(root.children) == {b"api", b"metrics", b"healthz", b"readyz"}
    site = ops_site(metrics, Heartbeat(clock).start(), lambda: True)
    assert isinstance(site, Site)
    assert set(site.resource.children) == {b"metrics", b"healthz", b"readyz"}


def _raw_http(site: Site, data: bytes) -> bytes:
    """Feed raw bytes to one HTTP connection of ``site``; what it wrote back."""
    from twisted.internet.testing import StringTransport

    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    return transport.value()


class _Echo(Resource):
    isLeaf = True  # noqa: N815 (twisted's name)
    rendered = 0

    def render_POST(self, request):  # noqa: N802
        _Echo.rendered += 1
        return b"len=%d" % len(request.content.read())


def _bounded_site() -> Site:
    clock = Clock()
    root = Resource()
    root.putChild(b"echo", _Echo())
    return ops_site(OpsMetrics(status=None), Heartbeat(clock).start(), lambda: True, root=root)


def test_a_body_over_the_limit_is_refused_413_from_its_content_length_before_it_is_read():
    from ops.http import MAX_BODY_BYTES

    _Echo.rendered = 0
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (100 * MAX_BODY_BYTES)
    out = _raw_http(_bounded_site(), head + b"x" * 1000)
    assert out.startswith(b"HTTP/1.1 413") and _Echo.rendered == 0


def test_a_chunked_body_over_the_limit_is_refused_413_and_a_small_one_is_served():
    from ops.http import MAX_BODY_BYTES

    _Echo.rendered = 0
    chunk = b"%x\r\n%s\r\n" % (MAX_BODY_BYTES // 2, b"y" * (MAX_BODY_BYTES // 2))
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    out = _raw_http(_bounded_site(), head + chunk * 3 + b"0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413") and _Echo.rendered == 0
    out = _raw_http(_bounded_site(), b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"len=5") and _Echo.rendered == 1


def test_healthz_503_with_the_apps_reason_while_the_reactor_turns():
    clock = Clock()
    heartbeat = Heartbeat(clock).start()
    state: dict[str, object] = {"healthy": True}
    root = ops_root(OpsMetrics(status=None), heartbeat, lambda: True, healthy=lambda: state["healthy"])
    assert get(root, b"/healthz")[:2] == (200, b"ok\n")
    state["healthy"] = "room room-1 thread stuck in a step for 9 s"
    assert get(root, b"/healthz")[:2] == (503, b"room room-1 thread stuck in a step for 9 s\n")
