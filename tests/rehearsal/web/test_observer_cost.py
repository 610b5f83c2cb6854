"""The in-process observer cost harness (rehearsal.web.observer_cost) drives the real path: autobahn sockets
joined to a real room get its one shared snapshot frame, and their masked acks reach the shared stream."""

from __future__ import annotations

from twisted.internet.task import Clock

from rehearsal.links import next_link_key
from rehearsal.observer_stream import SHARED_OBSERVERS
from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings
from rehearsal.web import observer_cost
from rehearsal.web.websocket import WatchEndpoint


def test_observers_get_the_shared_frame_and_their_acks_make_baselines(tmp_path):
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    try:
        session = server.create_session("basic_skills")
        live = server.rooms[session]
        live.ticker.stop()
        endpoint = WatchEndpoint(Clock(), None, server.connections, next_key=next_link_key)  # type: ignore[arg-type]
        pages = [observer_cost._Observer(endpoint, server, session, 100 + i) for i in range(2)]
        assert len(live.observers) == 2
        server.publisher.publish(live, None)
        frames = [page.take_frames() for page in pages]
        assert frames[0][-1] == frames[1][-1]  # the same snapshot bytes to both
        acks = [page.ack_frame(f) for page, f in zip(pages, frames, strict=True)]
        assert all(a is not None for a in acks)  # the first snapshot is acked at once (as app.js does)
        shared = live.sync.clients[SHARED_OBSERVERS]
        pages[0].protocol.dataReceived(acks[0])
        assert (shared.acked_seq < 0).all()  # one of two acked: no baseline yet
        pages[1].protocol.dataReceived(acks[1])
        assert (shared.acked_seq >= 0).all()  # through autobahn's parser to the group and the codec
    finally:
        server.stop()


def test_client_frames_are_masked_and_sized_as_a_browser_sends_them():
    frame = observer_cost.client_frame(b"x" * 200)
    assert frame[0] == 0x82 and frame[1] == 0x80 | 126 and int.from_bytes(frame[2:4], "big") == 200
    mask, body = frame[4:8], frame[8:]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == b"x" * 200
