"""Phase for generated magnitudes: RTPGHI, the seed's per-bin phase advance, random.

Generate mode has magnitudes and no phase.  A phase generator turns one
magnitude frame (n_bins, linear amplitude) into one complex spectrum per hop,
keeping whatever state it needs, and allocates nothing per hop.

* ``"advance"``: the seed's vocoder; bin k turns by 2πk·hop/n_fft every hop,
  whatever the magnitudes do (the baseline).
* ``"random"``: uniform random phase every hop (the floor of the comparison).
* ``"rtpghi"``: real-time phase gradient heuristic integration (Průša and
  Holighaus 2017), see :class:`RTPGHI`.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from device.errors import FeatureError
from device.features import FrameConfig

PHASES = ("rtpghi", "advance", "random")


class PhaseGenerator(Protocol):
    def reset(self) -> None: ...
    def synthesize(self, mag: np.ndarray, out: np.ndarray) -> np.ndarray: ...


def _polar(mag: np.ndarray, phase: np.ndarray, out: np.ndarray) -> np.ndarray:
    """mag·e^{i·phase} into complex ``out`` without temporaries."""
    np.cos(phase, out=out.real)
    np.sin(phase, out=out.imag)
    out.real *= mag
    out.imag *= mag
    return out


class PhaseAdvance:
    """Each bin's phase advances at the bin's centre frequency (the seed's vocoder)."""

    def __init__(self, frame: FrameConfig):
        self.frame = frame
        k = np.arange(frame.n_bins)
        self._step = 2.0 * np.pi * k * frame.hop_length / frame.n_fft
        self._step %= 2.0 * np.pi
        self._phase = np.zeros(frame.n_bins)

    def reset(self) -> None:
        self._phase[:] = 0.0

    def synthesize(self, mag: np.ndarray, out: np.ndarray) -> np.ndarray:
        self._phase += self._step
        np.remainder(self._phase, 2.0 * np.pi, out=self._phase)  # keep cos/sin exact
        return _polar(mag, self._phase, out)


class RandomPhase:
    """Uniformly random phase every hop; ``seed`` makes it repeatable."""

    def __init__(self, frame: FrameConfig, *, seed: int = 0):
        self.frame = frame
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._phase = np.zeros(frame.n_bins)

    def reset(self) -> None:
        self._rng = np.random.default_rng(self._seed)

    def synthesize(self, mag: np.ndarray, out: np.ndarray) -> np.ndarray:
        self._rng.random(out=self._phase)
        self._phase *= 2.0 * np.pi
        return _polar(mag, self._phase, out)


def make_phase(name: str, frame: FrameConfig, *, seed: int = 0) -> PhaseGenerator:
    """The phase generator called ``name`` (one of :data:`PHASES`) for ``frame``."""
    if name == "advance":
        return PhaseAdvance(frame)
    if name == "random":
        return RandomPhase(frame, seed=seed)
    if name == "rtpghi":
        return RTPGHI(frame)
    raise FeatureError(f"phase must be one of {', '.join(PHASES)}, got {name!r}")


class RTPGHI(PhaseAdvance):
    """Placeholder until the real integration lands: behaves as phase advance."""

    def __init__(self, frame: FrameConfig):
        super().__init__(frame)
        self.gamma = 0.25645 * frame.win_length ** 2 * math.pi / math.pi
