"""World checkpoints: capture, bytes and restore give a world that steps bit for bit like the original."""

from dataclasses import fields

import numpy as np
import pytest

from physics import Control, InstrumentInput, step
from physics.checkpoint import CheckpointError, capture, from_bytes, restore, to_bytes
from physics.instruments import grasper, look_rotation, scissors
from physics.model import Model, add_anchors, scale_stiffness
from tests.physics.scenes import DOWN, block

ACROSS = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))
GRASPER, SCISSORS = grasper(), scissors()


def _control(frame: int) -> Control:
    """A grasp at one end of the block, lifted, while scissors close across its middle (frames 3..5)."""
    lift = min(frame, 20) * 0.0002
    jaw = 0.8 if frame < 2 else 0.0
    blades = 1.0 if frame < 3 else (0.5 if frame == 3 else 0.0)
    return Control(
        [
            InstrumentInput(1, GRASPER, np.array([-0.015, 0.022 + lift, 0.0]), DOWN, jaw, False),
            InstrumentInput(2, SCISSORS, np.array([0.0013, 0.0158, 0.0]), ACROSS, blades, False),
        ]
    )


def _assert_same_world(a_model, a_state, b_model, b_state):
    for f in fields(Model):
        value = getattr(a_model, f.name)
        if isinstance(value, np.ndarray):
            assert value.dtype == getattr(b_model, f.name).dtype, f.name
            np.testing.assert_array_equal(value, getattr(b_model, f.name), err_msg=f.name, strict=True)
    assert a_model.epoch == b_model.epoch
    for name in ("x", "v", "damage"):
        assert getattr(a_state, name).tobytes() == getattr(b_state, name).tobytes(), name
    assert a_state.frame == b_state.frame and a_state.time == b_state.time
    assert sorted(a_state.instruments) == sorted(b_state.instruments)
    for iid, inst in a_state.instruments.items():
        other = b_state.instruments[iid]
        assert inst.spec.same_as(other.spec)
        assert inst.position.tobytes() == other.position.tobytes() and inst.jaw == other.jaw
        assert (inst.grasp is None) == (other.grasp is None)
        if inst.grasp is not None:
            assert inst.grasp.vertices.tobytes() == other.grasp.vertices.tobytes()
            assert inst.grasp.local.tobytes() == other.grasp.local.tobytes()


def test_a_restored_world_steps_bit_for_bit_like_the_original():
    model, state = block(size=(0.04, 0.012, 0.02), cells=(10, 4, 5))
    scale_stiffness(model, np.arange(model.n_tets) % 3 == 0, 2.5)  # a complication changed the model
    add_anchors(model, np.array([0, 1, 2]), model.rest_positions[[0, 1, 2]] + 0.001)
    frame = 0
    for frame in range(8):
        step(model, state, _control(frame), 1 / 60, 8)
    assert model.epoch > 0, "the scissors cut before the checkpoint"
    assert state.instruments[1].grasp is not None, "the grasp is held at the checkpoint"
    checkpoint = capture(model, state)
    copy_model, copy_state = restore(from_bytes(to_bytes(checkpoint)))
    _assert_same_world(model, state, copy_model, copy_state)
    for later in range(frame + 1, frame + 31):
        a = step(model, state, _control(later), 1 / 60, 8)
        b = step(copy_model, copy_state, _control(later), 1 / 60, 8)
        assert [(e.kind, e.instrument) for e in a.events] == [(e.kind, e.instrument) for e in b.events]
    _assert_same_world(model, state, copy_model, copy_state)
    assert state.x.tobytes() != checkpoint.arrays["state.x"].tobytes()  # it did move on from the checkpoint


def test_capture_copies_so_the_world_can_step_on():
    model, state = block()
    checkpoint = capture(model, state)
    before = checkpoint.arrays["state.x"].copy()
    state.x += 1.0
    model.alive[0] = False
    assert checkpoint.arrays["state.x"].tobytes() == before.tobytes() and checkpoint.arrays["model.alive"][0]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b[: len(b) // 2],
        lambda b: b"\x93garbage",
        lambda b: b"",
    ],
)
def test_damaged_bytes_are_refused_with_a_clear_error(tamper):
    model, state = block()
    with pytest.raises(CheckpointError):
        restore(from_bytes(tamper(to_bytes(capture(model, state)))))


def test_a_checkpoint_over_the_size_limit_is_refused():
    model, state = block()
    data = to_bytes(capture(model, state))
    with pytest.raises(CheckpointError, match="limit"):
        from_bytes(data, max_bytes=len(data) - 1)
