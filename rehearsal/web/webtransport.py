"""WebTransport datagrams for a joined page: its unreliable messages (snapshots, input acks, forces; from the page
its inputs and snapshot acks) over HTTP/3 datagrams, beside its WebSocket, which stays the join and reliable path.

Over TCP a lost segment holds back everything behind it (head-of-line blocking); a participant's snapshots and
inputs are better lost than late, as over the headsets' UDP. So after its join a participant's page is offered a
session: the ``joined`` answer carries ``webtransport`` = {port, path, cert_sha256} (``WebTransportEndpoint.offer``):
a single-use path (``/wt/<token>``, expiring in ``TOKEN_SECONDS``) that names its WebSocket link. The page opens
``https://<host>:<port><path>`` with ``serverCertificateHashes`` (the certificate is self-signed, ECDSA P-256, valid
``CERT_DAYS`` days, made at start: what Chromium accepts by hash), and the link sends its unreliable messages as
datagrams from then on; when the session closes (or never opens) they go over the WebSocket again. Observers are
not offered one: their shared stream assumes in-order delivery (``rehearsal.links.IN_ORDER``).

A datagram carries one message of ``rehearsal.wire.REHEARSAL_REGISTRY``, after a one-byte kind::

    0x00  message                    a whole message (both ways)
    0x01  u16 seq, u8 index, u8 count, part
                                     part ``index`` of ``count`` of a server message too large for one datagram
                                     (``FRAGMENT_BYTES`` each, at most ``MAX_FRAGMENTS``; lose one, lose it all)

A message too large even for that goes over the WebSocket. What a page sends this way reaches
``connections.receive`` like its WebSocket frames, through the same frame budget and bad-frame count.

QUIC is aioquic's sans-IO ``QuicConnection`` and ``H3Connection`` on a twisted UDP port (the reactor's thread, as
the rest of the server). Bounded: connections (``MAX_CONNECTIONS``), outstanding offers (``MAX_OFFERS``), one
session per connection, a connection without a session after ``SESSION_SECONDS`` is closed.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import struct
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DatagramReceived, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionIdIssued, ConnectionIdRetired, ConnectionTerminated
from aioquic.quic.packet import QuicPacketType, encode_quic_version_negotiation, pull_quic_header
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.protocol import DatagramProtocol

log = logging.getLogger("rehearsal.web")

KIND_MESSAGE = 0x00
KIND_FRAGMENT = 0x01
FRAGMENT_HEADER = struct.Struct(">BHBB")  # kind, seq, index, count
FRAGMENT_BYTES = 1000  # a part per datagram: fits a 1200-byte QUIC packet with its headers
MAX_FRAGMENTS = 48  # larger messages (keyframes of big scenes) go over the WebSocket
MAX_DATAGRAM_IN = 1500  # from a page: inputs and acks are far smaller
MAX_CONNECTIONS = 512
# Datagrams waiting in a connection for its congestion window (aioquic queues them without a bound): beyond this
# a message is dropped, as the network would lose it; the page's acks keep the deltas right.
MAX_PENDING_DATAGRAMS = 256
MAX_OFFERS = 1024
TOKEN_SECONDS = 15.0  # an offer's path opens a session within this long, once
SESSION_SECONDS = 10.0  # a QUIC connection that opened no session by then is closed
CERT_DAYS = 10  # Chromium takes a certificate by hash only if it is valid for at most 14 days
SMALLEST_INITIAL = 1200  # QUIC: a client's Initial is padded to this (anti-amplification)


class DatagramTarget(Protocol):
    """What a session delivers to: the page's WebSocket link (``rehearsal.web.websocket``)."""

    def attach_datagrams(self, session: DatagramSession) -> None: ...

    def on_datagram_message(self, payload: bytes) -> None: ...

    def datagrams_closed(self, session: DatagramSession) -> None: ...


