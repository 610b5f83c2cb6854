"""The capacity ramp's verdicts that do not need a server: whether a phase's machine was saturated."""

from loadtests.capacity import _saturated


def test_a_phase_is_saturated_when_every_core_was_nearly_busy():
    assert _saturated({"machine_cpu_percent": 185.0, "cores": 2}) is True
    assert _saturated({"machine_cpu_percent": 150.0, "cores": 2}) is False
    assert _saturated({}) is None  # not sampled
