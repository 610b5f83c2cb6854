"""rehearsal.web.webtransport: the certificate Chromium takes by hash, single-use offers, fragments (reassembled by
datagram_link.js), and in real Chromium against the real server: an assistant's page moves its snapshots and inputs
to datagrams (its instrument follows inputs sent that way), falls back to the WebSocket when the session cannot
open, or when asked to; an observer is offered none."""

from __future__ import annotations

import datetime
import hashlib
import re
import socket
import types

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rehearsal.bots import ServerProcess
from rehearsal.web import webtransport
from rehearsal.web.participant_bench import SERVER_SCRIPT, WEBTRANSPORT_LISTENING
from rehearsal.web.webtransport import (
    FRAGMENT_BYTES,
    MAX_FRAGMENTS,
    DatagramSession,
    SelfSignedCertificate,
    WebTransportEndpoint,
)
from tests.rehearsal.e2e_helpers import new_session

WAIT_MS = 30_000


def test_the_certificate_is_ecdsa_p256_valid_at_most_14_days_and_hashed_as_der():
    cert = SelfSignedCertificate()
    key = cert.certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    valid = cert.certificate.not_valid_after_utc - cert.certificate.not_valid_before_utc
    assert valid <= datetime.timedelta(days=14)
    assert cert.certificate.not_valid_before_utc <= datetime.datetime.now(datetime.UTC)
    der = cert.certificate.public_bytes(serialization.Encoding.DER)
    assert cert.sha256 == hashlib.sha256(der).hexdigest()
    with pytest.raises(ValueError, match="14 days"):
        SelfSignedCertificate(days=15)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_certificate_is_renewed_a_day_before_it_expires():
    wall = [1e9]
    endpoint = WebTransportEndpoint(reactor=None, wall_clock=lambda: wall[0])
    endpoint.certificate.renew_at = wall[0] + 10
    first = endpoint.offer(object())["cert_sha256"]
    wall[0] += 11
    second = endpoint.offer(object())["cert_sha256"]
    assert first != second == endpoint.certificate.sha256
    assert endpoint.configuration.certificate is endpoint.certificate.certificate
    cert = SelfSignedCertificate(days=10)
    expires = cert.certificate.not_valid_after_utc.timestamp()
    assert expires - 86400 - 700 <= cert.renew_at <= expires - 86400 + 700


def test_an_offer_opens_once_and_expires(monkeypatch):
    clock = _Clock()
    endpoint = WebTransportEndpoint(reactor=None, clock=clock)
    endpoint.port = 4433
    target = object()
    offer = endpoint.offer(target)
    assert offer["port"] == 4433 and offer["cert_sha256"] == endpoint.certificate.sha256
    assert re.fullmatch(r"/wt/[0-9a-f]{32}", offer["path"])
    assert endpoint.take_offer("/other") is None and endpoint.take_offer("/wt/" + "0" * 32) is None
    assert endpoint.take_offer(offer["path"]) is target
    assert endpoint.take_offer(offer["path"]) is None  # single use
    late = endpoint.offer(target)
    clock.now += webtransport.TOKEN_SECONDS + 1
    assert endpoint.take_offer(late["path"]) is None  # expired
    monkeypatch.setattr(webtransport, "MAX_OFFERS", 4)
    for _ in range(10):
        endpoint.offer(target)
    assert len(endpoint.offers) <= 4  # bounded: the oldest go first


class _H3:
    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def send_datagram(self, stream_id: int, data: bytes) -> None:
        self.sent.append((stream_id, data))


class _Conn:
    def __init__(self) -> None:
        self.h3 = _H3()
        self.quic = types.SimpleNamespace(_datagrams_pending=[])  # aioquic's queue of datagrams not yet sent
        self.endpoint = WebTransportEndpoint(reactor=None)


class _Target:
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def attach_datagrams(self, session) -> None: ...

    def on_datagram_message(self, payload: bytes) -> None:
        self.got.append(payload)

    def datagrams_closed(self, session) -> None: ...


