"""The fleet's two kinds of process, as the CLI starts them: a game server in the fleet (``serve_member``) and
the join service (``serve_join_service``). Both read the fleet's secrets from the environment or their data
folder (``rehearsal.secrets_store``): every process of one fleet must share them (the supervisor hands them on).
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any

from rehearsal.fleet.agones import PORT_ENV, AgonesLifecycle, AgonesSdk
from rehearsal.fleet.directory import DEFAULT_NAMESPACE, Directory
from rehearsal.fleet.failover import FailoverLoop
from rehearsal.fleet.join_router import JoinRouter, join_site_root
from rehearsal.fleet.member import FleetMember
from rehearsal.invites import code_key
from rehearsal.secrets_store import ADMIN_CREDENTIAL, TOKEN_KEY, server_secret
from rehearsal.settings import Settings

log = logging.getLogger("rehearsal.fleet")

HTTP_URL_ENV = "REHEARSAL_FLEET_HTTP_URL"  # where the join service reaches a process (default: where it listens)
SDK_WAIT_SECONDS = 30.0  # the SDK sidecar may start after the game server (Agones' docs: retry)


def public_address_from_agones(sdk: AgonesSdk, settings: Settings) -> Settings:
    """Under Agones the netcode port is the one Agones gave the GameServer (``portPolicy: Passthrough``) and the
    public address the node's: both from ``GET /gameserver`` (retried while the sidecar starts). A GameServer
    without them keeps the settings as they are (logged)."""
    import time
    from dataclasses import replace

    from rehearsal.fleet.agones import AgonesError

    deadline = time.monotonic() + SDK_WAIT_SECONDS
    while True:
        try:
            status = sdk.game_server().get("status", {})
            break
        except AgonesError as exc:
            if time.monotonic() >= deadline:
                log.warning("agones: no GameServer from the SDK (%s): keeping the configured address", exc)
                return settings
            time.sleep(1.0)
    ports = [p for p in status.get("ports") or [] if p.get("name") == "netcode"] or list(status.get("ports") or [])
    address = status.get("address") or ""
    if not ports or not address:
        log.warning("agones: the GameServer names no address or port yet: keeping the configured address")
        return settings
    port = int(ports[0]["port"])
    log.info("agones: public address %s:%d (from the GameServer)", address, port)
    return replace(settings, udp_port=port, public_host=address)


def serve_member(
    settings: Settings,
    redis_url: str,
    process_id: str,
    *,
    capacity: int,
    namespace: str = DEFAULT_NAMESPACE,
    agones: bool = False,
) -> int:
    """``rehearsal serve --redis URL``: one game-server process of the fleet, until drained (``server.serve``)."""
    import os

    from rehearsal.server import serve

    directory = Directory.from_url(redis_url, namespace=namespace)
    lifecycle = None
    if agones or os.environ.get(PORT_ENV):
        sdk = AgonesSdk()
        settings = public_address_from_agones(sdk, settings)
        lifecycle = AgonesLifecycle(sdk)
    member = FleetMember(
        directory, process_id, capacity=capacity, agones=lifecycle, http_url=os.environ.get(HTTP_URL_ENV, "")
    )

    def setup(server: Any) -> None:
        from twisted.internet import reactor

        member.prepare(server)
        reactor.callWhenRunning(member.attach, server)
        reactor.addSystemEventTrigger("before", "shutdown", member.stop)

    log.info("fleet process %s (capacity %d rooms) on directory %s", process_id, capacity, namespace)
    return serve(settings, setup=setup)


def serve_join_service(
    data_dir: Path, redis_url: str, host: str, port: int, *, namespace: str = DEFAULT_NAMESPACE
) -> int:
    """``rehearsal join-service``: the fleet's join API and its failover loop, until SIGINT/SIGTERM."""
    from twisted.internet import reactor
    from twisted.web.server import Site

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    directory = Directory.from_url(redis_url, namespace=namespace)
    router = JoinRouter(
        directory, code_key(server_secret(data_dir, TOKEN_KEY)), server_secret(data_dir, ADMIN_CREDENTIAL).hex()
    )
    failover = FailoverLoop(directory).start()
    reactor.suggestThreadPoolSize(16)  # each request waits on Redis and on a process's HTTP in the pool
    listening = reactor.listenTCP(port, Site(join_site_root(router)), interface=host)
    log.info("join service listening http=%s:%d (directory %s)", host, listening.getHost().port, namespace)
    sys.stdout.flush()

    def stop(signum: int, frame: object) -> None:
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    reactor.run(installSignalHandlers=False)
    failover.stop()
    log.info("join service stopped: %s; failover %s", dict(router.counters), dict(failover.counters))
    return 0
