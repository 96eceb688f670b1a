"""Unit controls: gain, scale and mute per hidden unit, and the paged view of them.

Pure state, no I/O.  The paper (section 4.1): adjusted value = gain × scale ×
(0 if muted), applied to the innermost hidden activations; faders set gain
(0..1), knobs set scale (0..2), eight units a page.

Each unit also has an LFO setting (rate Hz, depth 0..1, shape), kept here with
the other unit state so presets and the last state carry it; the oscillators
themselves run in :mod:`device.state.modulation`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device.state import commands as c
from device.state.commands import UNITS_PER_PAGE
from device.errors import ControlError

GAIN_RANGE = (0.0, 1.0)
SCALE_RANGE = (0.0, 2.0)
LFO_RATE_RANGE = (0.01, 20.0)   # Hz; evaluated once per hop (172 hops/s at hop 128)
LFO_DEPTH_RANGE = (0.0, 1.0)
LFO_DEFAULT_RATE = 1.0
# The published controls follow a command a hop or more later (with the audio process,
# ~25 ms more): for this long after a sense sends a value (a nudge, a page) it steps from
# what it sent, not from what is shown (device/senses/keyboard.py, nanokontrol2.py).
ECHO_S = 0.25


@dataclass(frozen=True)
class UnitRow:
    """One row of the unit table as the display shows it."""
    unit: int
    gain: float
    scale: float
    adjusted: float
    muted: bool
    lfo: bool = False  # an LFO moves this unit (depth > 0)


@dataclass(frozen=True)
class ControlsSnapshot:
    """Immutable view of the controls, published for the display and LEDs."""
    units: int
    page: int
    pages: int
    gain: tuple[float, ...]
    scale: tuple[float, ...]
    muted: tuple[bool, ...]
    # Per-unit LFO settings; empty tuples mean every LFO at its default (off).
    lfo_rate: tuple[float, ...] = ()
    lfo_depth: tuple[float, ...] = ()
    lfo_shape: tuple[str, ...] = ()
    # The motion recorder's last finished take (device.state.modulation.MotionTake) and the
    # state a recall restores it in ("loop" or "stop"): presets and the last state keep both.
    take: object = None
    take_state: str = "stop"

    def __post_init__(self) -> None:
        # every LFO at its default, spelled out: equal snapshots compare equal
        if not self.lfo_rate:
            object.__setattr__(self, "lfo_rate", (LFO_DEFAULT_RATE,) * self.units)
            object.__setattr__(self, "lfo_depth", (0.0,) * self.units)
            object.__setattr__(self, "lfo_shape", (c.LFO_SHAPES[0],) * self.units)

    def lfo(self, unit: int) -> tuple[float, float, str]:
        """(rate Hz, depth 0..1, shape) of ``unit``'s LFO."""
        return self.lfo_rate[unit], self.lfo_depth[unit], self.lfo_shape[unit]

    def rows(self) -> list[UnitRow]:
        """The current page's units; fewer than 8 on a short last page."""
        start = self.page * UNITS_PER_PAGE
        return [UnitRow(u, self.gain[u], self.scale[u],
                        0.0 if self.muted[u] else self.gain[u] * self.scale[u], self.muted[u],
                        self.lfo(u)[1] > 0.0)
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
        self.lfo_rate = np.full(units, LFO_DEFAULT_RATE)
        self.lfo_depth = np.zeros(units)
        self.lfo_shape = np.zeros(units, dtype=np.int64)  # index into LFO_SHAPES

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
        if not lo <= v <= hi:  # NaN fails too
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
                self.lfo_depth[:] = 0.0  # a clean, still state; rates and shapes are kept
            case c.SetLfoRate(unit, hz):
                self.lfo_rate[self._unit(unit)] = self._value("LFO rate (Hz)", hz,
                                                              *LFO_RATE_RANGE)
            case c.SetLfoDepth(unit, depth):
                self.lfo_depth[self._unit(unit)] = self._value("LFO depth", depth,
                                                               *LFO_DEPTH_RANGE)
            case c.SetLfoShape(unit, shape):
                self.lfo_shape[self._unit(unit)] = lfo_shape_index(shape)
            case c.StepLfoShape(unit, delta):
                u = self._unit(unit)
                self.lfo_shape[u] = (self.lfo_shape[u] + int(delta)) % len(c.LFO_SHAPES)
            case _:
                return False
        np.logical_not(self.muted, out=self._live)
        return True

    def touch(self) -> None:
        """Call after writing the arrays directly (the motion recorder does)."""
        np.logical_not(self.muted, out=self._live)

    def adjusted(self, out: np.ndarray) -> np.ndarray:
        """gain × scale × (0 if muted) into ``out`` (float, units); no allocation."""
        np.multiply(self.gain, self.scale, out=out)
        out *= self._live
        return out

    def snapshot(self, take: object = None, take_state: str = "stop") -> ControlsSnapshot:
        """An immutable copy, with the motion ``take`` (a MotionTake, shared, not copied)
        and ``take_state`` ("loop" or "stop") for presets.  Tuples from lists of known length: ``tuple(generator)``
        over-allocates and resizes, so a looping motion take that republishes every
        few hops would fill CPython's tuple free lists (a growth tracemalloc sees)."""
        return ControlsSnapshot(self.units, self.page, self.pages,
                                tuple(self.gain.tolist()), tuple(self.scale.tolist()),
                                tuple(self.muted.tolist()), tuple(self.lfo_rate.tolist()),
                                tuple(self.lfo_depth.tolist()),
                                tuple([c.LFO_SHAPES[i] for i in self.lfo_shape.tolist()]),
                                take, take_state)

    def restore(self, snap: ControlsSnapshot) -> None:
        """Take the values of a snapshot (a preset) with the same unit count."""
        if snap.units != self.units:
            raise ControlError(f"preset is for {snap.units} units, this model has {self.units}")
        self.gain[:] = snap.gain
        self.scale[:] = snap.scale
        self.muted[:] = snap.muted
        for u in range(self.units):
            rate, depth, shape = snap.lfo(u)
            self.lfo_rate[u], self.lfo_depth[u] = rate, depth
            self.lfo_shape[u] = lfo_shape_index(shape)
        self.page = min(snap.page, self.pages - 1)
        np.logical_not(self.muted, out=self._live)

    def __repr__(self) -> str:
        return f"<UnitControls units={self.units} page={self.page + 1}/{self.pages}>"


def lfo_shape_index(shape: object) -> int:
    """Index of ``shape`` in LFO_SHAPES; ControlError listing the shapes otherwise."""
    if shape not in c.LFO_SHAPES:
        raise ControlError(f"LFO shape must be one of {', '.join(c.LFO_SHAPES)}, got {shape!r}")
    return c.LFO_SHAPES.index(shape)
