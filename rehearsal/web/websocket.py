"""The browser's live link: a WebSocket endpoint (autobahn, twisted flavour) whose sockets become server Links.

A page opens ``/ws`` and first sends one text frame, the join, as JSON::

    {"join": {"invite": "<code>", "name": "Dr. Ada"}}     a team invite, traded through the JoinService
    {"rejoin": {"rejoin_code": "<code>"}}                 the personal code a previous join answered

The join service answers as it does for ``/api/join`` (the same codes, expiry, uses and errors); the identity
it yields joins the room through ``connections.open(link, identity)`` exactly as a UDP connect does. The page
gets a text frame ``{"joined": {session, participant (decimal text), role, name, rejoin_code}}`` (a mentor's
also ``debrief_key``: ``rehearsal.web.debrief_access``), then binary
frames: each carries exactly one message of ``rehearsal.wire.REHEARSAL_REGISTRY`` (the same msgpack maps and
snapshot codec as the headsets'), both ways. A page may also send the text frame ``{"page_error": "<text>"}``
(counted, logged briefly). A refused join is a binary ``refused`` (request ``connect``) and a close with code 4003.

Any role joins this way. A participant's page (surgeons, the assistant, the scrub nurse) sends ``input`` messages
(the thin client's redundant input packets, ``netcode/thin_client/CLIENT.md``) that reach ``connections.receive``
like a headset's: the same work budget, role rules, pose guard and bad-input counting; it gets what a headset
gets (its own snapshot stream, ``input_ack``, the ``grasp`` response models and ``release``, its ``forces``). An
observer's input naming a hand is refused and counted (``budget_refused_role``) before any pose is decoded.

A participant's page is also offered WebTransport datagrams (``rehearsal.web.webtransport``, when the server
runs that port): once attached, the link's unreliable messages go as datagrams (no head-of-line blocking under
loss), its transport is ``webtransport`` (snapshots then need acks: not ``IN_ORDER``), and the page's datagrams
pass the same frame budget and checks as its frames. When the session closes, everything is on the socket again.

Bounded: frames and messages from the page (``MAX_FRAME_BYTES``), frames per second (``MAX_FRAMES_PER_SECOND``),
malformed frames (``MAX_BAD_FRAMES``, each answered with a ``refused`` at most twice a second), time to join,
open sockets (``MAX_SOCKETS``) and what waits in the send buffer while the page reads slowly: unreliable
messages (snapshots) are dropped then, as UDP would lose them (the page's acks keep the deltas right), and a
link whose reliable backlog passes ``MAX_PENDING_BYTES`` is closed.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from netcode.messaging.channels import Channel
from netcode.messaging.connection import ConnectionStats
from netcode.messaging.messages import Message, MessageError
from rehearsal.identity import Identity, IdentityError
from rehearsal.invites import InviteError
from rehearsal.join_service import JoinService
from rehearsal.links import WEBTRANSPORT
from rehearsal.roles import Role
from rehearsal.web.debrief_access import DebriefAccess
from rehearsal.web.webtransport import DatagramSession, WebTransportEndpoint
from rehearsal.wire import REHEARSAL_REGISTRY

log = logging.getLogger("rehearsal.web")

WEBSOCKET = "websocket"  # the Link's transport name
MAX_FRAME_BYTES = 64 * 1024  # from the page: acks, commands, inputs and pings are far smaller
MAX_JOIN_BYTES = 2048
MAX_FRAMES_PER_SECOND = 400  # a page sends about 60 acks and a ping a second
FRAME_BURST = 800
MAX_BAD_FRAMES = 16  # malformed or unexpected frames before the socket is closed
BAD_FRAME_REPLY_INTERVAL = 0.5  # s: at most one `refused` for bad frames per socket in this time
MAX_PENDING_BYTES = 4 * 1024 * 1024  # reliable bytes queued while the page does not keep up
MAX_SOCKETS = 512
JOIN_TIMEOUT = 10.0  # s from open to a join
PING_INTERVAL = 1.0  # s: WebSocket pings measure the link's RTT
PING_TIMEOUT = 10.0  # s without a pong: the page is gone
MAX_PAGE_ERROR_CHARS = 300
PAGE_ERROR_LOG_INTERVAL = 5.0  # s: at most one log line of page errors per socket in this time

JOIN_SHAPE = 'the join is {"join": {"invite": code, "name": name}} or {"rejoin": {"rejoin_code": code}}'
# Close codes (an application may send 1000 or 3000-4999): the reason text says more.
CLOSE_SERVER = 4000  # the server closed the link (room ended, removed, too slow)
CLOSE_STOPPING = 4001  # the server is stopping
CLOSE_REFUSED = 4003  # join refused (bad code, ended session, draining)
CLOSE_POLICY = 4008  # too many bad frames, too fast, join timed out


class Connections(Protocol):
    """The server side of the Link seam (``rehearsal.links``), as this endpoint calls it."""

    def open(self, link: Any, identity: Identity) -> None: ...

    def receive(self, link_key: int, message: Message) -> None: ...

    def closed(self, link_key: int, reason: str) -> None: ...


class WebCounters(Counter):
    """What the endpoint counts (monotonic), read by the server's status for ops metrics."""


