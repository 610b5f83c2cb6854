"""The bot headsets (rehearsal.bots.Headset) against a real server process (fixture ``e2e_server``)."""

from __future__ import annotations

from tests.rehearsal.e2e_helpers import Team, connect, join, new_session, pump


def test_a_bot_acks_the_thread_so_its_thread_stream_goes_to_deltas(e2e_server):
    """In the suturing room a bot applies the thread (snap_suture, snap_thread) and acks it like the thin client,
    so the server sends it deltas against what it acknowledged (a full record while the thread moves too much
    for a delta to be smaller: the server sends the smaller of the two). A bot that does not ack gets full
    records only."""
    server = e2e_server
    session = new_session(server, "suturing")
    with Team(connect(join(server, session, role, role)) for role in ("lead_surgeon", "scrub_nurse")) as team:
        acking, silent = team
        silent.client.send_thread_ack = lambda channels: False  # as the bots were: no thread_ack
        enough = pump(team, lambda: acking.thread_frames["delta"] >= 20 and silent.thread_frames["full"] >= 20, 30.0)
        assert enough, (acking.thread_frames, silent.thread_frames, server.log()[-3000:])
        assert acking.messages["snap_suture"] and acking.client.suture is not None
        assert acking.thread_frames["invalid"] == 0 and acking.client.dropped["thread"] == 0
        assert silent.thread_frames["delta"] == 0
        assert acking.client.thread_decoder.points().shape == (51, 3)  # the scenario's 15 cm of 3 mm segments
