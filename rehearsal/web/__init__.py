"""The browser side of the rehearsal server: the watch page and mentor console, and its WebSocket link.

``rehearsal.web.websocket``: the ``/ws`` endpoint (autobahn, twisted flavour); each socket is a ``Link`` into
the server's connections after a join with an invite code. ``rehearsal.web.site``: the twisted.web resources
(the page, its static files, the endpoint) the composition root mounts on the server's HTTP port.
"""
