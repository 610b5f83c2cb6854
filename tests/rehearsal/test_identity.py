"""Participant ids: random, and their hands' instrument ids fit an int64 and miss the physics' pseudo-instruments."""

from physics.suturing import HOLD_ID_BASE, MAX_HOLDS
from rehearsal.hands import HANDS, instrument_id
from rehearsal.identity import PARTICIPANT_ID_MIN, Identity, new_participant_id
from rehearsal.roles import Role


def test_new_ids_are_distinct_and_their_instruments_fit_an_int64_above_the_hold_points():
    ids = {new_participant_id() for _ in range(200)}
    assert len(ids) == 200
    for pid in ids:
        assert pid >= PARTICIPANT_ID_MIN
        for hand in HANDS:
            iid = instrument_id(pid, hand)
            assert HOLD_ID_BASE + MAX_HOLDS <= iid < 2**63


def test_an_identity_with_a_new_id_round_trips_through_user_data():
    identity = Identity("s1", new_participant_id(), Role.ASSISTANT_SURGEON, "Dr A")
    assert Identity.from_user_data(identity.to_user_data()) == identity
