"""Haptic devices for the haptic loop: the ``HapticDevice`` interface, a simulated hand, and OpenHaptics.

Why: the loop (``netcode.thin_client.haptics``) must run the same against a test double and a real arm.
A device reports its end effector's position in the *world* frame (metres, the frame the server's instrument
positions are in: the adapter applies the workspace mapping) and takes the force to render on the hand (N,
world frame). Real device libraries are loaded when a device is opened, never at import, and a missing one
fails with ``DeviceUnavailableError`` saying what to install.

Adding a device family: write a class with ``read_position(now)``, ``apply_force(force, now)`` and
``close()`` (convert its units and frame there; keep both calls non-blocking, they run at 1 kHz), load its
library inside ``__init__`` (ctypes or its Python binding) raising ``DeviceUnavailableError`` when absent, and add
it to ``DEVICE_FAMILIES``. CLIENT.md section 8 has the contract.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np


class DeviceUnavailableError(RuntimeError):
    """A haptic device (or its vendor library) is not present on this machine."""


@runtime_checkable
class HapticDevice(Protocol):
    """What the haptic loop needs of a device (world frame, SI units, non-blocking)."""

    def read_position(self, now: float) -> np.ndarray:
        """The end effector's position (m) at local time ``now`` (s)."""
        ...

    def apply_force(self, force: np.ndarray, now: float) -> None:
        """Render ``force`` (N) on the hand from ``now`` until the next call."""
        ...

    def close(self) -> None: ...


MAX_SIMULATED_GAP = 0.1  # s: the most a SimulatedHand integrates in one call


class SimulatedHand:
    """A hand on a device, as a mass held by the arm's spring and damper to where the person means to be.

    mass (kg: hand + device), arm stiffness (N/m) and damping (N s/m) about ``intent(t)`` (m, world); the
    device's force acts on the mass. Integrated exactly at ``substep`` (semi-implicit Euler) whatever the
    caller's rate; ``work`` is the energy the rendered force put into the hand (J: > 0 means the device pushed
    energy out, an active environment)."""

    def __init__(
        self,
        intent: Callable[[float], np.ndarray],
        *,
        mass: float = 0.1,
        arm_stiffness: float = 150.0,
        arm_damping: float = 1.5,
        substep: float = 1e-4,
        start: float = 0.0,
    ) -> None:
        if not (mass > 0 and arm_stiffness >= 0 and arm_damping >= 0 and substep > 0):
            raise ValueError("mass and substep must be > 0, arm stiffness and damping >= 0")
        self.intent = intent
        self.mass, self.k, self.b, self.substep = mass, arm_stiffness, arm_damping, substep
        self.time = start
        self.x = np.asarray(intent(start), dtype=np.float64).copy()
        self.v = np.zeros(3)
        self.force = np.zeros(3)
        self.work = 0.0
        self.closed = False

    def advance(self, until: float) -> None:
        """Integrate up to local time ``until`` under the current force."""
        h = self.substep
        if until - self.time > MAX_SIMULATED_GAP:  # a stalled caller: skip ahead rather than integrate for ever
            self.time = until - MAX_SIMULATED_GAP
        while self.time + 1e-12 < until:
            dt = min(h, until - self.time)
            arm = self.k * (self.intent(self.time) - self.x) - self.b * self.v
            self.v = self.v + dt * (arm + self.force) / self.mass
            step = dt * self.v
            self.work += float(self.force @ step)
            self.x = self.x + step
            self.time += dt

    def read_position(self, now: float) -> np.ndarray:
        self.advance(now)
        return self.x.copy()

    def apply_force(self, force: np.ndarray, now: float) -> None:
        self.advance(now)
        self.force = np.asarray(force, dtype=np.float64).copy()

    def close(self) -> None:
        self.force = np.zeros(3)
        self.closed = True


# --- OpenHaptics (3D Systems Touch / Geomagic Touch, Phantom) ---------------------------------------------

HD_DEFAULT_DEVICE = None  # hdInitDevice(NULL): the device configured as default in Touch Setup
HD_CURRENT_POSITION = 0x2050  # hdGetDoublev parameter: end effector position (mm, device frame)
HD_CURRENT_FORCE = 0x2700  # hdSetDoublev parameter: force to render (N, device frame)
HD_FORCE_OUTPUT = 0x4000  # hdEnable capability
HD_INVALID_HANDLE = 0xFFFFFFFF
_OPENHAPTICS_LIBRARIES = ("HD", "libHD.so", "hd.dll", "HD.dll")


