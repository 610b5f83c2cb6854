"""Hands and physics instrument ids: the one place that turns (participant, hand) into an instrument id and back.

Each participant has two hands; the physics engine knows their instruments as ``participant * 2 + hand
index`` (``Room.control`` builds them, physics events name them). Snapshot object ids are another thing
(``LiveRoom.object_id``: allocated per room from ``INSTRUMENT_OBJECT_BASE``).
"""

from __future__ import annotations

HANDS = ("left", "right")


def instrument_id(participant: int, hand: str) -> int:
    """The physics instrument id of a participant's hand (``ValueError`` for a hand not in ``HANDS``)."""
    return participant * len(HANDS) + HANDS.index(hand)


def instrument_holder(instrument: int) -> tuple[int, str]:
    """(participant, hand) of a physics instrument id."""
    participant, hand = divmod(instrument, len(HANDS))
    return participant, HANDS[hand]


def holder_participant(instrument: int) -> int:
    """The participant whose hand drives a physics instrument id."""
    return instrument // len(HANDS)
