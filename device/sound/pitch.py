"""Pitch: notes from a MIDI keyboard transpose generate mode's spectrum, and gate it.

- :class:`Transposer` — moves a magnitude spectrum (n_bins) along frequency
  by r = 2^(n/12): output bin k takes the input at bin k/r, linearly
  interpolated, so a peak at bin b lands at bin r·b.  Bins whose source lies
  past the last bin are 0 (content pushed past Nyquist is lost).  Stretching
  widens every peak by r and so multiplies its energy by r; the result is
  scaled by r^-1/2 so that a note's loudness does not climb 3 dB an octave.
  The index and weight arrays are preallocated and recomputed in place when
  the note changes; :meth:`Transposer.apply` allocates nothing.
- :class:`NoteGate` — monophonic note handling with last-note priority: a
  new key takes over at once (legato: the gate does not retrigger while a key
  is held); releasing it falls back to the most recent key still held; the
  last release closes the gate.  The gate is a linear attack/release ramp
  applied per sample to the output hop.

**No keyboard, or none played yet:** the engine is a *drone*: untransposed,
gate open, so generate mode plays as it always did.  The first NoteOn makes
it an instrument (the gate closes when no key is held);
:class:`~device.state.commands.NotesOff` with ``drone=True`` (sent when the last
keyboard is unplugged) makes it a drone again.

Only generate mode is transposed and gated: resynth follows its input.
"""

from __future__ import annotations

import math

import numpy as np

from device.state import commands as c
from device.errors import ControlError
from device.sound.features import FrameConfig

NOTE_RANGE = (0, 127)
GATE_TIME_RANGE = (0.0, 10.0)  # s, attack and release
_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def note_name(note: int) -> str:
    """MIDI note number → name with octave, 60 → "C4"."""
    return f"{_NAMES[note % 12]}{note // 12 - 1}"


class Transposer:
    """Resamples an ``n_bins`` magnitude spectrum along the bin axis by 2^(semitones/12)."""

    def __init__(self, n_bins: int):
        self.n_bins = n = n_bins
        self._k = np.arange(n, dtype=np.float64)
        self._pos = np.zeros(n)
        self._i0 = np.zeros(n, dtype=np.intp)
        self._i1 = np.zeros(n, dtype=np.intp)
        self._w = np.zeros(n)
        self._valid = np.zeros(n)   # 1.0 where the source lies inside the spectrum
        self._a = np.zeros(n)
        self._b = np.zeros(n)
        self.semitones = 0.0
        self.identity = True

    def set_semitones(self, semitones: float) -> None:
        """Recompute the index and weight arrays in place (no allocation of arrays)."""
        self.semitones = float(semitones)
        self.identity = semitones == 0
        if self.identity:
            return
        n = self.n_bins
        ratio = 2.0 ** (self.semitones / 12.0)
        np.multiply(self._k, 1.0 / ratio, out=self._pos)
        np.less_equal(self._pos, n - 1, out=self._a)  # bool into float: 1.0 / 0.0
        self._valid[:] = self._a
        self._valid *= ratio ** -0.5                  # keep each peak's energy (see above)
        np.minimum(self._pos, n - 1, out=self._pos)
        np.floor(self._pos, out=self._w)
        np.minimum(self._w, n - 2, out=self._w)       # so that i1 = i0 + 1 is a bin too
        np.copyto(self._i0, self._w, casting="unsafe")
        np.add(self._i0, 1, out=self._i1)
        np.subtract(self._pos, self._w, out=self._w)  # weight of i1

    def apply(self, mag: np.ndarray) -> np.ndarray:
        """Transpose ``mag`` (n_bins, float64) in place and return it.  Allocates nothing."""
        if self.identity:
            return mag
        a, b = self._a, self._b
        np.take(mag, self._i0, out=a, mode="clip")  # "raise" buffers out
        np.take(mag, self._i1, out=b, mode="clip")
        b -= a
        b *= self._w
        a += b
        np.multiply(a, self._valid, out=mag)
        return mag


