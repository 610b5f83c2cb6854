"""Haptic devices: the simulated hand's energy bookkeeping, and OpenHaptics loaded only when present."""

import ctypes

import numpy as np
import pytest

from netcode.thin_client.haptics_devices import (
    HD_CURRENT_FORCE,
    HD_CURRENT_POSITION,
    DeviceUnavailableError,
    HapticDevice,
    OpenHapticsDevice,
    SimulatedHand,
    open_device,
)


def test_the_simulated_hand_follows_its_intent_and_counts_the_devices_work():
    for push, sign in ((0.5, 1), (-0.5, -1)):
        hand = SimulatedHand(lambda t: np.array([0.01 * t, 0, 0]), arm_stiffness=1e4, arm_damping=60.0)
        assert isinstance(hand, HapticDevice)
        hand.apply_force(np.array([push, 0, 0]), 0.0)  # along the motion: energy into the hand; against: out
        x = hand.read_position(1.0)
        assert x[0] == pytest.approx(0.01 + push / 1e4, abs=2e-4)
        assert np.sign(hand.work) == sign and abs(hand.work) == pytest.approx(0.5 * 0.01, rel=0.1)
    hand.read_position(1e6)  # a stalled caller: bounded work, not 1e10 substeps
    with pytest.raises(ValueError):
        SimulatedHand(lambda t: np.zeros(3), mass=0)


def test_openhaptics_absent_fails_clearly_not_at_import():
    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    with pytest.raises(DeviceUnavailableError, match=r"OpenHaptics .* not installed"):
        OpenHapticsDevice(loader=missing)
    with pytest.raises(DeviceUnavailableError, match="unknown haptic device family"):
        open_device("phantom-of-the-opera")


class FakeHD:
    """The few HD calls the adapter makes, recorded (an arm at (10, 20, 30) mm)."""

    def __init__(self, handle=0):
        self.handle, self.forces, self.frames, self.disabled = handle, [], 0, False
        self.enabled = []

        class Fn:
            def __init__(self, f):
                self.f, self.restype, self.argtypes = f, None, None

            def __call__(self, *a):
                return self.f(*a)

        self.hdInitDevice = Fn(lambda name: self.handle)
        self.hdEnable = Fn(self.enabled.append)
        self.hdBeginFrame = Fn(lambda h: None)
        self.hdEndFrame = Fn(self._end)
        self.hdGetDoublev = Fn(self._get)
        self.hdSetDoublev = Fn(self._set)
        self.hdDisableDevice = Fn(lambda h: setattr(self, "disabled", True))

    def _end(self, h):
        self.frames += 1

    def _get(self, code, buf):
        assert code == HD_CURRENT_POSITION
        buf[0], buf[1], buf[2] = 10.0, 20.0, 30.0

    def _set(self, code, buf):
        assert code == HD_CURRENT_FORCE
        self.forces.append([buf[0], buf[1], buf[2]])


def test_openhaptics_maps_millimetres_to_world_metres_and_renders_forces():
    hd = FakeHD()
    device = OpenHapticsDevice(loader=lambda name: hd, library="libHD.so", origin=np.array([1.0, 0, 0]))
    assert device.read_position(0.0) == pytest.approx([1.01, 0.02, 0.03])
    device.apply_force(np.array([0.1, 0.2, np.nan]), 0.0)  # non-finite: nothing rendered
    device.apply_force(np.array([0.1, 0.2, 0.3]), 0.0)
    assert hd.forces == [[0, 0, 0], [0.1, 0.2, 0.3]]
    device.close()
    assert hd.disabled and hd.forces[-1] == [0, 0, 0]


def test_openhaptics_without_a_device_says_so():
    with pytest.raises(DeviceUnavailableError, match="no device"):
        OpenHapticsDevice(loader=lambda name: FakeHD(handle=0xFFFFFFFF), library="libHD.so")
    assert ctypes.c_double  # the adapter imports only the standard library
