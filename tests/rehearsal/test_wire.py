"""rehearsal.wire: every command's arguments are bounded (COMMAND_ARGS), so its event always fits the encoder."""

import pytest

from netcode.messaging.messages import Message, MessageError
from rehearsal.roles import Action
from rehearsal.wire import COMMAND_ARGS, MAX_ANNOTATION_TEXT, REHEARSAL_REGISTRY


def test_every_command_has_an_argument_schema():
    commands = {a.value for a in Action} - {"drive_instrument", "watch"}
    assert commands <= {t.name for t in COMMAND_ARGS.types()}


def test_the_largest_accepted_arguments_make_a_small_event():
    args = COMMAND_ARGS.validate(
        "annotate",
        {
            "kind": "k" * 16,
            "position": [1e300] * 3,
            "direction": [-1e300] * 3,
            "text": "\U0001f600" * MAX_ANNOTATION_TEXT,
        },
    )
    data = REHEARSAL_REGISTRY.encode(
        Message("event", {"kind": "annotate", "server_time": 1.0, "by": 1, "detail": args})
    )
    assert len(data) < 2048


@pytest.mark.parametrize(
    ("action", "args"),
    [
        ("annotate", {"position": [0.0, 0.0]}),
        ("annotate", {"position": [0.0, 0.0, 0.0, 0.0]}),
        ("annotate", {"position": [0.0, float("nan"), 0.0]}),
        ("annotate", {"text": "x" * (MAX_ANNOTATION_TEXT + 1)}),
        ("annotate", {"extra": 1}),
        ("pause", {"anything": 1}),
        ("hand_instrument", {"to": "7"}),
        ("take_over_instrument", {"release": "yes"}),
        ("inject_complication", {"complication": "c" * 65}),
        ("remove_participant", {"who": [1]}),
    ],
)
def test_out_of_bound_arguments_are_refused(action, args):
    with pytest.raises(MessageError):
        COMMAND_ARGS.validate(action, args)