class NoteGate:
    """Held keys (last-note priority), the note playing and the gate's envelope.

    Key changes come in :meth:`apply` (between hops); :meth:`advance` steps
    the envelope one hop and :meth:`gate` multiplies an output hop by it.
    """

    def __init__(self, frame: FrameConfig, *, reference: int = 60, attack_s: float = 0.01,
                 release_s: float = 0.25):
        self.hop_length = R = frame.hop_length
        self.sample_rate = frame.sample_rate
        self.transposer = Transposer(frame.n_bins)
        self._ramp = (np.arange(R) + 1.0) / R   # 1/R .. 1: the hop ends at the new level
        self._env = np.ones(R)
        self._flat = True                      # env is constant (level) this hop
        self.held: list[int] = []              # keys down, oldest first
        self.note: int | None = None           # the note sounding (or releasing)
        self.drone = True
        self.level = 1.0
        self.reference, self.attack_s, self.release_s = 60, 0.01, 0.25
        self.configure(reference, attack_s, release_s)

    def configure(self, reference: int, attack_s: float, release_s: float) -> None:
        """Reference note (plays untransposed), attack and release (s); ControlError if bad."""
        ok = isinstance(reference, int) and not isinstance(reference, bool)
        if not ok or not NOTE_RANGE[0] <= reference <= NOTE_RANGE[1]:
            raise ControlError(f"reference note must be in {NOTE_RANGE[0]}..{NOTE_RANGE[1]}, "
                               f"got {reference!r}")
        for name, v in (("attack", attack_s), ("release", release_s)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not (
                    GATE_TIME_RANGE[0] <= v <= GATE_TIME_RANGE[1]):
                raise ControlError(f"gate {name} must be in {GATE_TIME_RANGE[0]}.."
                                   f"{GATE_TIME_RANGE[1]} s, got {v!r}")
        self.reference, self.attack_s, self.release_s = reference, float(attack_s), float(release_s)
        self._retune()

    @property
    def target(self) -> float:
        return 1.0 if self.drone or self.held else 0.0

    @property
    def semitones(self) -> int:
        return 0 if self.drone or self.note is None else self.note - self.reference

    def apply(self, cmd: object) -> bool:
        """Apply NoteOn / NoteOff / NotesOff / SetNoteGate; False if ``cmd`` is none."""
        match cmd:
            case c.NoteOn(note, velocity):
                note = _note(note)
                if isinstance(velocity, bool) or not isinstance(velocity, int) \
                        or not 0 <= velocity <= 127:
                    raise ControlError(f"velocity must be in 0..127, got {velocity!r}")
                if velocity == 0:  # MIDI's running-status habit: note on at 0 is a release
                    return self.apply(c.NoteOff(note))
                if note in self.held:
                    self.held.remove(note)
                self.held.append(note)
                self.drone = False
                self.note = note
            case c.NoteOff(note):
                note = _note(note)
                if note in self.held:
                    self.held.remove(note)
                    if self.held:
                        self.note = self.held[-1]  # back to the newest key still down
            case c.NotesOff(drone):
                self.held.clear()
                if drone:
                    self.drone, self.note = True, None
            case c.SetNoteGate(reference, attack_s, release_s):
                self.configure(reference, attack_s, release_s)
                return True
            case _:
                return False
        self._retune()
        return True

    def _retune(self) -> None:
        if self.transposer.semitones != self.semitones:
            self.transposer.set_semitones(self.semitones)

    def advance(self) -> None:
        """Step the envelope one hop towards the target (allocates nothing)."""
        target, l0 = self.target, self.level
        if l0 == target:
            if not self._flat:
                self._env[:] = l0
                self._flat = True
            return
        seconds = self.attack_s if target > l0 else self.release_s
        step = self.hop_length / max(seconds * self.sample_rate, 1.0)
        l1 = min(l0 + step, target) if target > l0 else max(l0 - step, target)
        np.multiply(self._ramp, l1 - l0, out=self._env)
        self._env += l0
        self._flat = False
        self.level = l1

    def transpose(self, mag: np.ndarray) -> np.ndarray:
        """The sounding note's transposition of ``mag`` (n_bins), in place."""
        return self.transposer.apply(mag)

    def gate(self, out: np.ndarray) -> np.ndarray:
        """Multiply an output hop by this hop's envelope, in place."""
        if self._flat:
            if self.level == 0.0:
                out[:] = 0.0
            elif self.level != 1.0:
                out *= self.level
            return out
        out *= self._env
        return out

    def label(self) -> str:
        """For the display: the note sounding ("C4"), "-" when gated shut, "" as a drone."""
        if self.drone:
            return ""
        if not self.held and self.level == 0.0:
            return "-"
        return note_name(self.note) if self.note is not None else "-"

    def __repr__(self) -> str:
        state = "drone" if self.drone else f"note={self.note} held={self.held}"
        return f"<NoteGate {state} level={self.level:.2f} ref={self.reference}>"


def _note(note: object) -> int:
    if isinstance(note, bool) or not isinstance(note, int) \
            or not NOTE_RANGE[0] <= note <= NOTE_RANGE[1]:
        raise ControlError(f"note must be in {NOTE_RANGE[0]}..{NOTE_RANGE[1]}, got {note!r}")
    return note


def semitone_ratio(semitones: float) -> float:
    """2^(semitones/12): the frequency ratio of a transposition."""
    return math.pow(2.0, semitones / 12.0)
