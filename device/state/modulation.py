"""Motion: per-unit LFOs and the motion recorder, run by the engine once per hop.

- :class:`LfoBank` — one low-frequency oscillator per hidden unit.  Each
  moves its unit's adjusted value a = gain × scale × (0 if muted) to
  a·(1 + depth·w(t)), w in -1..1, so depth 1 swings the unit over 0..2a and a
  muted or zeroed unit stays silent.  Shapes (device.state.commands.LFO_SHAPES):
  sine, triangle, square, saw (rising) and random (sample and hold: a new
  value each cycle).  The settings (rate Hz, depth, shape) live in
  :class:`device.state.controls.UnitControls`, so presets and the last state carry
  them; the bank holds only the oscillators' phases.  Evaluated once per hop:
  a 20 Hz LFO at hop 128 / 22050 Hz has 8.6 steps a cycle.
- :class:`MotionRecorder` — records a take of unit moves (faders, knobs,
  mutes, LFO settings, Set, Reset) against the hop clock, then loops it:
  every pass starts from the controls as they were when recording began,
  and replays each move at the hop it was made.  A live move during the loop
  holds until the take moves that control again (or the next pass starts).

Real-time rules: :meth:`LfoBank.advance` and :meth:`MotionRecorder.advance`
run in :meth:`device.sound.engine.Engine.process` and allocate nothing (every
array is made in ``__init__`` / :meth:`LfoBank.configure` on a change of unit
count); the rest runs in :meth:`device.sound.engine.Engine.apply`, between hops.
"""

from __future__ import annotations

import numpy as np

from device.state import commands as c
from device.state.controls import LFO_DEFAULT_RATE, UnitControls
from device.errors import ControlError

RANDOM_TABLE = 4096      # sample-and-hold values, drawn once (seeded): no RNG call per hop
MOTION_EVENTS = 16384    # moves one take may hold (a fader sweep is ~100 moves)

# Event kinds of a take.
_GAIN, _SCALE, _MUTE, _RATE, _DEPTH, _SHAPE, _ZERO, _RESET = range(8)


class LfoBank:
    """The oscillators of ``units`` units, stepped at ``hop_rate`` hops per second."""

    def __init__(self, units: int, *, hop_rate: float, seed: int = 12):
        self.hop_rate = float(hop_rate)
        rng = np.random.default_rng(seed)
        self._table = rng.uniform(-1.0, 1.0, RANDOM_TABLE)
        self._allocate(units)

    def _allocate(self, units: int) -> None:
        self.units = units
        self.phase = np.zeros(units)      # cycles, 0..1
        self._cycle = np.zeros(units)     # whole cycles done (float: no int casts per hop)
        # Per-unit offsets into the random table, so units with the same rate differ.
        self._offset = (np.arange(units) * 977.0) % RANDOM_TABLE
        self._idx = np.zeros(units, dtype=np.intp)
        self._w = np.zeros(units)
        self._shape_w = np.zeros(units)
        self._tmp = np.zeros(units)
        self._step = np.zeros(units)      # cycles per hop
        self._depth = np.zeros(units)
        self._masks = np.zeros((len(c.LFO_SHAPES), units), dtype=bool)
        self._on = np.zeros(units, dtype=bool)  # depth > 0
        self._half = np.zeros(units, dtype=bool)
        self._used = [False] * len(c.LFO_SHAPES)
        self.active = False

    def configure(self, controls: UnitControls) -> None:
        """Take the LFO settings of ``controls`` (after every control change; no allocation
        unless the unit count changed)."""
        if controls.units != self.units:
            self._allocate(controls.units)
        np.divide(controls.lfo_rate, self.hop_rate, out=self._step)
        self._depth[:] = controls.lfo_depth
        np.greater(self._depth, 0.0, out=self._on)  # configure runs on the audio thread too
        for i in range(len(c.LFO_SHAPES)):
            np.equal(controls.lfo_shape, i, out=self._masks[i])
            np.logical_and(self._masks[i], self._on, out=self._masks[i])
            self._used[i] = bool(self._masks[i].any())
        self.active = any(self._used)

    def reset(self) -> None:
        """Every oscillator back to phase 0 (a render starts from a known state)."""
        self.phase[:] = 0.0
        self._cycle[:] = 0.0

    def advance(self, base: np.ndarray, out: np.ndarray) -> np.ndarray:
        """One hop: ``out`` (units) = ``base`` × (1 + depth × w), then every phase steps on.

        With no LFO on, ``out`` is a copy of ``base``.  Allocates nothing.
        """
        if not self.active:
            out[:] = base
            return out
        w, sw, tmp, p = self._w, self._shape_w, self._tmp, self.phase
        w[:] = 0.0
        for i, used in enumerate(self._used):
            if not used:
                continue
            if i == 0:    # sine
                np.multiply(p, 2.0 * np.pi, out=sw)
                np.sin(sw, out=sw)
            elif i == 1:  # triangle, in phase with the sine: 0 at p=0, +1 at p=1/4
                np.add(p, 0.25, out=sw)
                np.floor(sw, out=tmp)
                sw -= tmp
                sw -= 0.5
                np.abs(sw, out=sw)
                np.multiply(sw, -4.0, out=sw)
                sw += 1.0
            elif i == 2:  # square: +1 for the first half cycle, -1 for the second
                np.less(p, 0.5, out=self._half)
                sw[:] = -1.0
                np.copyto(sw, 1.0, where=self._half)
            elif i == 3:  # saw: rising ramp -1..1
                np.multiply(p, 2.0, out=sw)
                sw -= 1.0
            else:         # random: one table value per cycle
                np.add(self._cycle, self._offset, out=tmp)
                np.remainder(tmp, RANDOM_TABLE, out=tmp)
                np.copyto(self._idx, tmp, casting="unsafe")
                np.take(self._table, self._idx, out=sw, mode="clip")
            np.copyto(w, sw, where=self._masks[i])
        np.multiply(w, self._depth, out=w)
        w += 1.0
        np.multiply(base, w, out=out)
        p += self._step
        np.floor(p, out=tmp)
        self._cycle += tmp
        p -= tmp
        return out

    def __repr__(self) -> str:
        on = int(self._depth.astype(bool).sum()) if self.active else 0
        return f"<LfoBank units={self.units} on={on} hop_rate={self.hop_rate:.2f}>"


