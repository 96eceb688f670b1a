"""Unit controls: gain, scale and mute per hidden unit, and the paged view of them.

Pure state, no I/O.  The paper (section 4.1): adjusted value = gain × scale ×
(0 if muted), applied to the innermost hidden activations; faders set gain
(0..1), knobs set scale (0..2), eight units a page.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device import commands as c
from device.commands import UNITS_PER_PAGE
from device.errors import ControlError

GAIN_RANGE = (0.0, 1.0)
SCALE_RANGE = (0.0, 2.0)


@dataclass(frozen=True)
class UnitRow:
    """One row of the unit table as the display shows it."""
    unit: int
    gain: float
    scale: float
    adjusted: float
    muted: bool


@dataclass(frozen=True)
class ControlsSnapshot:
    """Immutable view of the controls, published for the display and LEDs."""
    units: int
    page: int
    pages: int
    gain: tuple[float, ...]
    scale: tuple[float, ...]
    muted: tuple[bool, ...]

    def rows(self) -> list[UnitRow]:
        """The current page's units; fewer than 8 on a short last page."""
        start = self.page * UNITS_PER_PAGE
        return [UnitRow(u, self.gain[u], self.scale[u],
                        0.0 if self.muted[u] else self.gain[u] * self.scale[u], self.muted[u])
                for u in range(start, min(start + UNITS_PER_PAGE, self.units))]


class UnitControls:
    """Gain, scale and mute of ``units`` hidden units; applies unit commands."""

    def __init__(self, units: int):
        if not isinstance(units, int) or units < 1:
            raise ControlError(f"units must be an integer >= 1, got {units!r}")
        self.units = units
        self.gain = np.ones(units)
        self.scale = np.ones(units)
        self.muted = np.zeros(units, dtype=bool)
        self.page = 0
        self._live = np.ones(units)  # 1.0 where unmuted; avoids a temporary per hop

    @property
    def pages(self) -> int:
        return -(-self.units // UNITS_PER_PAGE)

    def _unit(self, unit: int) -> int:
        if not 0 <= unit < self.units:
            raise ControlError(f"unit must be in 0..{self.units - 1}, got {unit}")
        return unit

    @staticmethod
    def _value(name: str, value: float, lo: float, hi: float) -> float:
        v = float(value)
        if not lo <= v <= hi:
            raise ControlError(f"{name} must be in {lo}..{hi}, got {value!r}")
        return v

    def apply(self, cmd: object) -> bool:
        """Apply a unit command; False when ``cmd`` is not one of ours."""
        match cmd:
            case c.SetGain(unit, value):
                self.gain[self._unit(unit)] = self._value("gain", value, *GAIN_RANGE)
            case c.SetScale(unit, value):
                self.scale[self._unit(unit)] = self._value("scale", value, *SCALE_RANGE)
            case c.ToggleMute(unit):
                u = self._unit(unit)
                self.muted[u] = not self.muted[u]
            case c.SetMute(unit, muted):
                self.muted[self._unit(unit)] = bool(muted)
            case c.PageBy(delta):
                self.page = (self.page + int(delta)) % self.pages
            case c.ZeroAll():
                self.gain[:] = 0.0
            case c.ResetAll():
                self.gain[:] = 1.0
                self.scale[:] = 1.0
                self.muted[:] = False
            case _:
                return False
        np.logical_not(self.muted, out=self._live)
        return True

    def adjusted(self, out: np.ndarray) -> np.ndarray:
        """gain × scale × (0 if muted) into ``out`` (float, units); no allocation."""
        np.multiply(self.gain, self.scale, out=out)
        out *= self._live
        return out

    def snapshot(self) -> ControlsSnapshot:
        return ControlsSnapshot(self.units, self.page, self.pages,
                                tuple(float(v) for v in self.gain),
                                tuple(float(v) for v in self.scale),
                                tuple(bool(v) for v in self.muted))

    def restore(self, snap: ControlsSnapshot) -> None:
        """Take the values of a snapshot (a preset) with the same unit count."""
        if snap.units != self.units:
            raise ControlError(f"preset is for {snap.units} units, this model has {self.units}")
        self.gain[:] = snap.gain
        self.scale[:] = snap.scale
        self.muted[:] = snap.muted
        self.page = min(snap.page, self.pages - 1)
        np.logical_not(self.muted, out=self._live)

    def __repr__(self) -> str:
        return f"<UnitControls units={self.units} page={self.page + 1}/{self.pages}>"
