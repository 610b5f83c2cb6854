"""The capacity ramp's verdicts that do not need a server: whether a phase's machine was saturated."""

from loadtests.capacity import saturated


def test_a_phase_is_saturated_when_every_core_was_nearly_busy():
    assert saturated({"machine_cpu_percent": 185.0, "cores": 2}) is True
    assert saturated({"machine_cpu_percent": 150.0, "cores": 2}) is False
    assert saturated({}) is None  # not sampled