class OpenHapticsDevice:
    """A Touch / Phantom arm through the OpenHaptics HD C library (``libHD.so`` / ``hd.dll``) via ctypes.

    The HD API's own scheduler is not used: each ``read_position`` / ``apply_force`` is one HD frame
    (hdBeginFrame .. hdEndFrame) from the haptic loop's thread. ``scale`` (m per device mm) and ``origin``
    (world position of the device's zero, m) map the workspace into the world frame; the device's axes are
    taken as the world's (rotate in ``to_world`` otherwise)."""

    def __init__(
        self,
        *,
        scale: float = 1e-3,
        origin: np.ndarray | None = None,
        library: str | None = None,
        loader: Callable[[str], ctypes.CDLL] = ctypes.CDLL,
    ) -> None:
        self.scale = float(scale)
        self.origin = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
        self.lib = _load_library(library, _OPENHAPTICS_LIBRARIES, loader, "OpenHaptics (libHD)")
        lib = self.lib
        lib.hdInitDevice.restype = ctypes.c_uint
        lib.hdInitDevice.argtypes = [ctypes.c_char_p]
        lib.hdGetDoublev.argtypes = [ctypes.c_uint, ctypes.POINTER(ctypes.c_double)]
        lib.hdSetDoublev.argtypes = [ctypes.c_uint, ctypes.POINTER(ctypes.c_double)]
        lib.hdBeginFrame.argtypes = [ctypes.c_uint]
        lib.hdEndFrame.argtypes = [ctypes.c_uint]
        lib.hdEnable.argtypes = [ctypes.c_uint]
        handle = lib.hdInitDevice(HD_DEFAULT_DEVICE)
        if handle == HD_INVALID_HANDLE:
            raise DeviceUnavailableError("OpenHaptics found no device: is a Touch connected and set up (Touch Setup)?")
        self.handle = handle
        lib.hdEnable(HD_FORCE_OUTPUT)
        self._buffer = (ctypes.c_double * 3)()

    def read_position(self, now: float) -> np.ndarray:
        lib, buf = self.lib, self._buffer
        lib.hdBeginFrame(self.handle)
        lib.hdGetDoublev(HD_CURRENT_POSITION, buf)
        lib.hdEndFrame(self.handle)
        return self.origin + self.scale * np.array(buf[:3])

    def apply_force(self, force: np.ndarray, now: float) -> None:
        f = np.asarray(force, dtype=np.float64)
        if f.shape != (3,) or not all(math.isfinite(c) for c in f.tolist()):
            f = np.zeros(3)
        buf = (ctypes.c_double * 3)(*f.tolist())
        self.lib.hdBeginFrame(self.handle)
        self.lib.hdSetDoublev(HD_CURRENT_FORCE, buf)
        self.lib.hdEndFrame(self.handle)

    def close(self) -> None:
        handle, self.handle = getattr(self, "handle", None), None
        if handle is not None:
            zero = (ctypes.c_double * 3)()
            self.lib.hdBeginFrame(handle)
            self.lib.hdSetDoublev(HD_CURRENT_FORCE, zero)
            self.lib.hdEndFrame(handle)
            self.lib.hdDisableDevice(handle)


def _load_library(
    explicit: str | None, names: tuple[str, ...], loader: Callable[[str], ctypes.CDLL], what: str
) -> ctypes.CDLL:
    """The first of ``names`` (or ``explicit``) that loads; ``DeviceUnavailableError`` naming what to install."""
    candidates = [explicit] if explicit else [ctypes.util.find_library(names[0]), *names[1:]]
    errors = []
    for name in candidates:
        if not name:
            continue
        try:
            return loader(name)
        except OSError as exc:
            errors.append(f"{name}: {exc}")
    tried = ", ".join(n for n in candidates if n) or "nothing found"
    raise DeviceUnavailableError(
        f"{what} is not installed (tried {tried}): install the vendor's driver and library, or use the simulated device"
    )


DEVICE_FAMILIES: dict[str, Callable[..., HapticDevice]] = {"openhaptics": OpenHapticsDevice}


def open_device(family: str, **options: object) -> HapticDevice:
    """A real device by family name (``DEVICE_FAMILIES``); ``DeviceUnavailableError`` when it cannot be opened."""
    factory = DEVICE_FAMILIES.get(family)
    if factory is None:
        raise DeviceUnavailableError(f"unknown haptic device family {family!r} (known: {', '.join(DEVICE_FAMILIES)})")
    return factory(**options)
