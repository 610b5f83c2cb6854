"""loadtests.attack: the judging of an attack from metric deltas, the witness's windows, the spoofing checksum."""

import json
import struct

import numpy as np

from loadtests.attack import ATTACK_FUNCTIONS, ATTACKS, EXPECTED, REFUSALS, Witness, judge, udp_checksum


def test_every_attack_has_a_function_and_what_it_must_leave_in_the_metrics():
    assert set(ATTACKS) == set(ATTACK_FUNCTIONS) == set(EXPECTED)


def test_an_attack_passes_only_when_its_refusals_were_counted():
    before = {(REFUSALS, 'reason="gaze_rate"'): 5.0}
    after = {(REFUSALS, 'reason="gaze_rate"'): 9.0}
    counted, ok = judge("observer_input_flood", {}, before, after)
    assert ok and counted[f'{REFUSALS}{{reason="gaze_rate"}}'] == 4.0
    assert not judge("observer_input_flood", {}, after, after)[1]


def test_spoofing_fails_if_the_witness_was_rate_limited():
    drops = "rehearsal_dropped_packets_total"
    after = {(drops, 'reason="decrypt_failed"'): 10.0, (drops, 'reason="rate_limited"'): 1.0}
    assert not judge("spoofed_garbage", {}, {}, after)[1]
    assert judge("spoofed_garbage", {}, {}, {(drops, 'reason="decrypt_failed"'): 10.0})[1]


def test_the_witness_window_counts_arrivals_and_the_worst_gap(tmp_path):
    witness = Witness.__new__(Witness)
    witness.folder = tmp_path
    np.save(tmp_path / "arrivals.npy", np.array([10.0 + k / 60 for k in range(60)] + [11.5]))
    seen = witness.window(10.0, 12.0)
    assert seen["snapshots_per_second"] == 30.5 and seen["worst_gap_ms"] == 516.7
    (tmp_path / "state").write_text(json.dumps({"welcomed": True}))
    assert witness.ready(0.5)


def test_theudp_checksum_is_the_ones_complement_sum():
    data = struct.pack("!HHHH", 1, 2, 3, 0)
    assert udp_checksum(data) == (~(1 + 2 + 3)) & 0xFFFF
    assert udp_checksum(b"\x01") == (~0x0100) & 0xFFFF


def test_room_capacity_fails_when_the_full_room_still_minted_tokens():
    full = {(REFUSALS, 'reason="room_full"'): 24.0}
    detail = {"admitted": 16, "tokens": 16, "newcomer_to_the_other_room_admitted": True}
    assert judge("room_capacity", detail, {}, full)[1]
    assert not judge("room_capacity", detail | {"tokens": 40}, {}, full)[1]  # refused only at the handshake
    assert not judge("room_capacity", detail | {"newcomer_to_the_other_room_admitted": False}, {}, full)[1]
