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
        lifecycle = AgonesLifecycle(AgonesSdk())
    member = FleetMember(directory, process_id, capacity=capacity, agones=lifecycle)

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