@implementer(IPushProducer)
class _Backpressure:
    """Registered on the socket's transport: twisted pauses it when its send buffer is full."""

    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:  # noqa: N802 (twisted's names)
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False

    def stopProducing(self) -> None:  # noqa: N802
        self.paused = True


class WebSocketLink:
    """One joined WebSocket as a server ``Link`` (``key``, ``transport``, ``send``, ``stats``, ``flush``, ``close``)."""

    def __init__(self, key: int, protocol: WatchProtocol, identity: Identity) -> None:
        self.key = key
        self.identity = identity
        self.datagrams: DatagramSession | None = None  # a WebTransport session for the unreliable messages
        self._protocol = protocol
        self.open = True
        self.bytes_sent = 0
        self.frames_sent = 0
        self.bytes_received = 0
        self.frames_received = 0
        self.pending_bytes = 0  # reliable bytes written while the transport was paused
        self.drops: Counter[str] = Counter()
        self.rtt: float | None = None
        self.jitter = 0.0

    def __repr__(self) -> str:
        return f"WebSocketLink({self.key}, {self.identity.role.value})"

    @property
    def transport(self) -> str:
        """``websocket``, or ``webtransport`` while unreliable messages go as datagrams (lossy: acks needed)."""
        return WEBSOCKET if self.datagrams is None else WEBTRANSPORT

    def attach_datagrams(self, session: DatagramSession) -> None:
        """The page opened its WebTransport session: unreliable messages go there from now on."""
        if not self.open:
            session.close("the link is closed")
            return
        if self.datagrams is not None:
            self.datagrams.close("replaced")
        self.datagrams = session
        self._protocol.counters["webtransport_attached"] += 1
        log.info("web link %d: webtransport datagrams attached", self.key)

    def datagrams_closed(self, session: DatagramSession) -> None:
        """The session ended (page, timeout or server): back to the WebSocket for everything."""
        if self.datagrams is session:
            self.datagrams = None
            log.info("web link %d: webtransport closed; unreliable messages on the WebSocket", self.key)

    def on_datagram_message(self, payload: bytes) -> None:
        """A message the page sent as a datagram: the same budget and checks as a binary frame."""
        self._protocol.on_binary(payload, datagram=True)

    def send(self, channel: Channel, message: Message | bytes) -> bool:
        """One message in one binary frame; False if the link is closed or the message was dropped.

        Given the encoded bytes, the same ``bytes`` object sent to many links (a room's shared observer
        snapshot) is framed once for all of them (``WatchEndpoint.framed``): each link's share is a write."""
        if not self.open:
            return False
        if isinstance(message, Message):
            try:
                data = REHEARSAL_REGISTRY.encode(message)
            except MessageError as exc:
                self.drops["message_invalid"] += 1
                log.error("web link %d: not sent: %s", self.key, exc)
                return False
        else:
            data = message if type(message) is bytes else bytes(message)
        protocol = self._protocol
        datagrams = self.datagrams
        if channel is Channel.UNRELIABLE and datagrams is not None and datagrams.send(data):
            self.bytes_sent += len(data)
            self.frames_sent += 1
            protocol.counters["datagram_bytes_sent"] += len(data)
            return True  # (a message too large for datagrams goes on the socket below)
        if protocol.state != WebSocketServerProtocol.STATE_OPEN:
            return False  # the closing handshake began: nothing may follow the close frame
        if protocol.backpressure.paused:
            if channel is Channel.UNRELIABLE:
                self.drops["slow_reader"] += 1  # as a lost datagram: the page's acks keep the deltas right
                protocol.counters["unreliable_dropped"] += 1
                return False
            self.pending_bytes += len(data)
            if self.pending_bytes > MAX_PENDING_BYTES:
                protocol.counters["closed_slow"] += 1
                self.close("the page does not keep up with the room (send buffer full)")
                return False
        else:
            self.pending_bytes = 0
        protocol.write_frame(protocol.endpoint.framed(data))
        self.bytes_sent += len(data)
        self.frames_sent += 1
        protocol.counters["bytes_sent"] += len(data)
        protocol.counters["frames_sent"] += 1
        return True

    def stats(self) -> ConnectionStats | None:
        """RTT from WebSocket pings; a TCP stream loses nothing, so loss is what a slow reader had dropped."""
        sent = self.frames_sent + self.drops["slow_reader"]
        return ConnectionStats(
            rtt=self.rtt,
            jitter=self.jitter,
            packet_loss=self.drops["slow_reader"] / sent if sent else 0.0,
            packets_sent=self.frames_sent,
            packets_received=self.frames_received,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            reliable_queued=0,
            reliable_queued_bytes=self.pending_bytes,
            reliable_resent=0,
            unreliable_queued=0,
            reliable_receive_buffered=0,
            reassembly_pending=0,
            drops=dict(self.drops),
        )

    def flush(self, now: float) -> None:
        """Frames are written at once; the tick's datagrams leave now."""
        if self.datagrams is not None:
            self.datagrams.flush()

    def close(self, reason: str) -> None:
        """Close the socket (code 4000 with the reason); the endpoint reports ``connections.closed`` once."""
        if self.open:
            self.open = False
            self._drop_datagrams()
            self._protocol.close_with(CLOSE_SERVER, reason)

    def _drop_datagrams(self) -> None:
        datagrams, self.datagrams = self.datagrams, None
        if datagrams is not None:
            datagrams.close("the link closed")