def fragments_of(data: bytes) -> list[bytes]:
    conn = _Conn()
    session = DatagramSession(conn, 0, _Target())  # type: ignore[arg-type]
    assert session.send(data)
    return [d for _, d in conn.h3.sent]


def test_small_messages_go_whole_large_ones_in_fragments_too_large_ones_not_at_all():
    assert fragments_of(b"abc") == [b"\x00abc"]
    parts = fragments_of(bytes(range(256)) * 10)  # 2560 bytes: 3 parts
    assert [p[:5] for p in parts] == [b"\x01\x00\x01\x00\x03", b"\x01\x00\x01\x01\x03", b"\x01\x00\x01\x02\x03"]
    assert b"".join(p[5:] for p in parts) == bytes(range(256)) * 10
    assert all(len(p) <= FRAGMENT_BYTES + 5 for p in parts)
    conn = _Conn()
    session = DatagramSession(conn, 0, _Target())  # type: ignore[arg-type]
    assert not session.send(b"x" * (FRAGMENT_BYTES * MAX_FRAGMENTS + 1))  # the link sends it on its WebSocket
    assert conn.h3.sent == []


def test_datagrams_waiting_for_the_congestion_window_are_bounded():
    conn = _Conn()
    session = DatagramSession(conn, 0, _Target())  # type: ignore[arg-type]
    conn.quic._datagrams_pending.extend([b"x"] * (webtransport.MAX_PENDING_DATAGRAMS + 1))
    assert session.send(b"snapshot")  # taken, and lost as on a congested path: no WebSocket fallback for it
    assert conn.h3.sent == [] and conn.endpoint.counters["webtransport_send_dropped"] == 1


def test_a_pages_datagram_reaches_the_link_and_a_malformed_one_is_counted():
    conn = _Conn()
    target = _Target()
    session = DatagramSession(conn, 0, target)  # type: ignore[arg-type]
    session._received(b"\x00hello")
    session._received(b"\x01\x00\x01\x00\x02xx")  # pages send whole messages only
    session._received(b"")
    assert target.got == [b"hello", b"", b""]  # an empty payload: a malformed frame to the link
    assert conn.endpoint.counters["webtransport_bad_datagrams"] == 2


def test_the_pages_reassembler_rebuilds_the_servers_fragments(page, static_server):
    parts = fragments_of(bytes(range(256)) * 10)
    page.goto(static_server + "/")
    result = page.evaluate(
        """async (parts) => {
          const { Reassembler } = await import('/static/js/datagram_link.js');
          const r = new Reassembler(2);
          const bytes = parts.map((p) => new Uint8Array(p));
          const out = [r.push(bytes[2]), r.push(bytes[0]), r.push(bytes[0]), r.push(bytes[1])];
          const whole = out[3];
          const lost = [r.push(Uint8Array.of(1, 0, 7, 0, 2, 9)), r.push(Uint8Array.of(1, 0, 8, 0, 2, 9)),
                        r.push(Uint8Array.of(1, 0, 9, 0, 2, 9))];
          let threw = 0;
          for (const bad of [Uint8Array.of(), Uint8Array.of(7, 1), Uint8Array.of(1, 0, 1, 3, 2, 0)]) {
            try { r.push(bad); } catch (err) { threw += 1; }
          }
          return { pending: out.slice(0, 3).map((x) => x === null), whole: Array.from(whole), lost, dropped: r.dropped,
                   partial: r.partial.size, threw, small: Array.from(r.push(Uint8Array.of(0, 5, 6))) };
        }""",
        [list(p) for p in parts],
    )
    assert result["pending"] == [True, True, True]  # a duplicate part changes nothing
    assert bytes(result["whole"]) == bytes(range(256)) * 10
    assert result["lost"] == [None, None, None] and result["dropped"] == 1 and result["partial"] == 2  # bounded
    assert result["threw"] == 3 and result["small"] == [5, 6]


