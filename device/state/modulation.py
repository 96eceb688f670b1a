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

import math
from dataclasses import dataclass

import numpy as np

from device.state import commands as c
from device.state.controls import (
    GAIN_RANGE,
    LFO_DEFAULT_RATE,
    LFO_DEPTH_RANGE,
    LFO_RATE_RANGE,
    SCALE_RANGE,
    UnitControls,
)
from device.errors import ControlError

RANDOM_TABLE = 4096      # sample-and-hold values, drawn once (seeded): no RNG call per hop
MOTION_EVENTS = 16384    # moves one take may hold (a fader sweep is ~100 moves)

MAX_TAKE_HOPS = 1 << 31  # a take's length in hops (3.9 years at 172 hops/s): a sanity bound

# Event kinds of a take, and their names in a saved take (presets, the last state).
_GAIN, _SCALE, _MUTE, _RATE, _DEPTH, _SHAPE, _ZERO, _RESET = range(8)
EVENT_KINDS = ("gain", "scale", "mute", "lfo_rate", "lfo_depth", "lfo_shape", "zero", "reset")


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


@dataclass(frozen=True, eq=True)
class MotionTake:
    """A finished take, immutable: what presets and the last state keep of the motion.

    ``length`` hops long (the take's loop, on the hop clock of the model it was
    recorded with); ``start`` the per-unit controls the take restores at every
    pass, one tuple of ``units`` values per :data:`TAKE_STATE` entry (LFO shapes
    as indices into LFO_SHAPES); ``events`` the moves, ``(hop, kind, unit, value)``
    with hop ascending in 0..length-1 and kind an index into :data:`EVENT_KINDS`.
    Built by :meth:`MotionRecorder.take` off the per-hop path, loaded back with
    :meth:`MotionRecorder.load`.
    """

    units: int
    length: int
    start: tuple[tuple[float, ...], ...]
    events: tuple[tuple[int, int, int, float], ...]

    def to_dict(self) -> dict:
        """The take as JSON-ready data (names, not indices, for kinds and shapes)."""
        start = {name: list(values) for (name, _, _), values in zip(TAKE_STATE, self.start)}
        start["muted"] = [bool(v) for v in start["muted"]]
        start["lfo_shape"] = [c.LFO_SHAPES[int(v)] for v in start["lfo_shape"]]
        return {"units": self.units, "length": self.length, "start": start,
                "events": [[h, EVENT_KINDS[k], u,
                            c.LFO_SHAPES[int(v)] if k == _SHAPE else v]
                           for h, k, u, v in self.events]}

    @classmethod
    def from_dict(cls, doc: object, *, units: int, capacity: int = MOTION_EVENTS) -> MotionTake:
        """A take from :meth:`to_dict`'s data for a model of ``units`` units.

        Raises ControlError naming the field, the limit and the value: a take
        for another unit count, more than ``capacity`` moves, a hop outside
        0..length-1 or out of order, an unknown kind or a value out of its range.
        """
        if not isinstance(doc, dict):
            raise ControlError(f"motion must be a JSON object, got {type(doc).__name__}")
        if doc.get("units") != units:
            raise ControlError(f"motion take is for {doc.get('units')!r} units, "
                               f"this model has {units}")
        length = doc.get("length")
        if isinstance(length, bool) or not isinstance(length, int) \
                or not 1 <= length <= MAX_TAKE_HOPS:
            raise ControlError(f"motion length must be 1..{MAX_TAKE_HOPS} hops, got {length!r}")
        start_doc = doc.get("start")
        if not isinstance(start_doc, dict):
            raise ControlError("motion start must be a JSON object of per-unit lists")
        start = []
        for name, _, _ in TAKE_STATE:
            values = start_doc.get(name)
            if not isinstance(values, list) or len(values) != units:
                raise ControlError(f"motion start {name} must be a list of {units} values")
            start.append(tuple(_take_value(_START_KIND[name], v, f"motion start {name}")
                               for v in values))
        events = doc.get("events")
        if not isinstance(events, list) or len(events) > capacity:
            raise ControlError(f"motion events must be a list of at most {capacity} moves, got "
                               f"{len(events) if isinstance(events, list) else type(events).__name__}")
        out, last = [], 0
        for e in events:
            if not (isinstance(e, list) and len(e) == 4 and e[1] in EVENT_KINDS):
                raise ControlError(f"motion event must be [hop, kind, unit, value] with kind one "
                                   f"of {', '.join(EVENT_KINDS)}, got {e!r}"[:200])
            hop, kind, unit = e[0], EVENT_KINDS.index(e[1]), e[2]
            if isinstance(hop, bool) or not isinstance(hop, int) or not last <= hop < length:
                raise ControlError(f"motion event hop must be in {last}..{length - 1} "
                                   f"(ascending), got {hop!r}")
            if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit < units:
                raise ControlError(f"motion event unit must be in 0..{units - 1}, got {unit!r}")
            out.append((hop, kind, unit, _take_value(kind, e[3], f"motion {e[1]}")))
            last = hop
        return cls(units, length, tuple(start), tuple(out))