class WatchProtocol(WebSocketServerProtocol):
    """One browser socket: join first, then messages both ways through its ``WebSocketLink``."""

    endpoint: WatchEndpoint

    def __init__(self) -> None:
        super().__init__()
        self.backpressure = _Backpressure()
        self.link: WebSocketLink | None = None
        self.joining = False
        self.closing = False
        self.bad_frames = 0
        self.last_bad_reply = -math.inf
        self.last_error_log = -math.inf
        self.tokens = float(FRAME_BURST)
        self.tokens_at = time.monotonic()
        self.ping_sent: tuple[bytes, float] | None = None
        self.ping_count = 0
        self._join_timer: Any = None

    @property
    def counters(self) -> WebCounters:
        return self.endpoint.counters

    # ------------------------------------------------------------------ life

    def onConnect(self, request: Any) -> None:  # noqa: N802 (autobahn's names)
        if len(self.endpoint.sockets) >= MAX_SOCKETS:
            self.counters["sockets_refused"] += 1
            raise ConnectionDeny(503, "too many browser connections")
        return None

    def onOpen(self) -> None:  # noqa: N802
        self.endpoint.sockets.add(self)
        self.counters["sockets_opened"] += 1
        transport = self.transport
        try:  # twisted.web's channel registered itself as the producer; the socket is ours now
            transport.unregisterProducer()
            transport.registerProducer(self.backpressure, True)
        except (AttributeError, RuntimeError) as exc:
            log.debug("web socket: no backpressure on %s: %s", type(transport).__name__, exc)
        self._join_timer = self.endpoint.reactor.callLater(JOIN_TIMEOUT, self._join_timed_out)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N802
        self.endpoint.sockets.discard(self)
        if self._join_timer is not None and self._join_timer.active():
            self._join_timer.cancel()
        self._join_timer = None
        link, self.link = self.link, None
        if link is None:
            return
        link.open = False
        link._drop_datagrams()
        self.endpoint.links.pop(link.key, None)
        why = reason or (f"closed ({code})" if code else "connection lost")
        log.info("web link %d (%s) closed: %s", link.key, link.identity.role.value, why)
        self.endpoint.connections.closed(link.key, why[:256])

    def write_frame(self, prepared: PreparedMessage) -> None:
        """A framed message onto the socket: the frame's bytes written as they are (per link a write, no
        framing and none of autobahn's per-send debug formatting), behind anything autobahn still queues."""
        if self.send_queue:  # autobahn's own queue (its chopped or synchronous sends) goes first
            self.sendPreparedMessage(prepared)
        else:
            self.transport.write(prepared.payloadHybi)

    def close_with(self, code: int, reason: str) -> None:
        """Start the closing handshake (once); the reason is for the page (at most 120 bytes)."""
        if self.closing:
            return
        self.closing = True
        try:
            self.sendClose(code=code, reason=reason.encode()[:120].decode(errors="ignore"))
        except Exception as exc:  # never into autobahn's frame loop: drop the socket instead
            log.error("web socket: close failed (%s); dropped", exc)
            self.dropConnection(abort=True)

    def _join_timed_out(self) -> None:
        self._join_timer = None
        if self.link is None and not self.joining:
            self.counters["joins_timed_out"] += 1
            self._refuse_join(f"no join within {JOIN_TIMEOUT:.0f} s", CLOSE_POLICY)

    # ------------------------------------------------------------------ frames

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802
        if self.closing:
            return
        if not self._take_token():
            self.counters["closed_flooding"] += 1
            log.warning("web socket: more than %d frames a second; closed", MAX_FRAMES_PER_SECOND)
            self.close_with(CLOSE_POLICY, "too many frames")
            return
        self.counters["frames_received"] += 1
        self.counters["bytes_received"] += len(payload)
        link = self.link
        if link is None:
            self._on_join_frame(payload, isBinary)
            return
        if isBinary:
            self._message(link, payload)
            return
        link.frames_received += 1
        link.bytes_received += len(payload)
        self._on_text(payload)

    def on_binary(self, payload: bytes, *, datagram: bool) -> None:
        """A message from the page's WebTransport datagrams, paid for from the same frame budget."""
        link = self.link
        if self.closing or link is None:
            return
        if not self._take_token():
            self.counters["datagrams_over_budget"] += 1  # datagrams may be dropped; the socket stays
            return
        self.counters["datagrams_received"] += 1
        self._message(link, payload)

    def _message(self, link: WebSocketLink, payload: bytes) -> None:
        link.frames_received += 1
        link.bytes_received += len(payload)
        try:
            message = REHEARSAL_REGISTRY.decode(payload)
        except MessageError as exc:
            self._bad_frame(f"malformed message: {exc}")
            return
        try:
            self.endpoint.connections.receive(link.key, message)
        except Exception as exc:  # a handler bug must not reach autobahn (it would drop the socket)
            self.counters["receive_failed"] += 1
            log.error("web link %d: %s failed: %s", link.key, message.type, type(exc).__name__)

    def _take_token(self) -> bool:
        now = time.monotonic()
        self.tokens = min(FRAME_BURST, self.tokens + (now - self.tokens_at) * MAX_FRAMES_PER_SECOND)
        self.tokens_at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def _on_text(self, payload: bytes) -> None:
        """After the join, text frames are only page error reports."""
        try:
            body = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = None
        report = body.get("page_error") if isinstance(body, dict) else None
        if not isinstance(report, str):
            self._bad_frame('text frames after the join are {"page_error": text}; messages go in binary frames')
            return
        self.counters["page_errors"] += 1
        now = time.monotonic()
        if now - self.last_error_log >= PAGE_ERROR_LOG_INTERVAL and self.link is not None:
            self.last_error_log = now
            log.warning("web link %d: page error: %r", self.link.key, report[:MAX_PAGE_ERROR_CHARS])

    def _bad_frame(self, reason: str) -> None:
        """Answer a malformed frame with a `refused` (rate-limited); too many close the socket."""
        self.bad_frames += 1
        self.counters["bad_frames"] += 1
        if self.bad_frames > MAX_BAD_FRAMES:
            log.warning("web socket: %d bad frames; closed (last: %s)", self.bad_frames, reason)
            self.close_with(CLOSE_POLICY, "too many malformed frames")
            return
        now = time.monotonic()
        if now - self.last_bad_reply >= BAD_FRAME_REPLY_INTERVAL:
            self.last_bad_reply = now
            log.info("web socket: bad frame: %s", reason)
            self._send_refused("message", reason)

    def _send_refused(self, request: str, reason: str) -> None:
        data = REHEARSAL_REGISTRY.encode(Message("refused", {"request": request, "reason": reason[:256]}))
        self.sendMessage(data, isBinary=True)
        self.counters["bytes_sent"] += len(data)

    # ------------------------------------------------------------------ join

    def _on_join_frame(self, payload: bytes, is_binary: bool) -> None:
        if self.joining:  # a second frame before the first join was answered
            self._bad_frame("wait for the answer to the join")
            return
        if is_binary or len(payload) > MAX_JOIN_BYTES:
            self._refuse_join('send the join first: a text frame {"join": {"invite": code, "name": name}}')
            return
        try:
            body = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = None
        if not isinstance(body, dict) or not any(isinstance(body.get(k), dict) for k in ("join", "rejoin")):
            self._refuse_join(JOIN_SHAPE)
            return
        self.joining = True
        endpoint = self.endpoint
        try:
            if "join" in body and isinstance(body["join"], dict):
                closed = endpoint.closed()
                if closed:
                    raise InviteError(closed)
                ticket = endpoint.join_service.join(body["join"].get("invite"), body["join"].get("name"))
            else:
                ticket = endpoint.join_service.rejoin(body["rejoin"].get("rejoin_code"))
        except (InviteError, IdentityError) as exc:
            self.counters["joins_refused"] += 1
            log.info("web socket: join refused: %s", exc)
            self._refuse_join(str(exc))
            return
        if self.closing or self.state != WebSocketServerProtocol.STATE_OPEN:
            return  # the page went away while we looked at its code
        identity = ticket.identity
        link = WebSocketLink(endpoint.next_key(), self, identity)
        self.link = link
        endpoint.links[link.key] = link
        self.counters["joins"] += 1
        answer = {
            "session": identity.session,
            "participant": identity.participant,
            "role": identity.role.value,
            "name": identity.name,
            "rejoin_code": ticket.rejoin_code,
        }
        access = endpoint.debrief_access
        if access is not None and identity.role is Role.MENTOR:  # opens this session's debrief once it ended
            answer["debrief_key"] = access.issue(identity.session)
        wt = endpoint.webtransport
        if wt is not None and identity.role is not Role.OBSERVER:  # observers share an in-order stream
            answer["webtransport"] = wt.offer(link)
        self.sendMessage(json.dumps({"joined": answer}).encode(), isBinary=False)
        log.info("web link %d joined session %s as %s", link.key, identity.session, identity.role.value)
        try:
            endpoint.connections.open(link, identity)
        except Exception as exc:  # the room's join failed in a way it did not answer: close, do not leak the link
            self.counters["open_failed"] += 1
            log.error("web link %d: joining the room failed: %s", link.key, type(exc).__name__)
            link.close("the server could not join you to the room")

    def _refuse_join(self, reason: str, code: int = CLOSE_REFUSED) -> None:
        self._send_refused("connect", reason)
        self.close_with(code, reason)

    # ------------------------------------------------------------------ pings

    def ping(self, now: float) -> None:
        """Called every PING_INTERVAL: a ping when none is outstanding; close after PING_TIMEOUT without a pong."""
        if self.closing or self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        if self.ping_sent is not None:
            if now - self.ping_sent[1] > PING_TIMEOUT:
                self.counters["closed_timeout"] += 1
                self.close_with(CLOSE_POLICY, f"no answer for {PING_TIMEOUT:.0f} s")
                self.dropConnection(abort=True)
            return
        self.ping_count += 1
        payload = struct.pack(">Q", self.ping_count)
        self.ping_sent = (payload, now)
        self.sendPing(payload)

    def onPong(self, payload: bytes) -> None:  # noqa: N802
        sent = self.ping_sent
        if sent is None or payload != sent[0]:
            return
        self.ping_sent = None
        rtt = max(self.endpoint.clock() - sent[1], 0.0)
        link = self.link
        if link is not None:
            if link.rtt is not None:
                link.jitter += (abs(rtt - link.rtt) - link.jitter) / 16  # RFC 3550's estimator
            link.rtt = rtt if link.rtt is None else link.rtt + (rtt - link.rtt) / 8


