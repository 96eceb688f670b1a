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
    """Play ``prepared`` (a device.engine.PreparedModel, loaded off the audio thread)
    from the next hop boundary, crossfading from the current model."""
    prepared: object


@dataclass(frozen=True, slots=True)
class SetLevel:
    """Gain staging (device.level): the program level with no input, ``reference_dbfs``
    (dB RMS re full scale, -60..0), and the output limiter's ``ceiling_dbfs`` (-20..0);
    None leaves a value as it is."""
    reference_dbfs: float | None = None
    ceiling_dbfs: float | None = None

