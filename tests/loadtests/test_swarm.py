"""Small versions of the load runs against a real server subprocess on loopback (a few clients, seconds).

They assert behaviour (connected, events exactly once and in order, the relay's client recovers after a
burst, garbage is dropped and counted), never speed: the runs measure speed.
"""

from __future__ import annotations

import json

import pytest

from loadtests.flood import flood
from loadtests.impaired import run_impaired
from loadtests.relay import Impairment
from loadtests.server import LoadServer, create_room, metric, scrape
from loadtests.swarm import SnapshotAcker, annotation_check, launch, room_checks
from loadtests.team import ACKING_CLIENTS, join_team, team_roles


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = LoadServer(tmp_path_factory.mktemp("load") / "data")
    try:
        proc.wait_listening()
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, proc.log()


def test_team_roles_make_drivers_a_mentor_and_observers():
    assert team_roles(4, 2) == [
        ("lead_surgeon", "drive"),
        ("assistant_surgeon", "drive"),
        ("assistant_surgeon", "drive"),
        ("mentor", "mentor"),
        ("observer", "watch"),
        ("observer", "watch"),
    ]
    assert team_roles(1, 0) == [("lead_surgeon", "drive")]
    assert team_roles(-3, -1) == []


def test_annotation_check_finds_missing_duplicated_and_reordered_events():
    sent = {"m": [(1, 1.0), (2, 2.0), (3, 3.0)]}
    ok = [("annotate", 1.0, "m 1"), ("annotate", 2.0, "m 2"), ("annotate", 3.0, "m 3")]
    assert annotation_check(ok, sent)["exactly_once_in_order"]
    assert annotation_check(ok[1:], sent, joined_at=1.5)["exactly_once_in_order"]  # joined after the first
    assert annotation_check(ok[1:], sent, joined_at=0.5)["missing"] == 1
    assert annotation_check([*ok, ok[1]], sent)["duplicated"] == 1
    assert annotation_check([ok[0], ok[2], ok[1]], sent)["out_of_order"] == 1
    assert annotation_check([ok[0], ok[2]], sent)["missing"] == 1
    assert annotation_check([("annotate", 1.0, None), ("annotate", 1.0, "m x"), ("other", 1.0, 3)], {})["received"] == 0


def test_a_swarm_worker_joins_drives_and_sees_events_exactly_once_in_order(server, tmp_path):
    room = create_room(server, "basic_skills")
    specs = join_team(server, room, 0, team_roles(3, 1))
    result = launch({"seconds": 3.0, "bots": specs, "connect_seconds": 15}, tmp_path).result()
    assert not result.get("error"), result
    bots = result["bots"]
    assert len(bots) == 4 and all(b["welcomed"] for b in bots)
    seen = [(b["name"], b["snapshots"], b["snapshot_errors"], b["undecoded"]) for b in bots]
    assert all(b["snapshots"] > 30 and b["snapshot_errors"] == 0 and b["undecoded"] == 0 for b in bots), seen
    assert all(b["rtt"]["count"] > 0 and b["bytes_received"] > 0 for b in bots)
    assert not any(b["refused"] for b in bots), [b["refused_reasons"] for b in bots]
    checks = room_checks(bots)
    assert checks["annotations_sent"]["r0-ment2"] >= 3
    assert checks["all_exactly_once_in_order"], checks
    json.dumps(result)  # the report is plain JSON


def test_acking_bots_acknowledge_snapshots_without_decoding_them(server, tmp_path):
    room = create_room(server, "basic_skills")
    specs = join_team(server, room, 0, team_roles(3, 2), snapshots=ACKING_CLIENTS)
    assert [s.get("snapshots") for s in specs] == [None, "ack", "ack", "ack", "ack"]  # the lead surgeon decodes
    result = launch({"seconds": 3.0, "bots": specs, "connect_seconds": 15}, tmp_path).result()
    assert not result.get("error"), result
    bots = result["bots"]
    assert all(b["snapshots"] > 30 and b["snapshot_errors"] == 0 and b["undecoded"] == 0 for b in bots)
    assert all(b["rtt"]["count"] > 0 for b in bots)
    assert room_checks(bots)["all_exactly_once_in_order"]


def test_snapshot_acker_acks_like_the_decoder():
    from netcode.sync.snapshot import pack_header

    acker = SnapshotAcker()
    for seq in (5, 7, 6, 7):
        acker.on_snapshot(pack_header(seq, 0.1 * seq, 0, 0))
    assert acker.ack_fields() == {"newest": 7, "bits": 0b11}  # 6 and 5; the repeated 7 counted once
    assert list(acker.applied) == [5, 7, 6]


def test_a_garbage_flood_from_one_address_is_dropped_and_counted(server):
    before = scrape(server.http_port)
    sent = flood("127.0.0.1", server.udp_port, seconds=1.0, rate=2000, seed=3)
    after = scrape(server.http_port)
    dropped = sum(v for (name, _), v in after.items() if name == "rehearsal_dropped_packets_total") - sum(
        v for (name, _), v in before.items() if name == "rehearsal_dropped_packets_total"
    )
    assert sent["sent"] > 500
    assert dropped >= 0.9 * sent["sent"]
    assert metric(after, "rehearsal_handshakes_total", 'outcome="accepted"') == metric(
        before, "rehearsal_handshakes_total", 'outcome="accepted"'
    )
    with pytest.raises(ValueError):
        flood("10.0.0.1", 9, 0.1, 10)


def test_an_impaired_team_keeps_its_events_and_the_impaired_view_recovers(tmp_path):
    bad = Impairment(latency=0.03, jitter=0.01, loss=0.05, reorder=0.02)
    report = run_impaired(tmp_path, seconds=4.0, impairment=bad, join_seconds=4.0, say=lambda line: None)
    assert report["server_exit"] == 0
    checks = report["checks"]
    assert checks["all_connected"] and checks["events_exactly_once_in_order"], report["events_per_bot"]
    assert all(v is not None for v in report["recovery_seconds"].values()), report["recovery_seconds"]
    assert checks["inputs_act"], report["tracking"]
    lane = report["relay"][0]
    assert lane["up"]["lost"] + lane["down"]["lost"] > 0 and lane["up"]["burst_dropped"] > 0
    assert (tmp_path / report["folder"].name / "impaired.json").is_file()
