"""Commands: the small immutable messages every sense sends to the audio thread.

MIDI, GPIO, the keyboard and the USB watcher put these on one queue; the
audio thread drains it at hop boundaries.  Nothing here touches hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("original", "resynth", "generate")
UNITS_PER_PAGE = 8


@dataclass(frozen=True, slots=True)
class SetGain:
    """Fader: gain of ``unit`` (absolute index), 0..1."""
    unit: int
    value: float


@dataclass(frozen=True, slots=True)
class SetScale:
    """Knob: scale of ``unit``, 0..2."""
    unit: int
    value: float


@dataclass(frozen=True, slots=True)
class ToggleMute:
    unit: int


@dataclass(frozen=True, slots=True)
class SetMute:
    unit: int
    muted: bool


@dataclass(frozen=True, slots=True)
class PageBy:
    """Track ◀/▶: move the view of units by ``delta`` pages of 8, wrapping."""
    delta: int


@dataclass(frozen=True, slots=True)
class ZeroAll:
    """Set: every unit's output to 0 (gain 0)."""


@dataclass(frozen=True, slots=True)
class ResetAll:
    """Record: every unit back to its original activation (gain 1, scale 1, unmuted)."""


@dataclass(frozen=True, slots=True)
class SetMode:
    mode: str  # one of MODES


@dataclass(frozen=True, slots=True)
class StepMode:
    """MODE button / Rewind / Fast-forward: the next (+1) or previous (-1) mode."""
    delta: int = 1


@dataclass(frozen=True, slots=True)
class PlayPause:
    """Play: toggle play/pause of the source (file or line-in)."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop: silence and rewind the file."""


@dataclass(frozen=True, slots=True)
class StepModel:
    """MODEL button / Marker ◀ ▶: the next (+1) or previous (-1) model in the library."""
    delta: int = 1


@dataclass(frozen=True, slots=True)
class SavePreset:
    slot: int


@dataclass(frozen=True, slots=True)
class RecallPreset:
    slot: int


@dataclass(frozen=True, slots=True)
class ToggleRecording:
    """Start or stop recording the output to a WAV file."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Cycle: quit the application (on the box, after a confirm)."""


@dataclass(frozen=True, slots=True)
class SwapModel:
    """Play ``prepared`` (a device.sound.engine.PreparedModel, loaded off the audio thread)
    from the next hop boundary, crossfading from the current model."""
    prepared: object


# -- motion: per-unit LFOs and the motion recorder (device.state.modulation) ----------------------
LFO_SHAPES = ("sine", "triangle", "square", "saw", "random")  # random: sample and hold
MOTION_STATES = ("stop", "record", "loop")


@dataclass(frozen=True, slots=True)
class SetLfoRate:
    """LFO rate of ``unit`` in Hz (device.state.controls.LFO_RATE_RANGE)."""
    unit: int
    hz: float


@dataclass(frozen=True, slots=True)
class SetLfoDepth:
    """LFO depth of ``unit``, 0..1: the adjusted value swings over a·(1 ± depth); 0 is off."""
    unit: int
    depth: float


@dataclass(frozen=True, slots=True)
class SetLfoShape:
    """LFO shape of ``unit``: one of LFO_SHAPES."""
    unit: int
    shape: str


@dataclass(frozen=True, slots=True)
class StepLfoShape:
    """The next (+1) or previous (-1) LFO shape of ``unit`` (a button cycles them)."""
    unit: int
    delta: int = 1


@dataclass(frozen=True, slots=True)
class SetMotion:
    """The motion recorder: "record" (a new take), "loop" (play the take), "stop" (hold)."""
    state: str


@dataclass(frozen=True, slots=True)
class ToggleMotionRecord:
    """R3 / ``o``: start recording a take; while recording, end it and loop it."""


@dataclass(frozen=True, slots=True)
class ToggleMotionLoop:
    """R4 / ``p``: loop the recorded take, or stop it where it is."""


@dataclass(frozen=True, slots=True)
class LoadMotion:
    """Make ``take`` (a device.state.modulation.MotionTake from a preset or the last state)
    the motion recorder's take, then ``state``: "loop" (play it) or "stop"."""
    take: object
    state: str = "loop"


# -- pitch: notes from a MIDI keyboard (device.sound.pitch) ---------------------------------------
@dataclass(frozen=True, slots=True)
class NoteOn:
    """A key pressed: ``note`` 0..127 (MIDI number, 60 = middle C), ``velocity`` 1..127."""
    note: int
    velocity: int = 100


@dataclass(frozen=True, slots=True)
class NoteOff:
    note: int


@dataclass(frozen=True, slots=True)
class NotesOff:
    """Every key released.  ``drone``: back to playing untransposed with the gate open
    (the keyboard was unplugged); otherwise the gate closes with its release."""
    drone: bool = False


@dataclass(frozen=True, slots=True)
class SetNoteGate:
    """Pitch settings: the reference ``note`` (plays untransposed), attack and release in s."""
    reference: int = 60
    attack_s: float = 0.01
    release_s: float = 0.25


@dataclass(frozen=True, slots=True)
class SetLevel:
    """Gain staging (device.sound.level): the program level with no input, ``reference_dbfs``
    (dB RMS re full scale, -60..0), and the output limiter's ``ceiling_dbfs`` (-20..0);
    None leaves a value as it is."""
    reference_dbfs: float | None = None
    ceiling_dbfs: float | None = None