class WatchEndpoint:
    """The ``/ws`` endpoint: the autobahn factory, its open sockets and links, and what it counts."""

    def __init__(
        self,
        reactor: Any,
        join_service: JoinService,
        connections: Connections,
        *,
        next_key: Callable[[], int],
        closed: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        debrief_access: DebriefAccess | None = None,
        webtransport: WebTransportEndpoint | None = None,
    ) -> None:
        self.reactor = reactor
        self.webtransport = webtransport  # offers participants' pages datagrams (rehearsal.web.webtransport)
        self.debrief_access = debrief_access  # issues a mentor's debrief key at its join
        self.join_service = join_service
        self.connections = connections
        self.next_key = next_key
        self.closed = closed  # a reason while the server takes no new joins (draining), else None
        self.clock = clock
        self.counters = WebCounters()
        self.sockets: set[WatchProtocol] = set()
        self.links: dict[int, WebSocketLink] = {}
        endpoint = self

        class _Protocol(WatchProtocol):
            def __init__(self) -> None:
                super().__init__()
                self.endpoint = endpoint

        self.factory = WebSocketServerFactory()
        self.factory.protocol = _Protocol
        self.factory.setProtocolOptions(
            maxFramePayloadSize=MAX_FRAME_BYTES,
            maxMessagePayloadSize=MAX_FRAME_BYTES,
            autoFragmentSize=0,  # one message, one frame
            openHandshakeTimeout=5.0,
            closeHandshakeTimeout=2.0,
            failByDrop=False,
        )
        self._framed: tuple[bytes, PreparedMessage] | None = None
        self._pinger = LoopingCall(self._ping_all)
        self._pinger.clock = reactor

    def framed(self, data: bytes) -> PreparedMessage:
        """``data`` as one unmasked binary frame, framed once while the same bytes object is sent to link after
        link (the last one is kept: holding the object keeps its identity from being reused). No link
        negotiates permessage-deflate (the factory offers none), so the frame is written as it is."""
        last = self._framed
        if last is not None and last[0] is data:
            return last[1]
        prepared = self.factory.prepareMessage(data, isBinary=True)
        self._framed = (data, prepared)
        return prepared

    def resource(self) -> WebSocketResource:
        """The twisted.web resource to mount at ``/ws``."""
        return WebSocketResource(self.factory)

    def start(self) -> WatchEndpoint:
        self._pinger.start(PING_INTERVAL, now=False)
        return self

    def stop(self) -> None:
        """Stop pinging and close every socket (the server is going away)."""
        if self._pinger.running:
            self._pinger.stop()
        for protocol in list(self.sockets):
            protocol.close_with(CLOSE_STOPPING, "the server is stopping")

    def _ping_all(self) -> None:
        now = self.clock()
        for protocol in list(self.sockets):
            protocol.ping(now)

    def status(self) -> dict[str, Any]:
        """Observers connected (joined pages with the observer role), links by role, and the counters."""
        roles: Counter[str] = Counter(link.identity.role.value for link in self.links.values())
        return {
            "observers": roles.get(Role.OBSERVER.value, 0),
            "links": dict(roles),
            "sockets": len(self.sockets),
            "counters": dict(self.counters),
        }
