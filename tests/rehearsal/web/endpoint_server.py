"""A twisted.web site with only the /ws endpoint and a recording stand-in for the server's connections.

Run as a script (a subprocess of test_ws_endpoint.py; arguments: seconds to live, then optionally a PEM
certificate and key to serve TLS): prints ``listening <port> <observer code> <mentor code>``,
then one line per call the endpoint makes (``open``, ``receive``, ``closed``). The stand-in answers a ``ping``
with a ``pong``, a ``command`` with a ``refused`` and closes a link that sends ``disconnect``; nothing else.
"""

from __future__ import annotations

import itertools
import json
import sys

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from netcode.messaging.channels import Channel
from netcode.messaging.messages import Message
from netcode.transport.address import Address
from rehearsal.join_service import JoinService
from rehearsal.roles import Role
from rehearsal.web.site import mount_web
from rehearsal.web.tls import server_tls_options
from rehearsal.web.websocket import WatchEndpoint


class Recorder:
    def __init__(self) -> None:
        self.links = {}

    def _say(self, *parts: object) -> None:
        print(json.dumps(parts), flush=True)

    def open(self, link, identity) -> None:
        self.links[link.key] = link
        self._say("open", link.key, link.transport, identity.role.value, identity.name)
        link.send(Channel.RELIABLE, Message("event", {"kind": "hello", "server_time": 0.0}))

    def receive(self, key: int, message: Message) -> None:
        self._say("receive", key, message.type)
        link = self.links[key]
        if message.type == "ping":
            link.send(Channel.UNRELIABLE, Message("pong", {"time": message.fields["time"]}))
        elif message.type == "command":
            link.send(Channel.RELIABLE, Message("refused", {"request": "command", "reason": "stand-in"}))
        elif message.type == "disconnect":
            link.close("asked to")

    def closed(self, key: int, reason: str) -> None:
        self.links.pop(key, None)
        self._say("closed", key, reason)


def main() -> None:
    service = JoinService(bytes(32), 1, [Address.parse("127.0.0.1:1")])
    codes = service.invite_team("s-test", roles=(Role.OBSERVER, Role.MENTOR), uses=100)
    keys = itertools.count(1 << 20)
    endpoint = WatchEndpoint(reactor, service, Recorder(), next_key=lambda: next(keys)).start()
    site = Site(mount_web(Resource(), endpoint))
    if len(sys.argv) > 3:  # cert and key: HTTPS and WSS
        port = reactor.listenSSL(0, site, server_tls_options(sys.argv[2], sys.argv[3]), interface="127.0.0.1")
    else:
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
    print("listening", port.getHost().port, codes[Role.OBSERVER], codes[Role.MENTOR], flush=True)
    reactor.callLater(float(sys.argv[1]) if len(sys.argv) > 1 else 120.0, reactor.stop)
    reactor.run()


if __name__ == "__main__":
    main()