@pytest.fixture(scope="module")
def wt_server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("webtransport") / "data", script=SERVER_SCRIPT)
    try:
        proc.wait_listening()
        proc.wt_port = int(proc.wait_for(WEBTRANSPORT_LISTENING, 30.0).group(1))
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, proc.log()[-4000:]


def open_page(page, server: ServerProcess, code: str, extra: str = "") -> None:
    page.goto(f"http://127.0.0.1:{server.http_port}/?code={code}&name=Wes{extra}")
    page.wait_for_function("() => window.rehearsal && window.rehearsal.state.snapshots > 3", timeout=WAIT_MS)


def test_an_assistants_page_moves_snapshots_and_inputs_to_datagrams(page, wt_server):
    session = new_session(wt_server)
    open_page(page, wt_server, session["invites"]["assistant_surgeon"])
    page.wait_for_function("() => window.rehearsal.link.transportName === 'webtransport'", timeout=WAIT_MS)
    assert page.evaluate("() => window.rehearsal.link.joined.webtransport.port") == wt_server.wt_port
    before = page.evaluate("() => window.rehearsal.state.snapshots")
    page.wait_for_function(
        f"() => window.rehearsal.state.snapshots > {before + 30} && window.rehearsal.link.datagrams.datagramsIn > 30"
        " && window.rehearsal.link.datagrams.datagramsOut > 10",
        timeout=WAIT_MS,
    )
    hand = page.evaluate("() => window.rehearsal.state.hands.right")
    page.locator("#view canvas").focus()
    page.keyboard.down("KeyA")  # move left: inputs now leave as datagrams only
    try:
        page.wait_for_function(
            f"() => {{ const e = window.rehearsal.decoder.rigid().get({hand}); return e && e.position[0] < -0.005; }}",
            timeout=WAIT_MS,
        )  # the server applied them: its snapshots show the instrument where our inputs took it
    finally:
        page.keyboard.up("KeyA")
    assert page.evaluate("() => window.rehearsal.link.transportName") == "webtransport"
    assert "webtransport datagrams attached" in wt_server.log()
    assert not page.evaluate("() => window.rehearsal.state.refusals.map((r) => r.reason)")
    assert not [e for e in page.js_errors if "pageerror" in e], page.js_errors


def test_the_page_falls_back_to_the_websocket_when_the_session_cannot_open(page, wt_server):
    session = new_session(wt_server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        nobody = s.getsockname()[1]
    open_page(page, wt_server, session["invites"]["lead_surgeon"], f"&wt_port={nobody}")
    page.wait_for_function("() => window.rehearsal.link.datagrams === null", timeout=WAIT_MS)
    before = page.evaluate("() => window.rehearsal.state.snapshots")
    page.wait_for_function(f"() => window.rehearsal.state.snapshots > {before + 30}", timeout=WAIT_MS)
    assert page.evaluate("() => window.rehearsal.link.transportName") == "websocket"
    assert not [e for e in page.js_errors if "unhandled" in e or "pageerror" in e], page.js_errors


def test_asked_for_the_websocket_and_as_an_observer_the_page_stays_on_it(page, wt_server):
    session = new_session(wt_server)
    open_page(page, wt_server, session["invites"]["scrub_nurse"], "&transport=websocket")
    assert page.evaluate("() => Boolean(window.rehearsal.link.joined.webtransport)")  # offered, not taken
    page.wait_for_timeout(1000)
    assert page.evaluate("() => [window.rehearsal.link.transportName, window.rehearsal.link.datagrams]") == [
        "websocket",
        None,
    ]
    other = page.context.new_page()
    try:
        open_page(other, wt_server, session["invites"]["observer"])
        assert other.evaluate("() => window.rehearsal.link.joined.webtransport") is None
        assert other.evaluate("() => window.rehearsal.link.transportName") == "websocket"
    finally:
        other.close()
