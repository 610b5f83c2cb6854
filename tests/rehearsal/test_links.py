"""The Link seam: keys that never meet, and the UDP link as a thin view of ServerChannels."""

from netcode.messaging.channels import Channel
from netcode.messaging.messages import Message
from rehearsal.links import FIRST_LINK_KEY, UDP, UdpLink, next_link_key


class _Channels:
    def __init__(self) -> None:
        self.sent, self.flushed = [], []

    def send(self, index, channel, message):
        self.sent.append((index, channel, message))
        return index == 3

    def flush(self, indices, now):
        self.flushed.append((tuple(indices), now))

    def stats(self, index):
        return f"stats of {index}"


def test_keys_of_other_transports_are_unique_and_above_every_netcode_index():
    keys = [next_link_key() for _ in range(100)]
    assert len(set(keys)) == 100 and min(keys) >= FIRST_LINK_KEY == 1 << 20


def test_a_udp_link_sends_flushes_and_closes_its_own_client_slot():
    channels, closed = _Channels(), []
    link = UdpLink(channels, 3, closed.append)
    assert link.key == 3 and link.transport == UDP
    assert link.send(Channel.RELIABLE, Message("pong", {"time": 1.0})) is True
    assert channels.sent == [(3, Channel.RELIABLE, Message("pong", {"time": 1.0}))]
    assert UdpLink(channels, 4, closed.append).send(Channel.UNRELIABLE, b"x") is False  # as ServerChannels says
    link.flush(2.5)
    assert channels.flushed == [((3,), 2.5)]
    assert link.stats() == "stats of 3"
    link.close("bye")
    assert closed == [3]
