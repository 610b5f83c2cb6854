"""The in-process observer cost harness (rehearsal.web.observer_cost) drives the real path: autobahn sockets
joined to a real room get its one shared snapshot frame, a baseline once written, and their masked acks reach
the room (dating each page's view)."""

from __future__ import annotations

from twisted.internet.task import Clock

from rehearsal.links import next_link_key
from rehearsal.observer_stream import SHARED_OBSERVERS
from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings
from rehearsal.web import observer_cost
from rehearsal.web.websocket import WatchEndpoint


def test_observers_get_the_shared_frame_a_baseline_once_written_and_their_acks_reach_the_room(tmp_path):
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    try:
        session = server.create_session("basic_skills")
        live = server.rooms[session]
        live.ticker.stop()
        endpoint = WatchEndpoint(Clock(), None, server.connections, next_key=next_link_key)  # type: ignore[arg-type]
        pages = [observer_cost._Observer(endpoint, server, session, 100 + i) for i in range(2)]
        assert len(live.observers) == 2
        server.publisher.publish(live, None)
        assert (live.sync.clients[SHARED_OBSERVERS].acked_seq >= 0).all()  # written to both: a baseline
        frames = [page.take_frames() for page in pages]
        assert frames[0][-1] == frames[1][-1]  # the same snapshot bytes to both
        acked = {}
        for _ in range(observer_cost.ACK_EVERY):  # each page acks once in ACK_EVERY snapshots
            for page, f in zip(pages, frames, strict=True):
                frame = page.ack_frame(f)
                if frame is not None:
                    page.protocol.dataReceived(frame)  # through autobahn's parser to the room
                    acked[page.link.key] = page.newest
            server.publisher.publish(live, None)
            frames = [page.take_frames() for page in pages]
        assert len(acked) == 2
        for key, newest in acked.items():
            assert server.connections.clients[key].ack_base == newest
    finally:
        server.stop()


def test_client_frames_are_masked_and_sized_as_a_browser_sends_them():
    frame = observer_cost.client_frame(b"x" * 200)
    assert frame[0] == 0x82 and frame[1] == 0x80 | 126 and int.from_bytes(frame[2:4], "big") == 200
    mask, body = frame[4:8], frame[8:]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == b"x" * 200
