"""The forces message: quantization, saturation and validation of its fields."""

import numpy as np
import pytest

from netcode.messaging.messages import DEFAULT_REGISTRY, Message
from netcode.protocol.forces import (
    FORCE_LIMIT,
    FORCE_QUANTUM,
    MAX_FORCE_INSTRUMENTS,
    ForceReportError,
    force_fields,
    force_report_from_fields,
    register_force_types,
)

REGISTRY = register_force_types(DEFAULT_REGISTRY.copy())


def test_round_trip_within_a_quantum_and_saturated():
    rng = np.random.default_rng(1)
    forces = rng.uniform(-5, 5, (3, 3))
    forces[2, 0] = 1e6  # saturates
    grasp = rng.uniform(-2, 2, (3, 3))
    positions = rng.uniform(-0.1, 0.1, (3, 3))
    fields = force_fields(7, 1.5, np.array([32768, 32769, 32770]), forces, grasp, positions)
    data = REGISTRY.encode(Message("forces", fields))
    report = force_report_from_fields(REGISTRY.decode(data).fields)
    assert report.tick == 7 and report.server_time == 1.5
    assert report.objects.tolist() == [32768, 32769, 32770]
    expected = forces.copy()
    expected[2, 0] = FORCE_LIMIT
    assert np.abs(report.forces - expected).max() <= FORCE_QUANTUM / 2 + 1e-9
    assert np.abs(report.grasp - grasp).max() <= FORCE_QUANTUM / 2 + 1e-9
    assert np.allclose(report.positions, positions, atol=1e-7)
    assert report.of(32769)[0].tolist() == report.forces[1].tolist()
    assert report.of(5) is None


def test_a_full_message_fits_one_packet():
    n = MAX_FORCE_INSTRUMENTS
    z = np.zeros((n, 3))
    data = REGISTRY.encode(Message("forces", force_fields(1 << 30, 1e6, np.arange(n) + 32768, z, z, z)))
    assert len(data) < 1100
    with pytest.raises(ValueError, match="at most"):
        force_fields(0, 0.0, np.arange(n + 1), np.zeros((n + 1, 3)), np.zeros((n + 1, 3)), np.zeros((n + 1, 3)))


def test_inconsistent_fields_are_refused():
    good = force_fields(0, 0.0, np.array([1]), np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 3)))
    with pytest.raises(ForceReportError):
        force_report_from_fields({**good, "forces": b"\0" * 4})
    with pytest.raises(ForceReportError):
        force_report_from_fields({**good, "objects": b"\0" * 3})
    with pytest.raises(ForceReportError, match="non-finite"):
        force_report_from_fields({**good, "positions": np.full(3, np.nan, "<f4").tobytes()})
