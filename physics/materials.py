"""Tissue materials: elastic constants, density, damping and strength, with realistic presets."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Material:
    """A tissue material in SI units.

    young: Young's modulus (Pa); poisson: Poisson ratio in [0, 0.5) (tissue is not auxetic; the stable
    Neo-Hookean energy is well posed on all of it, see physics.neo_hookean.stable_lame); density (kg/m^3);
    damping: velocity damping rate (1/s); strength: tensile strength (Pa): a grasp tears free when
    its force exceeds strength x the jaws' contact area; burn_rate: damage per second per unit heat
    (1.0 means a fully energized tip at the tet burns it through in one second).
    """

    name: str
    young: float
    poisson: float
    density: float
    damping: float = 2.0
    strength: float = 1.0e5
    burn_rate: float = 1.0

    def __post_init__(self) -> None:
        checks = {
            "young": self.young > 0,
            "poisson": 0.0 <= self.poisson < 0.5,
            "density": self.density > 0,
            "damping": self.damping >= 0,
            "strength": self.strength > 0,
            "burn_rate": self.burn_rate >= 0,
        }
        for field, ok in checks.items():
            value = getattr(self, field)
            if not ok or not math.isfinite(value):
                raise ValueError(f"material {self.name!r}: invalid {field} = {value!r}")

    @property
    def lame(self) -> tuple[float, float]:
        """Lamé parameters (mu, lambda) in Pa."""
        mu = self.young / (2.0 * (1.0 + self.poisson))
        lam = self.young * self.poisson / ((1.0 + self.poisson) * (1.0 - 2.0 * self.poisson))
        return mu, lam


# Presets: orders of magnitude from ex-vivo indentation and tensile studies; scenarios override them.
LIVER = Material("liver", young=8.0e3, poisson=0.45, density=1060.0, damping=4.0, strength=6.0e4)
GALLBLADDER = Material("gallbladder", young=2.0e4, poisson=0.45, density=1030.0, damping=4.0, strength=1.2e5)
DUCT = Material("cystic duct", young=6.0e4, poisson=0.45, density=1040.0, damping=4.0, strength=2.0e5)
VESSEL = Material("vessel", young=1.0e5, poisson=0.45, density=1050.0, damping=4.0, strength=3.0e5)
FAT = Material("fat", young=3.0e3, poisson=0.45, density=920.0, damping=6.0, strength=2.0e4)
MUSCLE = Material("muscle", young=5.0e4, poisson=0.45, density=1060.0, damping=3.0, strength=2.0e5)
