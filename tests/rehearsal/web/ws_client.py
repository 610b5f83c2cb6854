"""A minimal blocking WebSocket client for tests (RFC 6455 framing by hand, so tests can also send bad frames)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import ssl
import struct
import time
from typing import Any

from netcode.messaging.messages import Message
from rehearsal.wire import REHEARSAL_REGISTRY

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class ClosedError(Exception):
    """The server closed the socket: ``code`` and ``reason`` of its close frame (None if it just dropped)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code
        self.reason = reason


class WsClient:
    def __init__(self, port: int, path: str = "/ws", timeout: float = 10.0, tls: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:  # a test's self-signed certificate: encryption checked, not identity
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"handshake: connection closed after {head!r}")
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ", 2)[1])
        if self.status != 101:
            raise ConnectionError(f"handshake refused: {head.decode(errors='replace')}")
        self.closed: ClosedError | None = None

    # ------------------------------------------------------------------ frames

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True, declared_length: int | None = None) -> None:
        """One masked frame; ``declared_length`` lies about the length (for oversized-frame tests)."""
        n = len(payload) if declared_length is None else declared_length
        header = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_text(self, body: Any) -> None:
        self.send_frame(OP_TEXT, (body if isinstance(body, str) else json.dumps(body)).encode())

    def send_message(self, type_name: str, fields: dict[str, Any]) -> None:
        self.send_frame(OP_BINARY, REHEARSAL_REGISTRY.encode(Message(type_name, fields)))

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                self.closed = ClosedError(None, "connection dropped")
                raise self.closed
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv_frame(self) -> tuple[int, bytes]:
        """The next data frame (pings are answered, a close raises ``ClosedError``)."""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._read(8))
            payload = self._read(n)
            if opcode == OP_PING:
                self.send_frame(OP_PONG, payload)
                continue
            if opcode == OP_CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                self.closed = ClosedError(code, payload[2:].decode(errors="replace"))
                raise self.closed
            return opcode, payload

    def recv(self) -> Any:
        """The next frame: a dict for text (JSON), a Message for binary."""
        opcode, payload = self.recv_frame()
        if opcode == OP_TEXT:
            return json.loads(payload)
        return REHEARSAL_REGISTRY.decode(payload)

    def until(self, predicate, seconds: float = 10.0) -> Any:
        """Frames until one satisfies ``predicate`` (returned); raises TimeoutError or ``ClosedError``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                frame = self.recv()
            except TimeoutError:
                break
            if predicate(frame):
                return frame
        raise TimeoutError("no such frame in time")

    def messages_until_closed(self, seconds: float = 10.0) -> list[Any]:
        """Everything received until the server closes (the ``ClosedError`` is kept in ``self.closed``)."""
        out = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                out.append(self.recv())
            except ClosedError:
                return out
            except TimeoutError:
                break
        raise TimeoutError(f"not closed in {seconds} s; got {out}")

    def join(self, invite: str, name: str = "Test Watcher") -> dict:
        self.send_text({"join": {"invite": invite, "name": name}})
        frame = self.until(lambda f: (isinstance(f, dict) and "joined" in f) or isinstance(f, Message))
        if isinstance(frame, Message):
            raise AssertionError(f"join answered with {frame}")
        return frame["joined"]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def is_message(type_name: str, **fields: Any):
    """A predicate for ``until``: a Message of the type whose fields include ``fields``."""

    def check(frame: Any) -> bool:
        return (
            isinstance(frame, Message)
            and frame.type == type_name
            and all(frame.fields.get(k) == v for k, v in fields.items())
        )

    return check