# The per-unit control arrays a take restores at the start of every pass, with the
# value each holds before any take (UnitControls' reset state).
TAKE_STATE = (("gain", np.float64, 1.0), ("scale", np.float64, 1.0), ("muted", bool, False),
              ("lfo_rate", np.float64, LFO_DEFAULT_RATE), ("lfo_depth", np.float64, 0.0),
              ("lfo_shape", np.int64, 0))


class MotionRecorder:
    """A take of unit moves on the hop clock, and its loop.

    States: "stop" (nothing moves), "record" (moves applied live are also
    written into the take), "loop" (the take replays).  ``capacity`` moves fit
    in one take; a full take stops recording and loops.
    """

    def __init__(self, units: int, *, capacity: int = MOTION_EVENTS):
        self.capacity = capacity
        self._hop = np.zeros(capacity, dtype=np.int64)
        self._kind = np.zeros(capacity, dtype=np.int64)
        self._unit = np.zeros(capacity, dtype=np.int64)
        self._value = np.zeros(capacity)
        self.state = "stop"
        self.events = 0       # moves in the take
        self.length = 0       # hops in the take (0: none recorded)
        self._clock = 0       # hops counted while recording
        self._pos = 0         # hop within the loop
        self._cursor = 0      # next event to replay
        self._allocate(units)

    def _allocate(self, units: int) -> None:
        self.units = units
        # The controls as the take began, by UnitControls attribute (TAKE_STATE).
        self._start = {name: np.full(units, fill, dtype=dtype)
                       for name, dtype, fill in TAKE_STATE}
        self.state, self.events, self.length = "stop", 0, 0

    def configure(self, controls: UnitControls) -> None:
        """A model of another unit count: the take no longer applies, and is dropped."""
        if controls.units != self.units:
            self._allocate(controls.units)

    # -- between hops (Engine.apply) ----------------------------------------------------
    def apply(self, cmd: object, controls: UnitControls) -> bool:
        """Apply a motion command; False if ``cmd`` is not one.  Raises ControlError."""
        match cmd:
            case c.SetMotion(state):
                self.set_state(state, controls)
            case c.ToggleMotionRecord():
                self.set_state("loop" if self.state == "record" else "record", controls)
            case c.ToggleMotionLoop():
                self.set_state("stop" if self.state == "loop" else "loop", controls)
            case _:
                return False
        return True

    def set_state(self, state: str, controls: UnitControls) -> None:
        if state not in c.MOTION_STATES:
            raise ControlError(f"motion must be one of {', '.join(c.MOTION_STATES)}, "
                               f"got {state!r}")
        if state == "record":
            self._take_start(controls)
            self.events, self._clock = 0, 0
        elif state == "loop":
            if self.state == "record":
                self.length = max(1, self._clock)
            if self.length == 0:
                raise ControlError("motion loop: nothing recorded yet (record a take first)")
            self._pos = self._cursor = 0
        elif self.state == "record":  # stop while recording keeps the take, unplayed
            self.length = max(1, self._clock)
        self.state = state

    def record(self, cmd: object, controls: UnitControls) -> None:
        """Write the move ``cmd`` (already applied to ``controls``) into the take."""
        if self.state != "record":
            return
        match cmd:
            case c.SetGain(unit, _):
                self._add(_GAIN, unit, controls.gain[unit])
            case c.SetScale(unit, _):
                self._add(_SCALE, unit, controls.scale[unit])
            case c.SetMute(unit, _) | c.ToggleMute(unit):
                self._add(_MUTE, unit, float(controls.muted[unit]))
            case c.SetLfoRate(unit, _):
                self._add(_RATE, unit, controls.lfo_rate[unit])
            case c.SetLfoDepth(unit, _):
                self._add(_DEPTH, unit, controls.lfo_depth[unit])
            case c.SetLfoShape(unit, _) | c.StepLfoShape(unit, _):
                self._add(_SHAPE, unit, float(controls.lfo_shape[unit]))
            case c.ZeroAll():
                self._add(_ZERO, 0, 0.0)
            case c.ResetAll():
                self._add(_RESET, 0, 0.0)

    def _add(self, kind: int, unit: int, value: float) -> None:
        i = self.events
        self._hop[i], self._kind[i], self._unit[i], self._value[i] = self._clock, kind, unit, value
        self.events = i + 1
        if self.events == self.capacity:  # full: the take ends here and plays
            self.length = self._clock + 1
            self.state = "loop"
            self._pos = self._cursor = 0

    def _take_start(self, controls: UnitControls) -> None:
        for name, start in self._start.items():
            start[:] = getattr(controls, name)

    # -- every hop (Engine.process) ---------------------------------------------------------
    def advance(self, controls: UnitControls) -> bool:
        """One hop of the take: True when ``controls`` changed.  Allocates no arrays."""
        if self.state == "record":
            self._clock += 1
            return False
        if self.state != "loop":
            return False
        changed = False
        pos = self._pos
        if pos == 0:  # every pass starts from the state the take started from
            for name, start in self._start.items():
                getattr(controls, name)[:] = start
            changed = True
        i, n = self._cursor, self.events
        while i < n and self._hop[i] == pos:
            self._replay(int(self._kind[i]), int(self._unit[i]), float(self._value[i]), controls)
            i += 1
            changed = True
        self._cursor = i
        pos += 1
        if pos >= self.length:
            pos, self._cursor = 0, 0
        self._pos = pos
        if changed:
            controls.touch()
        return changed

    @staticmethod
    def _replay(kind: int, unit: int, value: float, controls: UnitControls) -> None:
        if kind == _GAIN:
            controls.gain[unit] = value
        elif kind == _SCALE:
            controls.scale[unit] = value
        elif kind == _MUTE:
            controls.muted[unit] = value != 0.0
        elif kind == _RATE:
            controls.lfo_rate[unit] = value
        elif kind == _DEPTH:
            controls.lfo_depth[unit] = value
        elif kind == _SHAPE:
            controls.lfo_shape[unit] = int(value)
        elif kind == _ZERO:
            controls.gain[:] = 0.0
        elif kind == _RESET:
            controls.gain[:] = 1.0
            controls.scale[:] = 1.0
            controls.muted[:] = False
            controls.lfo_depth[:] = 0.0

    def __repr__(self) -> str:
        return (f"<MotionRecorder {self.state} events={self.events}/{self.capacity} "
                f"length={self.length} hops>")
