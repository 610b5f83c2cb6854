"""The /ws endpoint on its own (rehearsal.web.websocket), against a recording stand-in for the server's connections:
the join, one message per binary frame both ways, and bad input (codes, frames, sizes) answered and contained."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from netcode.messaging.messages import Message
from rehearsal.web import websocket
from rehearsal.web.tls import TlsError, server_tls_options
from tests.rehearsal.web.ws_client import OP_BINARY, OP_TEXT, ClosedError, WsClient, is_message

ROOT = Path(__file__).resolve().parents[3]


class EndpointServer:
    def __init__(self, *tls_files: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("endpoint_server.py")), "120", *map(str, tls_files)],
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.calls: list[list] = []
        threading.Thread(target=self._read, daemon=True).start()
        first = self.lines.get(timeout=30)
        _, port, observer, mentor = first.split()
        self.port, self.observer, self.mentor = int(port), observer, mentor

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_call(self, kind: str, seconds: float = 10.0) -> list:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line.startswith("["):
                call = json.loads(line)
                self.calls.append(call)
                if call[0] == kind:
                    return call
        raise TimeoutError(f"no {kind} call; calls so far {self.calls}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server():
    s = EndpointServer()
    try:
        yield s
    finally:
        s.stop()


def test_join_then_one_message_per_binary_frame_both_ways(server):
    client = WsClient(server.port)
    try:
        joined = client.join(server.observer, "Ada")
        assert joined["role"] == "observer" and joined["name"] == "Ada" and joined["session"] == "s-test"
        assert joined["rejoin_code"]
        opened = server.wait_call("open")
        assert opened[2:] == ["websocket", "observer", "Ada"]
        assert client.until(is_message("event", kind="hello"))
        client.send_message("ping", {"time": 1.5})
        assert client.until(is_message("pong", time=1.5)).fields["time"] == 1.5
        assert server.wait_call("receive")[2] == "ping"
        client.send_message("disconnect", {"reason": "bye"})  # the stand-in closes the link: code 4000
        client.messages_until_closed()
        assert client.closed.code == websocket.CLOSE_SERVER and "asked to" in client.closed.reason
        assert server.wait_call("closed")[1] == opened[1]
    finally:
        client.close()


def test_the_rejoin_code_comes_back_as_the_same_participant(server):
    first = WsClient(server.port)
    joined = first.join(server.mentor, "Grace")
    first.close()
    again = WsClient(server.port)
    try:
        again.send_text({"rejoin": {"rejoin_code": joined["rejoin_code"]}})
        back = again.until(lambda f: isinstance(f, dict))["joined"]
        assert (back["participant"], back["role"], back["name"]) == (joined["participant"], "mentor", "Grace")
    finally:
        again.close()


@pytest.mark.parametrize(
    ("join", "says"),
    [
        ({"join": {"invite": "not-a-code", "name": "Eve"}}, "invite"),
        ({"join": {"invite": None, "name": "Eve"}}, "invite"),
        ({"rejoin": {"rejoin_code": "forged"}}, "code"),
        ({"hello": 1}, "the join is"),
        ("not json at all", "the join is"),
    ],
)
def test_a_bad_join_is_refused_with_a_reason_and_closed(server, join, says):
    client = WsClient(server.port)
    try:
        client.send_text(join)
        frames = client.messages_until_closed()
        refused = [f for f in frames if isinstance(f, Message) and f.type == "refused"]
        assert refused and refused[0].fields["request"] == "connect"
        assert says in refused[0].fields["reason"].lower()
        assert client.closed.code == websocket.CLOSE_REFUSED
    finally:
        client.close()


def test_a_wrong_role_name_is_refused_before_using_the_invite(server):
    client = WsClient(server.port)
    try:
        client.send_text({"join": {"invite": server.observer, "name": "   "}})
        frames = client.messages_until_closed()
        assert any(isinstance(f, Message) and "name" in f.fields.get("reason", "") for f in frames)
    finally:
        client.close()


def test_a_binary_frame_before_the_join_is_refused(server):
    client = WsClient(server.port)
    try:
        client.send_frame(OP_BINARY, b"\x81\xa1t\xa4ping")
        client.messages_until_closed()
        assert client.closed.code == websocket.CLOSE_REFUSED
    finally:
        client.close()


def test_malformed_frames_are_answered_then_the_socket_closed_and_others_unaffected(server):
    bad, good = WsClient(server.port), WsClient(server.port)
    try:
        bad.join(server.observer, "Mallory")
        good.join(server.observer, "Bob")
        bad.send_frame(OP_BINARY, b"\xc1garbage")
        refused = bad.until(is_message("refused", request="message"))
        assert "malformed" in refused.fields["reason"]
        bad.send_frame(OP_TEXT, b'{"what": 1}')
        for _ in range(websocket.MAX_BAD_FRAMES + 1):
            bad.send_frame(OP_BINARY, b"\x00")
        bad.messages_until_closed()
        assert bad.closed.code == websocket.CLOSE_POLICY and "malformed" in bad.closed.reason
        good.send_message("ping", {"time": 2.0})
        assert good.until(is_message("pong", time=2.0))
    finally:
        bad.close()
        good.close()


def test_an_oversized_frame_closes_that_socket_only(server):
    big, good = WsClient(server.port), WsClient(server.port)
    try:
        big.join(server.observer, "Big")
        good.join(server.observer, "Bob")
        big.send_frame(OP_BINARY, b"x" * 1024, declared_length=websocket.MAX_FRAME_BYTES + 1)
        with pytest.raises(ClosedError) as closed:
            while True:
                big.recv_frame()
        assert closed.value.code in (1009, None)  # "message too big", or dropped before the close frame
        good.send_message("ping", {"time": 3.0})
        assert good.until(is_message("pong", time=3.0))
    finally:
        big.close()
        good.close()


def test_page_errors_are_taken_in_text_frames(server):
    client = WsClient(server.port)
    try:
        client.join(server.observer, "Ada")
        client.send_text({"page_error": "TypeError: x is undefined"})
        client.send_message("ping", {"time": 4.0})
        assert client.until(is_message("pong", time=4.0))  # still open: a page error is no bad frame
    finally:
        client.close()


def test_the_page_and_its_files_are_served_with_safe_headers(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/watch?code=abc", timeout=10) as answer:
        body = answer.read()
        assert b"<canvas" in body or b'id="view"' in body
        assert answer.headers["referrer-policy"] == "no-referrer"
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/static/js/app.js", timeout=10) as answer:
        assert answer.headers["content-type"].startswith("text/javascript")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/static/js/", timeout=10)
    assert missing.value.code == 404  # no directory listings


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for localhost (PEM files in ``directory``)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_with_a_certificate_the_page_and_the_link_speak_tls(tmp_path):
    tls = EndpointServer(*self_signed(tmp_path))
    try:
        client = WsClient(tls.port, tls=True)
        try:
            assert client.join(tls.observer, "Tess")["role"] == "observer"
            client.send_message("ping", {"time": 5.0})
            assert client.until(is_message("pong", time=5.0))
        finally:
            client.close()
        with pytest.raises(ConnectionError):  # plain HTTP on the TLS port gets no WebSocket
            WsClient(tls.port)
    finally:
        tls.stop()


def test_unusable_tls_files_are_named_in_the_error(tmp_path):
    cert, key = self_signed(tmp_path)
    with pytest.raises(TlsError, match=r"missing\.pem"):
        server_tls_options(tmp_path / "missing.pem", key)
    (tmp_path / "other").mkdir()
    _, other_key = self_signed(tmp_path / "other")
    with pytest.raises(TlsError, match="matching"):
        server_tls_options(cert, other_key)  # a key of another certificate


class _StubProtocol:
    """What a WebSocketLink uses of its socket: write_frame, close_with, state, the backpressure flag,
    counters and the endpoint (a real one: its ``framed`` frames once per bytes object)."""

    def __init__(self) -> None:
        self.backpressure = websocket._Backpressure()
        self.counters = websocket.WebCounters()
        self.endpoint = websocket.WatchEndpoint(None, None, None, next_key=lambda: 1 << 20)  # type: ignore[arg-type]
        self.state = websocket.WebSocketServerProtocol.STATE_OPEN
        self.sent: list[bytes] = []
        self.frames: list[object] = []
        self.closed: tuple[int, str] | None = None

    def write_frame(self, prepared) -> None:
        assert prepared.binary
        self.frames.append(prepared)
        self.sent.append(prepared.payload)

    def close_with(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def test_the_same_bytes_sent_to_many_links_are_framed_once_and_nothing_follows_a_close():
    from netcode.messaging.channels import Channel
    from rehearsal.identity import Identity
    from rehearsal.roles import Role

    stubs = [_StubProtocol() for _ in range(3)]
    endpoint = stubs[0].endpoint
    for stub in stubs:
        stub.endpoint = endpoint
    links = [
        websocket.WebSocketLink((1 << 20) + i, s, Identity("s", i, Role.OBSERVER, "o")) for i, s in enumerate(stubs)
    ]
    shared = b"\x83" + bytes(1000)  # one snapshot for the room's observers
    assert all(link.send(Channel.UNRELIABLE, shared) for link in links)
    frames = [stub.frames[-1] for stub in stubs]
    assert frames[0] is frames[1] is frames[2]  # one frame for all three
    hybi = frames[0].payloadHybi
    assert hybi[0] == 0x82 and hybi[1] == 126 and int.from_bytes(hybi[2:4], "big") == 1001 and hybi[4:] == shared
    other = b"\x83" + bytes(10)
    assert links[0].send(Channel.UNRELIABLE, other) and stubs[0].frames[-1].payload is other  # framed anew
    assert links[0].bytes_sent == len(shared) + len(other) and stubs[0].counters["frames_sent"] == 2
    stubs[1].state = websocket.WebSocketServerProtocol.STATE_CLOSING  # the page began the closing handshake
    assert not links[1].send(Channel.RELIABLE, shared) and len(stubs[1].frames) == 1


def test_a_slow_reader_loses_snapshots_then_is_closed_before_its_backlog_grows_unbounded():
    from netcode.messaging.channels import Channel
    from rehearsal.identity import Identity
    from rehearsal.roles import Role

    stub = _StubProtocol()
    link = websocket.WebSocketLink(1 << 20, stub, Identity("s", 7, Role.OBSERVER, "Slow"))
    assert link.send(Channel.UNRELIABLE, b"snapshot") and link.send(Channel.RELIABLE, Message("ping", {"time": 1.0}))
    stub.backpressure.pauseProducing()  # the socket's send buffer is full
    assert not link.send(Channel.UNRELIABLE, b"snapshot")  # dropped, as a lost datagram
    assert link.stats().drops == {"slow_reader": 1} and 0 < link.stats().packet_loss < 1
    chunk = b"x" * (256 * 1024)
    sent = 0
    while link.send(Channel.RELIABLE, chunk):
        sent += 1
        assert sent * len(chunk) <= websocket.MAX_PENDING_BYTES
    assert stub.closed is not None and stub.closed[0] == websocket.CLOSE_SERVER and "keep up" in stub.closed[1]
    assert not link.send(Channel.RELIABLE, b"after")  # closed: nothing more is queued
    assert stub.counters["closed_slow"] == 1
    assert len(stub.sent) == 2 + sent