class SelfSignedCertificate:
    """An ECDSA P-256 certificate for ``hosts`` valid ``days`` days from now, and the SHA-256 of its DER (what the
    page passes as ``serverCertificateHashes``)."""

    def __init__(self, hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"), days: int = CERT_DAYS) -> None:
        if not 1 <= days <= 14:
            raise ValueError("a certificate accepted by hash is valid for 1 to 14 days")
        self.key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rehearsal webtransport")])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days) - datetime.timedelta(minutes=10))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.sha256 = hashlib.sha256(self.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        self.renew_at = now.timestamp() + (days - 1) * 86400.0  # wall clock: a day before it expires


class DatagramSession:
    """One WebTransport session, attached to a link: ``send`` a message, ``close``; sends leave on ``flush``."""

    def __init__(self, connection: _Connection, session_id: int, target: DatagramTarget) -> None:
        self._connection = connection
        self.session_id = session_id
        self.target = target
        self.open = True
        self._seq = 0
        self.datagrams_sent = 0
        self.datagrams_received = 0

    def send(self, data: bytes) -> bool:
        """One encoded message as one datagram or its fragments; False (nothing sent) when closed or too large."""
        if not self.open:
            return False
        pending = getattr(self._connection.quic, "_datagrams_pending", ())  # aioquic's own queue (no public size)
        if len(pending) > MAX_PENDING_DATAGRAMS:
            self._connection.endpoint.counters["webtransport_send_dropped"] += 1
            return True  # lost, as on a congested path
        h3 = self._connection.h3
        if len(data) + 1 <= FRAGMENT_BYTES:
            h3.send_datagram(self.session_id, b"\x00" + data)
            self.datagrams_sent += 1
        else:
            count = -(-len(data) // FRAGMENT_BYTES)
            if count > MAX_FRAGMENTS:
                return False
            self._seq = (self._seq + 1) & 0xFFFF
            for index in range(count):
                part = data[index * FRAGMENT_BYTES : (index + 1) * FRAGMENT_BYTES]
                h3.send_datagram(self.session_id, FRAGMENT_HEADER.pack(KIND_FRAGMENT, self._seq, index, count) + part)
            self.datagrams_sent += count
        return True

    def flush(self) -> None:
        """Send what was queued (the link's ``flush``, after each tick): a tick's datagrams leave together."""
        self._connection.transmit()

    def close(self, reason: str = "closed") -> None:
        """Close the session's QUIC connection (the link keeps its WebSocket)."""
        if self.open:
            self.open = False
            self._connection.close(reason)

    def _received(self, data: bytes) -> None:
        self.datagrams_received += 1
        if not data or data[0] != KIND_MESSAGE or len(data) > MAX_DATAGRAM_IN:
            self._connection.endpoint.counters["webtransport_bad_datagrams"] += 1
            self.target.on_datagram_message(b"")  # counted by the link as a malformed frame
            return
        self.target.on_datagram_message(data[1:])

    def _closed(self) -> None:
        if self.open:
            self.open = False
        self.target.datagrams_closed(self)


class _Connection:
    """One QUIC connection: its aioquic state, the H3 layer, its timer and (once opened) its session."""

    def __init__(self, endpoint: WebTransportEndpoint, quic: QuicConnection, addr: Any) -> None:
        self.endpoint = endpoint
        self.quic = quic
        self.h3 = H3Connection(quic, enable_webtransport=True)
        self.addr = addr
        self.session: DatagramSession | None = None
        self.cids: set[bytes] = set()
        self.timer: Any = None
        self.timer_at: float | None = None
        self.started = time.monotonic()
        self.gone = False

    def receive(self, data: bytes, addr: Any) -> None:
        self.addr = addr
        self.quic.receive_datagram(data, addr, now=time.monotonic())
        self.process()

    def process(self) -> None:
        """Hand aioquic's events to the H3 layer and on, then send what is due."""
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, ConnectionIdIssued):
                self.cids.add(event.connection_id)
                self.endpoint.routes[event.connection_id] = self
            elif isinstance(event, ConnectionIdRetired):
                self.cids.discard(event.connection_id)
                self.endpoint.routes.pop(event.connection_id, None)
            elif isinstance(event, ConnectionTerminated):
                self._gone()
                return
            for h3_event in self.h3.handle_event(event):
                self._h3_event(h3_event)
        self.transmit()

    def _h3_event(self, event: Any) -> None:
        if isinstance(event, HeadersReceived):
            self._request(event.stream_id, dict(event.headers))
        elif isinstance(event, DatagramReceived):
            if self.session is not None and event.stream_id == self.session.session_id:
                self.session._received(event.data)
        elif isinstance(event, WebTransportStreamDataReceived):
            self.endpoint.counters["webtransport_streams_ignored"] += 1  # this protocol uses datagrams only

    def _request(self, stream_id: int, headers: dict[bytes, bytes]) -> None:
        method, protocol = headers.get(b":method"), headers.get(b":protocol")
        path = headers.get(b":path", b"").decode("ascii", "replace")
        target = None
        if method == b"CONNECT" and protocol == b"webtransport" and self.session is None:
            target = self.endpoint.take_offer(path)
        if target is None:
            self.endpoint.counters["webtransport_refused"] += 1
            self.h3.send_headers(stream_id, [(b":status", b"404")], end_stream=True)
            return
        self.h3.send_headers(stream_id, [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")])
        self.session = DatagramSession(self, stream_id, target)
        self.endpoint.counters["webtransport_sessions"] += 1
        target.attach_datagrams(self.session)

    def transmit(self) -> None:
        """Send what aioquic has for the wire and re-arm the timer."""
        if self.gone:
            return
        now = time.monotonic()
        for data, addr in self.quic.datagrams_to_send(now=now):
            self.endpoint.transport.write(data, addr)
        at = self.quic.get_timer()
        if at != self.timer_at:
            if self.timer is not None and self.timer.active():
                self.timer.cancel()
            self.timer = None
            self.timer_at = at
            if at is not None:
                self.timer = self.endpoint.reactor.callLater(max(at - now, 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self.timer, self.timer_at = None, None
        if self.gone:
            return
        self.quic.handle_timer(now=time.monotonic())
        self.process()
        if not self.gone and self.session is None and time.monotonic() - self.started > SESSION_SECONDS:
            self.close("no session opened")

    def close(self, reason: str) -> None:
        if not self.gone:
            self.quic.close(error_code=0, reason_phrase=reason[:100])
            self.transmit()
            self._gone()

    def _gone(self) -> None:
        if self.gone:
            return
        self.gone = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.endpoint._forget(self)
        if self.session is not None:
            self.session._closed()


class _Offer:
    __slots__ = ("expires", "target")

    def __init__(self, target: DatagramTarget, expires: float) -> None:
        self.target = target
        self.expires = expires


class WebTransportEndpoint(DatagramProtocol):
    """The HTTP/3 WebTransport port: listen with ``listen``; ``offer(link)`` gives the page what it needs to attach."""

    def __init__(
        self,
        reactor: Any,
        certificate: SelfSignedCertificate | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.wall_clock = wall_clock  # when the certificate is renewed (a server may run longer than it is valid)
        self.certificate = certificate or SelfSignedCertificate()
        self.configuration = QuicConfiguration(
            is_client=False,
            alpn_protocols=H3_ALPN,
            max_datagram_frame_size=65536,
            idle_timeout=30.0,
        )
        self.configuration.certificate = self.certificate.certificate
        self.configuration.private_key = self.certificate.key
        self.routes: dict[bytes, _Connection] = {}
        self.connections: set[_Connection] = set()
        self.offers: OrderedDict[str, _Offer] = OrderedDict()
        self.counters: Counter[str] = Counter()
        self.port: int | None = None
        self._listening: Any = None

    def listen(self, port: int, interface: str) -> int:
        """Listen on UDP ``interface:port`` (0: a free one); returns the port."""
        self._listening = self.reactor.listenUDP(port, self, interface=interface)
        self.port = self._listening.getHost().port
        return self.port

    def stop(self) -> Any:
        """Close every connection and the port."""
        for connection in list(self.connections):
            connection.close("the server is stopping")
        listening, self._listening = self._listening, None
        return listening.stopListening() if listening is not None else None

    # --- offers --------------------------------------------------------------------------------------------

    def offer(self, target: Any) -> dict[str, Any]:
        """A single-use path for ``target`` (a link with ``attach_datagrams``), as the page's ``webtransport``."""
        if self.wall_clock() >= self.certificate.renew_at:  # new connections get the new one; open ones keep theirs
            self.certificate = SelfSignedCertificate()
            self.configuration.certificate = self.certificate.certificate
            self.configuration.private_key = self.certificate.key
            self.counters["webtransport_certificates_renewed"] += 1
        now = self.clock()
        while self.offers and (len(self.offers) >= MAX_OFFERS or next(iter(self.offers.values())).expires < now):
            self.offers.popitem(last=False)
        token = os.urandom(16).hex()
        self.offers[token] = _Offer(target, now + TOKEN_SECONDS)
        return {"port": self.port, "path": f"/wt/{token}", "cert_sha256": self.certificate.sha256}

    def take_offer(self, path: str) -> Any:
        """The target of an unexpired offer's path, once; None for any other path."""
        if not path.startswith("/wt/"):
            return None
        offer = self.offers.pop(path[4:], None)
        if offer is None or offer.expires < self.clock():
            return None
        return offer.target

    # --- datagrams -----------------------------------------------------------------------------------------

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 (twisted's name)
        try:
            self._datagram(data, addr)
        except Exception as exc:  # a peer's bad packet must never reach the reactor
            self.counters["webtransport_errors"] += 1
            log.warning("webtransport: packet from %s failed: %s", addr[0], type(exc).__name__)

    def _datagram(self, data: bytes, addr: Any) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=self.configuration.connection_id_length)
        except ValueError:
            self.counters["webtransport_bad_packets"] += 1
            return
        if (
            header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in self.configuration.supported_versions
        ):
            vn = encode_quic_version_negotiation(
                source_cid=header.destination_cid,
                destination_cid=header.source_cid,
                supported_versions=self.configuration.supported_versions,
            )
            self.transport.write(vn, addr)
            return
        connection = self.routes.get(header.destination_cid)
        if connection is None:
            if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_INITIAL:
                return
            if len(self.connections) >= MAX_CONNECTIONS:
                self.counters["webtransport_connections_refused"] += 1
                return
            quic = QuicConnection(
                configuration=self.configuration, original_destination_connection_id=header.destination_cid
            )
            connection = _Connection(self, quic, addr)
            self.connections.add(connection)
            for cid in (header.destination_cid, quic.host_cid):
                connection.cids.add(cid)
                self.routes[cid] = connection
            self.counters["webtransport_connections"] += 1
        connection.receive(data, addr)

    def _forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        for cid in connection.cids:
            if self.routes.get(cid) is connection:
                del self.routes[cid]

    def status(self) -> dict[str, Any]:
        return {"connections": len(self.connections), "offers": len(self.offers), "counters": dict(self.counters)}
