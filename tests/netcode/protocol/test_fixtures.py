"""The fixtures message: a set round-trips through the registry; inconsistent fields are refused whole."""

import numpy as np
import pytest

from netcode.messaging.messages import Message, MessageRegistry
from netcode.protocol.fixture_shapes import Capsule, Plane, Polyline, Sphere
from netcode.protocol.fixtures import (
    Fixture,
    FixtureSet,
    FixtureSetError,
    fixture_fields,
    fixture_set_from_fields,
    register_fixture_types,
)
from tests.netcode.protocol.test_fixture_shapes import box_mesh


def _set() -> FixtureSet:
    return FixtureSet(
        3,
        (
            Fixture("keepout", "forbidden", Capsule((0, 0.01, 0.02), (0.06, 0.01, 0.02), 0.005), 2000.0),
            Fixture("zone", "no_energy", box_mesh([0, 0, 0], [0.01, 0.02, 0.03], margin=0.002), 2000.0, False),
            Fixture("ball", "forbidden", Sphere((0.1, 0.2, 0.3), 0.01), 500.0),
            Fixture("plane", "guide", Plane((0, 0.02, 0), (0, 1, 0)), 150.0),
            Fixture("path", "guide", Polyline(np.array([[0, 0, 0], [0.1, 0, 0], [0.1, 0.1, 0]])), 200.0),
        ),
    )


def test_a_fixture_set_round_trips_through_the_registry():
    registry = register_fixture_types(MessageRegistry())
    decoded = registry.decode(registry.encode(Message("fixtures", fixture_fields(_set()))))
    out = fixture_set_from_fields(decoded.fields)
    assert out.revision == 3 and [f.id for f in out.active("forbidden")] == ["keepout", "ball"]
    keepout, zone, ball, plane, path = out.fixtures
    assert keepout.shape.radius == pytest.approx(0.005) and zone.active is False
    assert np.allclose(zone.shape.vertices, _set().fixtures[1].shape.vertices, atol=1e-7)
    assert zone.shape.margin == pytest.approx(0.002) and zone.shape.triangles.shape == (12, 3)
    assert np.allclose(ball.shape.center, (0.1, 0.2, 0.3)) and ball.stiffness == 500.0
    assert plane.shape_name == "plane" and path.shape.points.shape == (3, 3)
    probe = np.array([0.005, 0.021, 0.015])
    assert zone.shape.distance(probe)[0] == pytest.approx(_set().fixtures[1].shape.distance(probe)[0], abs=1e-6)


def _fields(**change):
    fields = fixture_fields(_set())
    fields.update(change)
    return fields


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"ids": ["a"]}, "equally long"),
        ({"roles": ["forbidden", "no_energy", "forbidden", "guide", "nope"]}, "unknown fixture role"),
        ({"shapes": ["plane", "mesh", "sphere", "plane", "path"]}, "a forbidden fixture cannot be a 'plane'"),
        ({"active": [1, True, True, True, True]}, "active booleans"),
        ({"stiffness": [float("nan"), 1.0, 1.0, 1.0, 1.0]}, "finite"),
        ({"params": [b"\x00" * 12, *fixture_fields(_set())["params"][1:]]}, "a capsule has 7 parameters, got 3"),
        ({"triangles": [b"", b"\xff" * 12, b"", b"", b""]}, "indices must name its vertices"),
        ({"params": [np.array([0, 0, 0, 1, 0, 0, -1], "<f4").tobytes(), *_fields()["params"][1:]]}, "radius"),
    ],
)
def test_inconsistent_fields_are_refused(change, error):
    with pytest.raises(FixtureSetError, match=error):
        fixture_set_from_fields(_fields(**change))
