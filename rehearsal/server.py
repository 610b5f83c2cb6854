"""The rehearsal server's composition root: builds the parts, wires ops into them, listens, serves.

One process, one twisted reactor:

* **HTTP** (twisted.web, ``settings.http_host:http_port``): the join API of ``rehearsal.http_api``. An
  admin (bearer credential) creates a session from a scenario (``rehearsal.sessions``); the admin gets
  invite codes per role, which participants trade for netcode connect tokens.
* **The browser side** (``rehearsal.web``) on the same HTTP port: the watch page and mentor console at ``/`` and
  ``/watch``, its files under ``/static``, the debrief of finished sessions at ``/debrief`` (``rehearsal.web.debrief``),
  and its live link at ``/ws`` (a ``WebSocketLink`` per page into the
  same ``Connections``). With ``settings.tls_cert``/``tls_key`` the port speaks HTTPS and WSS.
* **UDP** (``settings.udp_host:udp_port``): the netcode 1.02 server (``rehearsal.udp_transport``), one
  ``UdpLink`` per client. Other transports (WebSocket) reach the same ``Connections`` through their own
  ``Link``s (``rehearsal.links``): ``server.connections.open / receive / closed``.

The parts, each one job, in the order they depend on each other (none imports one to its right):
``links``, ``live_room`` (a room's audience) <- ``publishing`` (per-tick sends) <- ``sessions`` (rooms'
lifecycle) <- ``connections`` (joining, input, commands) <- ``udp_transport``, ``status`` (status, ops and
admin views) <- this module. Ops is wired in here and only here: ``/metrics`` reads ``ops_status()`` at scrape
time and the histograms get ``observe`` callables; ``/readyz`` reads ``ready()``; the admin API (``ops.admin_api``,
under ``/admin``) gets the ``admin_*`` methods as plain callables and the same ``ops.auth.AdminGate`` as
``/api/sessions``. On SIGTERM ``serve`` drains (``start_drain``, ``ops.drain``) before it stops.

Secrets (the token key, the admin credential) live in ``settings.data_dir`` (0700) or the environment;
they are never logged: ``serve`` logs where they are.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall

from netcode.transport.address import Address
from netcode.transport.server import ServerConfig
from netcode.transport.udp import free_udp_port
from ops.admin_api import AdminActions, admin_root
from ops.auth import AdminGate
from ops.drain import Drain
from ops.http import Heartbeat, ops_site
from ops.metrics import OpsMetrics
from rehearsal.checkpoints import CheckpointWriter, checkpoint_key
from rehearsal.connections import Connections
from rehearsal.http_api import api_root
from rehearsal.invites import InviteBook, code_key
from rehearsal.join_service import JoinService
from rehearsal.journal import JOURNAL_FILE, ActionJournal
from rehearsal.links import next_link_key
from rehearsal.live_room import LiveRoom
from rehearsal.publishing import Publisher
from rehearsal.results_store import RESULTS_FILE, ResultsStore
from rehearsal.scenario import resolve_scenario
from rehearsal.secrets_store import ADMIN_CREDENTIAL, TOKEN_KEY, server_secret
from rehearsal.session_store import SESSIONS_FILE, SessionStore
from rehearsal.sessions import Sessions, TickObserver
from rehearsal.settings import Settings
from rehearsal.status import StatusViews
from rehearsal.udp_transport import UdpTransport
from rehearsal.warm_up import PortInUseError, WarmingResponder, probe_ports
from rehearsal.warm_up import warm_up as compile_kernels
from rehearsal.web.debrief import DebriefService, mount_debrief
from rehearsal.web.debrief_access import DebriefAccess
from rehearsal.web.site import mount_web
from rehearsal.web.tls import server_tls_options
from rehearsal.web.websocket import WatchEndpoint
from rehearsal.web.webtransport import WebTransportEndpoint

log = logging.getLogger("rehearsal.server")

CONNECTION_SAMPLE_SECONDS = 1.0  # RTT and loss sampling for the metrics
# A headset sends one packet a frame (72-120 Hz) plus the odd reliable resend: the channels' own limit
# (netcode.messaging ConnectionConfig.max_packets_per_second, 300) applied right after decryption instead,
# so a flooding client's excess never reaches the channels (netcode's default is 1,000).
MAX_PACKETS_PER_CLIENT = 300.0
# How long a thread that wants the GIL waits before the holder is asked to let go (Python's default: 5 ms). A
# room's step takes the GIL back after each numba kernel (a dozen times a step); with the reactor busy in
# Python, each of those waits could last the whole interval, and a 1 ms step took tens of milliseconds.
GIL_SWITCH_SECONDS = 0.0005


def freeze_long_lived_heap() -> None:
    """Take what start-up made (modules, twisted, the compiled kernels: ~160k objects) out of the cyclic
    garbage collector's scans; rooms, connections and everything later are still collected.

    Why: a full collection walked that whole heap on whichever thread triggered it, with the GIL held, and a
    flood of small allocations (issue 19's observer input flood) triggers them often: each one froze every
    room for 100 ms or more (the witness's 120 ms gap). After the freeze a full collection takes about 1 ms."""
    gc.collect()  # the warm-up's garbage goes first, so none of it is kept for good
    gc.freeze()


class RehearsalServer:
    """The join API, the transports and the rooms in one reactor (see the module doc).

    ``clock`` times rooms' emptiness and refusal intervals; ``server_time`` is the clock clients sync to
    (event times, input acks, drain deadlines; the netcode server's too)."""

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        server_time: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.reactor = reactor
        self.clock = clock
        self.server_time = server_time
        data_dir = Path(settings.data_dir)
        self.data_dir = data_dir
        self._token_key = server_secret(data_dir, TOKEN_KEY)
        self.gate = AdminGate(server_secret(data_dir, ADMIN_CREDENTIAL).hex())
        self.results = ResultsStore(data_dir / RESULTS_FILE)
        # Crash recovery: open sessions and their code books in SQLite, rooms' checkpoints in files.
        self.store = SessionStore(data_dir / SESSIONS_FILE)
        self._checkpoint_key = checkpoint_key(self._token_key)
        self.checkpoints = CheckpointWriter(data_dir, self._checkpoint_key, on_written=self._checkpoint_written)
        self.journal = ActionJournal(data_dir / JOURNAL_FILE)  # acked mentor actions and steps, synchronously
        self.counters: Counter[str] = Counter()
        # ops is wired here, in the composition root only: it reads ops_status() at scrape time.
        self.metrics = OpsMetrics(status=self.ops_status)
        histograms = self.metrics.histograms
        self.udp: UdpTransport | None = None  # set below; the publisher flushes its links
        self.publisher = Publisher(
            server_time=server_time,
            counters=self.counters,
            flush_udp=self._flush_udp,
            observer_snapshot_hz=settings.observer_snapshot_hz,
            observe_snapshot_bytes=histograms.snapshot_bytes.observe,
        )
        self.sessions = Sessions(
            settings,
            reactor,
            publisher=self.publisher,
            results=self.results,
            counters=self.counters,
            clock=clock,
            server_time=server_time,
            observe_tick=histograms.tick.observe,
            observe_physics_step=histograms.physics_step.observe,
            observe_publish=histograms.publish.observe,
            store=self.store,
            checkpoints=self.checkpoints,
            checkpoint_key=self._checkpoint_key,
            journal=self.journal,
        )
        self.connections = Connections(
            self.sessions, reactor, counters=self.counters, clock=clock, server_time=server_time
        )
        self.udp = UdpTransport(self.connections, self.counters, server_time)
        self.views = StatusViews(
            self.sessions,
            self.connections,
            counters=self.counters,
            packet_stats=self.udp.packet_stats,
            drop_counts=self.udp.drop_counts,
        )
        self.invites = InviteBook(key=code_key(self._token_key), store=self.store)
        self.sessions.session_closed.append(self.invites.revoke_session)  # a session's codes end with it
        self.join_service: JoinService | None = None
        self._http_port = None
        self.udp_address: Address | None = None
        self.http_port: int | None = None
        self.web: WatchEndpoint | None = None
        self.webtransport: WebTransportEndpoint | None = None
        self.debriefs: DebriefService | None = None
        self.heartbeat: Heartbeat | None = None
        self._sampler: LoopingCall | None = None
        self.drain: Drain | None = None
        self.resumed: list[str] = []  # sessions brought back from their checkpoints at start
        # Which of the store's open sessions this process resumes at start (a fleet's member leaves alone those
        # the room directory gave to another process: rehearsal.fleet.member).
        self.keep_session: Callable[[str], bool] = lambda session: True

    def __repr__(self) -> str:  # never show secrets
        return f"RehearsalServer(udp={self.udp_address}, http_port={self.http_port}, rooms={len(self.rooms)})"

    # --- what tests, load runs and the admin see ---------------------------------------------------------

    @property
    def credential_path(self) -> Path:
        return self.data_dir / ADMIN_CREDENTIAL.name

    @property
    def rooms(self) -> dict[str, LiveRoom]:
        return self.sessions.rooms

    @property
    def draining(self) -> bool:
        return self.sessions.draining

    def add_tick_observer(self, observer: TickObserver) -> None:
        """Call ``observer(session, handback_seconds, publish_seconds)`` after each room tick that ran a step."""
        self.sessions.tick_observers.append(observer)

    def create_session(self, scenario_name: str) -> str:
        """A new room from one of the server's scenarios (by name, or by the path of its file in the scenario
        folder: ``rehearsal.scenario.resolve_scenario``), ticking at once; returns its session id."""
        name, _ = resolve_scenario(scenario_name, self.settings.scenario_dir)
        return self.sessions.create_session(name)

    def status(self) -> dict[str, Any]:
        return self.views.status()

    def ops_status(self) -> dict[str, Any]:
        status = self.views.ops_status()
        writer = self.checkpoints.stats
        status["checkpoints"] = {
            "written": writer.written,
            "failed": writer.failed + self.counters.get("checkpoints_failed", 0),  # writing, or taking one
        }
        status["sessions_resumed"] = self.counters.get("sessions_resumed", 0)
        status["interrupted_results"] = self.counters.get("sessions_interrupted", 0)
        status["journal_writes"] = {k: self.journal.counters.get(k, 0) for k in ("written", "failed")}
        status["journal_write_seconds"] = self.journal.counters.get("seconds", 0.0)
        if self.web is not None:
            web = self.web.status()
            status["web_observers"] = web["observers"]
            status["websocket_bytes_sent"] = web["counters"].get("bytes_sent", 0)
            status["page_errors"] = web["counters"].get("page_errors", 0)
            for what in ("receive_failed", "open_failed"):  # a browser page's message or connection
                status["failures"][f"websocket_{what}"] = web["counters"].get(what, 0)
        return status

    def ready(self) -> bool | str:
        return self.views.ready()

    def admin_actions(self) -> AdminActions:
        """What ops' admin API may see and do here (plain callables: ops never imports rehearsal)."""
        return AdminActions(
            list_rooms=self.views.admin_rooms,
            room=self.views.admin_room,
            end_room=self.views.admin_end_room,
            remove_participant=self.views.admin_remove_participant,
            list_results=self.results.sessions,
            result=self.results.session,
        )

    def _checkpoint_written(self, capture_: Any, nbytes: int, seconds: float) -> None:
        """On the writer thread: time it, and let the reactor drop the journal entries the file includes."""
        self.metrics.histograms.checkpoint.observe(seconds)
        if hasattr(self.reactor, "callFromThread"):
            self.reactor.callFromThread(self.sessions.checkpoint_written, capture_.session, capture_.journal_seq)

    def _http_refused(self, reason: str) -> None:
        """An HTTP request answered 4xx (``http_<code>``): counted with the other refusals, by reason."""
        self.counters[f"budget_refused_{reason}"] += 1

    def _sample(self) -> None:
        """Once a second: connections' RTT and loss, rooms' snapshot rates (for /readyz)."""
        self.views.sample_connections(self.metrics.histograms.rtt.observe)
        self.views.sample_rooms(self.clock())

    def _flush_udp(self, keys: Any, now: float) -> None:
        if self.udp is not None:
            self.udp.flush(keys, now)

    # --- life --------------------------------------------------------------------------------------------

    def start(self, warm_up: bool = True, progress: Callable[[str], None] | None = None) -> None:
        """Compile the numba kernels (so the first room does not stall the reactor), then listen. A port in use
        is a PortInUseError before the warm-up; meanwhile the HTTP port answers /healthz ``warming``
        (``rehearsal.warm_up``); ``progress(line)`` hears each warm-up stage."""
        settings = self.settings
        if warm_up:
            probe_ports((settings.udp_host, settings.udp_port), (settings.http_host, settings.http_port))
            tls = (settings.tls_cert, settings.tls_key) if settings.tls_cert else None
            warming = WarmingResponder(settings.http_host, settings.http_port, tls) if settings.http_port else None
            scenarios = self.sessions.scenarios()
            with warming or contextlib.nullcontext():
                compile_kernels(scenarios.get(settings.default_scenario, settings.default_scenario), progress)
        freeze_long_lived_heap()
        self.recover()
        if settings.udp_port == 0:  # the token must name the real port: pick a free one first
            settings = replace(settings, udp_port=free_udp_port(settings.udp_host))
            self.settings = self.sessions.settings = settings
        public = Address.parse(settings.public_address)
        self.join_service = JoinService(
            self._token_key,
            settings.protocol_id,
            [public],
            invites=self.invites,
            session_exists=self.sessions.session_open,
            on_rejoin=self.connections.drop_stale_connection,
            discard_session=self.sessions.discard_session,
            reserve_seat=self.sessions.reserve_seat,
        )
        config = ServerConfig(
            settings.protocol_id,
            self._token_key,
            [public],
            max_clients=settings.max_clients,
            max_packets_per_second_per_client=MAX_PACKETS_PER_CLIENT,
        )
        try:
            udp_port = self.udp.listen(self.reactor, config, settings.udp_port, settings.udp_host)
        except CannotListenError as exc:  # taken between the probe and now
            raise PortInUseError(
                f"udp port {settings.udp_port} on {settings.udp_host} is in use: {exc.socketError}"
            ) from None
        self.udp_address = Address.from_host_port(settings.udp_host, udp_port)
        self.heartbeat = Heartbeat(self.reactor).start()
        self._sampler = LoopingCall(self._sample)
        self._sampler.clock = self.reactor
        self._sampler.start(CONNECTION_SAMPLE_SECONDS, now=False)
        root = api_root(self.join_service, self.gate, self.create_session, closed=self.sessions.closed)
        admin_root(self.gate, self.admin_actions(), root=root)  # the same gate: one failure budget
        debrief_access = DebriefAccess.from_data_dir(settings.data_dir)  # mentors' debrief links
        if settings.webtransport_port >= 0:  # participants' pages: datagrams beside the WebSocket
            self.webtransport = WebTransportEndpoint(self.reactor)
            try:
                self.webtransport.listen(settings.webtransport_port, settings.http_host)
            except CannotListenError as exc:
                raise PortInUseError(
                    f"webtransport udp port {settings.webtransport_port} on {settings.http_host} is in use: "
                    f"{exc.socketError}"
                ) from None
        self.web = WatchEndpoint(
            self.reactor,
            self.join_service,
            self.connections,
            next_key=next_link_key,
            closed=self.sessions.closed,
            debrief_access=debrief_access,
            webtransport=self.webtransport,
        ).start()
        mount_web(root, self.web)
        self.debriefs = DebriefService(self.reactor, self.results.session, self.gate.check, access=debrief_access)
        mount_debrief(root, self.debriefs)  # /debrief: the page, and the data behind a debrief key or the admin's
        # bodies bounded before they are read; /healthz also fails while a room's thread is stuck
        site = ops_site(
            self.metrics, self.heartbeat, self.ready, root=root, healthy=self.views.healthy, refused=self._http_refused
        )
        try:
            if settings.tls_cert:
                tls = server_tls_options(settings.tls_cert, settings.tls_key)
                self._http_port = self.reactor.listenSSL(settings.http_port, site, tls, interface=settings.http_host)
            else:
                self._http_port = self.reactor.listenTCP(settings.http_port, site, interface=settings.http_host)
        except CannotListenError as exc:
            raise PortInUseError(
                f"http port {settings.http_port} on {settings.http_host} is in use: {exc.socketError}"
            ) from None
        self.http_port = self._http_port.getHost().port

    @property
    def http_scheme(self) -> str:
        """``https`` when the HTTP port speaks TLS, else ``http``."""
        return "https" if self.settings.tls_cert else "http"

    def recover(self) -> list[str]:
        """Sessions still open when the last process died (a crash) come back with their code books; those
        that cannot are stored as interrupted (``Sessions.resume_sessions``). Returns the sessions resumed."""
        self.invites.load(self.store.codes(time.time()))
        self.resumed = self.sessions.resume_sessions(self.keep_session)
        return self.resumed

    def stop(self) -> defer.Deferred:
        """Disconnect everybody, stop every room's ticker and thread, close the ports."""
        self.sessions.draining = True
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self._sampler is not None and self._sampler.running:
            self._sampler.stop()
        self.udp.disconnect_all()
        if self.web is not None:
            self.web.stop()
        self.sessions.close_all()
        self.checkpoints.close()
        waits = [defer.maybeDeferred(self.udp.stop_listening)]
        if self.webtransport is not None:  # its sessions close; the pages keep nothing but their WebSockets
            waits.append(defer.maybeDeferred(self.webtransport.stop))
        if self._http_port is not None:
            waits.append(defer.maybeDeferred(self._http_port.stopListening))
            self._http_port = None
        return defer.DeferredList(waits)

    def start_drain(self) -> defer.Deferred:
        """Graceful drain (SIGTERM): not ready, no new sessions, joins or connections; every participant
        gets a reliable ``event`` ``draining`` with the deadline in server time; rooms end
        (``Sessions.end_room``) when empty or at the deadline. Fires when every room is closed (bounded:
        deadline + grace)."""
        if self.drain is None:
            self.sessions.draining = True
            self.drain = Drain(
                self.reactor,
                self.settings.drain_seconds,
                rooms=lambda: list(self.sessions.rooms),
                empty=self.sessions.room_empty,
                end=self.sessions.end_room,
                announce=lambda deadline: self.sessions.announce_drain(max(deadline - self.reactor.seconds(), 0.0)),
            )
        return self.drain.start()


def _port_taken(flag: str, port: int, host: str, exc: CannotListenError) -> PortInUseError:
    """The one-line error of a port taken after ``probe_ports`` let go of it (a race with another process)."""
    return PortInUseError(
        f"{flag} port {port} on {host} is in use ({exc.socketError}): choose another with --{flag}-port"
    )


def watch_url(server: RehearsalServer, code: str | None = None) -> str:
    """The URL of the watch page and mentor console on this server (with an invite code: a link that joins)."""
    host = server.settings.http_host
    host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "", "::1", "::") else host
    host = f"[{host}]" if ":" in host else host
    url = f"{server.http_scheme}://{host}:{server.http_port}/"
    return f"{url}?code={code}" if code else url


def serve(settings: Settings, *, setup: Callable[[RehearsalServer], None] | None = None) -> int:
    """Run a RehearsalServer until SIGINT/SIGTERM, then drain (``start_drain``: rooms end when empty or
    after ``settings.drain_seconds``), disconnect everybody and stop. A second signal stops at once.
    ``setup(server)`` runs before it starts (e.g. a load run's tick observer). Returns 0."""
    from twisted.internet import reactor

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    server = RehearsalServer(settings, reactor)
    if setup is not None:
        setup(server)
    for spec in (TOKEN_KEY, ADMIN_CREDENTIAL):
        where = f"environment {spec.env_var}" if os.environ.get(spec.env_var) else str(server.data_dir / spec.name)
        log.info("secret %s: %s", spec.name, where)
    log.info("admin credential file: %s (send it as 'Authorization: Bearer <contents>')", server.credential_path)
    log.info("warming up the physics and snapshot kernels (about 45 s the first time, a few with numba's cache)")
    server.start(progress=log.info)
    log.info(
        "listening udp=%s http=%s:%d (public address %s)",
        server.udp_address,
        server.settings.http_host,
        server.http_port,
        server.settings.public_address,
    )
    if server.webtransport is not None:
        log.info("webtransport udp=%s:%d", server.settings.http_host, server.webtransport.port)
    log.info("watch page and mentor console: %s (enter a mentor or observer invite code)", watch_url(server))
    log.info(
        "debriefs of finished sessions: %sdebrief (a mentor's debrief link, or the admin credential)", watch_url(server)
    )
    state = {"signals": 0, "stopping": False}

    def stop(_: object = None) -> None:  # on the reactor thread
        if state["stopping"]:
            return
        state["stopping"] = True
        server.stop().addBoth(lambda _: reactor.stop())

    def drain(signum: int) -> None:  # on the reactor thread
        log.info("signal %d: draining (up to %.1f s)", signum, server.settings.drain_seconds)
        server.start_drain().addBoth(stop)

    def stop_now(signum: int) -> None:  # on the reactor thread
        log.info("signal %d again: stopping now", signum)
        stop()

    def shutdown(signum: int, frame: object) -> None:
        """The signal handler only schedules: logging from inside a handler can interleave with (or, at
        exit, hit the closed stream of) a log call the main thread was in the middle of."""
        state["signals"] += 1
        reactor.callFromThread(drain if state["signals"] == 1 else stop_now, signum)

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)
    reactor.run(installSignalHandlers=False)
    log.info("stopped: %s", {k: v for k, v in server.counters.items()})
    return 0