# The event kind whose range checks each TAKE_STATE array's values.
_START_KIND = {"gain": _GAIN, "scale": _SCALE, "muted": _MUTE, "lfo_rate": _RATE,
               "lfo_depth": _DEPTH, "lfo_shape": _SHAPE}
_RANGES = {_GAIN: GAIN_RANGE, _SCALE: SCALE_RANGE, _RATE: LFO_RATE_RANGE, _DEPTH: LFO_DEPTH_RANGE}


def _take_value(kind: int, v: object, what: str) -> float:
    """A saved take's value as the recorder holds it (float; mute 0/1, shape an index)."""
    if kind == _SHAPE:
        if v not in c.LFO_SHAPES:
            raise ControlError(f"{what} must be one of {', '.join(c.LFO_SHAPES)}, got {v!r}")
        return float(c.LFO_SHAPES.index(v))
    if kind == _MUTE:
        if not isinstance(v, bool) and v not in (0, 1):
            raise ControlError(f"{what} must be true/false, got {v!r}")
        return float(bool(v))
    if kind in (_ZERO, _RESET):
        return 0.0
    lo, hi = _RANGES[kind]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or not lo <= v <= hi:
        raise ControlError(f"{what} must be in {lo}..{hi}, got {v!r}")
    return float(v)


class MotionRecorder:
    """A take of unit moves on the hop clock, and its loop.

    States: "stop" (nothing moves), "record" (moves applied live are also
    written into the take), "loop" (the take replays).  ``capacity`` moves fit
    in one take; a full take stops recording and loops.  :attr:`take` is the
    last finished take as an immutable :class:`MotionTake` (None before one),
    made when recording ends, so presets and the last state can keep it.
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
        self.take: MotionTake | None = None
        self._allocate(units)

    def _allocate(self, units: int) -> None:
        self.units = units
        # The controls as the take began, by UnitControls attribute (TAKE_STATE).
        self._start = {name: np.full(units, fill, dtype=dtype)
                       for name, dtype, fill in TAKE_STATE}
        self.state, self.events, self.length = "stop", 0, 0
        self.take = None

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
            case c.LoadMotion(take, state):
                self.load(take, state)
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
                self._finish(max(1, self._clock))
            if self.length == 0:
                raise ControlError("motion loop: nothing recorded yet (record a take first)")
            self._pos = self._cursor = 0
        elif self.state == "record":  # stop while recording keeps the take, unplayed
            self._finish(max(1, self._clock))
        self.state = state

    def load(self, take: MotionTake, state: str) -> None:
        """Make ``take`` (from a preset or the last state) the take, then "loop" or "stop".

        Between hops only (Engine.apply).  Raises ControlError, changing nothing,
        for a take of another unit count or longer than ``capacity`` moves.
        """
        if state not in ("loop", "stop"):
            raise ControlError(f"a loaded take starts in loop or stop, got {state!r}")
        if not isinstance(take, MotionTake) or take.units != self.units:
            raise ControlError(f"motion take is for {getattr(take, 'units', None)!r} units, "
                               f"this model has {self.units}")
        n = len(take.events)
        if n > self.capacity:
            raise ControlError(f"motion take has {n} moves, at most {self.capacity} fit")
        for (name, _, _), values in zip(TAKE_STATE, take.start):
            self._start[name][:] = values
        if n:
            hop, kind, unit, value = zip(*take.events)
            self._hop[:n], self._kind[:n], self._unit[:n], self._value[:n] = hop, kind, unit, value
        self.events, self.length, self.take = n, take.length, take
        self._pos = self._cursor = 0
        self.state = state

    def _finish(self, length: int) -> None:
        """The take ends: ``length`` hops; keep it as an immutable MotionTake."""
        self.length = length
        n = self.events
        self.take = MotionTake(
            self.units, length,
            tuple(tuple(self._start[name].tolist()) for name, _, _ in TAKE_STATE),
            tuple(zip(self._hop[:n].tolist(), self._kind[:n].tolist(),
                      self._unit[:n].tolist(), self._value[:n].tolist())))

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
            self._finish(self._clock + 1)
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
