"""Spectral features: frame configurations, STFT analysis/synthesis, normalisers.

This is the only feature code in aesynth: ``train/`` imports it to build its
datasets, and the engine on the box runs it every hop, so training and playing
can never disagree about what a "frame" is.

Conventions (the same in batch and streaming form):

* A frame is the newest ``win_length`` samples; hop ``t`` of a stream ends at
  sample ``(t + 1) * hop_length``.  The windowed frame starts the
  ``n_fft``-point FFT buffer (zero padding after it when ``win_length < n_fft``).
* Synthesis is weighted overlap-add (WOLA) with a synthesis window chosen so
  that ``sum_k w_a[n + k*hop] * w_s[n + k*hop] == 1`` for every ``n``: the
  identity is checked when a :class:`FrameConfig` is built.
* Algorithmic latency is the length of the synthesis window's support: the
  2048-sample Hann frame of the paper is 2048 samples (93 ms at 22050 Hz), the
  asymmetric pair of Mauler & Martin (2011) only its short synthesis part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.errors import FeatureError, FrameConfigError

WINDOWS = ("hann", "asymmetric")

# numpy >= 2.0 lets the FFTs write into a preallocated array; the streaming
# path uses that so a hop allocates nothing.  numpy < 2 (needed by the
# tflite-runtime fallback) still works, with one small allocation per FFT.
try:
    np.fft.rfft(np.zeros(4), out=np.zeros(3, complex))
    _FFT_HAS_OUT = True
except TypeError:  # pragma: no cover - numpy < 2
    _FFT_HAS_OUT = False


def hann(length: int) -> np.ndarray:
    """Periodic Hann window of ``length`` samples (sums to a constant at hop length/2)."""
    n = np.arange(length)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def asymmetric_pair(win_length: int, synthesis_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Mauler & Martin's low-delay analysis/synthesis window pair.

    The analysis window rises over ``win_length - synthesis_length/2`` samples
    (the square root of a long Hann half) and falls over the last
    ``synthesis_length/2`` (the square root of a short Hann half); the
    synthesis window is zero except on the last ``synthesis_length`` samples,
    where the product of the two is a Hann window of ``synthesis_length``.
    Frequency resolution comes from the long window, latency from the short one.
    """
    K, L = win_length, synthesis_length
    M = L // 2
    long_half = hann(2 * (K - M))[: K - M]  # rising half of a Hann of 2(K-M)
    short = hann(L)
    wa = np.empty(K)
    wa[: K - M] = np.sqrt(long_half)
    wa[K - M :] = np.sqrt(short[M:])
    ws = np.zeros(K)
    rising = slice(K - L, K - M)
    with np.errstate(divide="ignore", invalid="ignore"):
        ws[rising] = short[:M] / wa[rising]
    ws[rising][~np.isfinite(ws[rising])] = 0.0
    ws[K - M :] = np.sqrt(short[M:])
    return wa, ws


def _wola_sum(wa: np.ndarray, ws: np.ndarray, hop: int) -> np.ndarray:
    """``sum_k wa[n + k*hop] * ws[n + k*hop]`` for n in 0..hop-1."""
    prod = wa * ws
    pad = (-len(prod)) % hop
    return np.pad(prod, (0, pad)).reshape(-1, hop).sum(axis=0)


@dataclass(frozen=True)
class FrameConfig:
    """How audio is cut into frames and put back together.

    sample_rate: Hz.  n_fft: FFT size in samples (bins = n_fft/2 + 1).
    win_length: analysis window length in samples (<= n_fft).
    hop_length: samples between frames; also the engine's block size.
    window: ``"hann"`` (the paper) or ``"asymmetric"`` (Mauler & Martin).
    synthesis_length: for ``"asymmetric"``, the synthesis window's support in
    samples (2M in the paper's notation); it sets the latency.
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    win_length: int = 2048
    hop_length: int = 512
    window: str = "hann"
    synthesis_length: int | None = None
    analysis_window: np.ndarray = field(init=False, repr=False, compare=False)
    synthesis_window: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_ranges()
        wa, ws = self._make_windows()
        sums = _wola_sum(wa, ws, self.hop_length)
        if not np.all(sums > 1e-6) or np.ptp(sums) > 1e-9 * np.max(sums):
            raise FrameConfigError(
                f"window {self.window!r} (win_length={self.win_length}, "
                f"synthesis_length={self.synthesis_length}) does not reconstruct at "
                f"hop_length={self.hop_length}: overlap-add sum ranges "
                f"{sums.min():.6g}..{sums.max():.6g}, must be constant and > 0",
                field="hop_length")
        ws = ws / sums[0]
        for a in (wa, ws):
            a.setflags(write=False)
        object.__setattr__(self, "analysis_window", wa)
        object.__setattr__(self, "synthesis_window", ws)

    def _check_ranges(self) -> None:
        def need(name: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise FrameConfigError(
                    f"{name} must be {allowed}, got {getattr(self, name)!r}", field=name)

        for name in ("sample_rate", "n_fft", "win_length", "hop_length"):
            need(name, isinstance(getattr(self, name), int) and not isinstance(
                getattr(self, name), bool), "an integer")
        need("sample_rate", 8000 <= self.sample_rate <= 192000, "in 8000..192000 Hz")
        need("n_fft", 16 <= self.n_fft <= 16384 and self.n_fft % 2 == 0,
             "even and in 16..16384")
        need("win_length", 16 <= self.win_length <= self.n_fft, f"in 16..n_fft={self.n_fft}")
        need("hop_length", 1 <= self.hop_length <= self.win_length,
             f"in 1..win_length={self.win_length}")
        need("window", self.window in WINDOWS, f"one of {', '.join(WINDOWS)}")
        if self.window == "asymmetric":
            L = self.synthesis_length
            need("synthesis_length", isinstance(L, int) and L % 2 == 0
                 and self.hop_length <= L <= self.win_length // 2,
                 f"an even integer in hop_length={self.hop_length}..win_length/2="
                 f"{self.win_length // 2}")
        elif self.synthesis_length not in (None, self.win_length):
            raise FrameConfigError(
                f"synthesis_length is only for window 'asymmetric', got "
                f"{self.synthesis_length!r} with window {self.window!r}",
                field="synthesis_length")

    def _make_windows(self) -> tuple[np.ndarray, np.ndarray]:
        if self.window == "hann":
            wa = hann(self.win_length)
            # The canonical dual window: reconstructs exactly at any hop where
            # the squared window overlaps everywhere (checked by the caller).
            sq = _wola_sum(wa, wa, self.hop_length)
            if np.any(sq <= 1e-6):
                raise FrameConfigError(
                    f"hann window of win_length={self.win_length} leaves gaps at "
                    f"hop_length={self.hop_length}: hop must be < win_length",
                    field="hop_length")
            idx = np.arange(self.win_length) % self.hop_length
            return wa, wa / sq[idx]
        return asymmetric_pair(self.win_length, self.synthesis_length)

    # -- derived quantities -------------------------------------------------
    @property
    def n_bins(self) -> int:
        """Number of magnitude bins (n_fft/2 + 1; 1025 for the paper)."""
        return self.n_fft // 2 + 1

    @property
    def synthesis_support(self) -> int:
        """Samples at the end of a frame where the synthesis window is non-zero."""
        nz = np.flatnonzero(self.synthesis_window)
        return self.win_length - int(nz[0])

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency in samples: input sample to output sample, one hop
        of block collection included, no sound-card buffering."""
        return self.synthesis_support

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.sample_rate

    @property
    def hop_ms(self) -> float:
        return 1000.0 * self.hop_length / self.sample_rate

    @property
    def stream_delay(self) -> int:
        """Samples by which the streaming output lags its input (latency - hop)."""
        return self.latency_samples - self.hop_length

    # -- manifest form -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "win_length": self.win_length,
            "hop_length": self.hop_length,
            "window": self.window,
        }
        if self.window == "asymmetric":
            d["synthesis_length"] = self.synthesis_length
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrameConfig:
        keys = ("sample_rate", "n_fft", "win_length", "hop_length", "window",
                "synthesis_length")
        return cls(**{k: d[k] for k in keys if k in d})


# The paper's frame: 2048-point Hann at 22050 Hz, hop 512 (93 ms latency).
PAPER = FrameConfig(sample_rate=22050, n_fft=2048, win_length=2048, hop_length=512,
                    window="hann")
# The player's default: same 1025 bins, asymmetric windows, 11.6 ms latency.
LOW_LATENCY = FrameConfig(sample_rate=22050, n_fft=2048, win_length=2048, hop_length=128,
                          window="asymmetric", synthesis_length=256)


# -- batch STFT ---------------------------------------------------------------
def frame_count(n_samples: int, config: FrameConfig) -> int:
    """Frames needed so every one of ``n_samples`` is covered by all its frames."""
    R = config.hop_length
    return -(-(n_samples + config.win_length - R) // R)


def stft(x: np.ndarray, *, config: FrameConfig) -> np.ndarray:
    """Complex spectra of a mono signal, shape (frames, n_bins).

    Frame ``t`` ends at sample ``(t + 1) * hop_length`` exactly as in
    :class:`StreamAnalyzer`, so batch and streaming give the same frames.
    """
    x = np.asarray(x)
    if x.ndim != 1:
        raise FeatureError(f"stft wants a mono 1-D signal, got shape {x.shape}")
    K, R = config.win_length, config.hop_length
    n_frames = frame_count(len(x), config)
    total = (n_frames - 1) * R + K
    padded = np.zeros(total, dtype=np.float64)
    padded[K - R : K - R + len(x)] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, K)[::R]
    return np.fft.rfft(frames * config.analysis_window, n=config.n_fft, axis=-1)


def istft(spectra: np.ndarray, *, config: FrameConfig, length: int | None = None) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`stft`; ``length`` trims to the input's."""
    spectra = np.asarray(spectra)
    if spectra.ndim != 2 or spectra.shape[1] != config.n_bins:
        raise FeatureError(
            f"istft wants spectra of shape (frames, {config.n_bins}), got {spectra.shape}"
        )
    K, R = config.win_length, config.hop_length
    frames = np.fft.irfft(spectra, n=config.n_fft, axis=-1)[:, :K] * config.synthesis_window
    n_frames = len(frames)
    out = np.zeros((n_frames - 1) * R + K)
    for t in range(n_frames):
        out[t * R : t * R + K] += frames[t]
    out = out[K - R :]
    return out if length is None else out[:length]


def magphase(spectra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude and phase (radians) of complex spectra."""
    return np.abs(spectra), np.angle(spectra)


def magnitudes(x: np.ndarray, *, config: FrameConfig) -> np.ndarray:
    """Magnitude spectra of a signal, shape (frames, n_bins): what the models see."""
    return np.abs(stft(x, config=config))


# -- streaming STFT -------------------------------------------------------------
class StreamAnalyzer:
    """One hop of audio in, one complex spectrum out; allocates nothing per hop."""

    def __init__(self, config: FrameConfig):
        self.config = config
        self._buf = np.zeros(config.win_length)
        self._fft_in = np.zeros(config.n_fft)
        self._spec = np.zeros(config.n_bins, dtype=np.complex128)

    def reset(self) -> None:
        self._buf[:] = 0.0

    def push(self, block: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Add ``hop_length`` samples; return the newest frame's spectrum.

        ``out`` (complex, n_bins) receives it; without it an internal buffer is
        returned, overwritten by the next call.
        """
        cfg = self.config
        R, K = cfg.hop_length, cfg.win_length
        if block.shape != (R,):
            raise FeatureError(f"a hop is {R} samples, got block of shape {block.shape}")
        buf = self._buf
        buf[: K - R] = buf[R:]
        buf[K - R :] = block
        fin = self._fft_in
        np.multiply(buf, cfg.analysis_window, out=fin[:K])
        dest = self._spec if out is None else out
        if _FFT_HAS_OUT:
            np.fft.rfft(fin, out=dest)
        else:  # pragma: no cover
            dest[:] = np.fft.rfft(fin)
        return dest


class StreamSynthesizer:
    """One complex spectrum in, one hop of audio out (WOLA); allocates nothing per hop."""

    def __init__(self, config: FrameConfig):
        self.config = config
        self._support = config.synthesis_support
        self._frame = np.zeros(config.n_fft)
        self._acc = np.zeros(self._support)
        self._tail = np.zeros(self._support)
        self._ws = np.ascontiguousarray(config.synthesis_window[-self._support :])
        self._block = np.zeros(config.hop_length)

    def reset(self) -> None:
        self._acc[:] = 0.0

    def push(self, spectrum: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Overlap-add one frame; return the ``hop_length`` samples now complete."""
        cfg = self.config
        R, S = cfg.hop_length, self._support
        if _FFT_HAS_OUT:
            np.fft.irfft(spectrum, n=cfg.n_fft, out=self._frame)
        else:  # pragma: no cover
            self._frame[:] = np.fft.irfft(spectrum, n=cfg.n_fft)
        K = cfg.win_length
        np.multiply(self._frame[K - S : K], self._ws, out=self._tail)
        acc = self._acc
        acc += self._tail
        dest = self._block if out is None else out
        dest[:] = acc[:R]
        acc[: S - R] = acc[R:]
        acc[S - R :] = 0.0
        return dest


# -- normalisers ------------------------------------------------------------------
NORMALISERS = ("max", "logmax", "standard")
LOG_FEATURE_FLOOR = 1e-3  # the log normalisers' log(m + floor), magnitude units, by default


@dataclass(frozen=True)
class Normaliser:
    """Magnitudes ↔ model features: ``y = (a(x) - offset) / scale``.

    ``a`` is the identity (``amplitude="linear"``) or ``log(x + floor)``
    (``"log"``).  ``offset`` and ``scale`` are scalars or per-bin arrays.
    Kinds, fitted on training magnitudes by :meth:`fit`:

    * ``"max"``: the paper — linear amplitude divided by the global maximum, so
      training data lies in [0, 1].
    * ``"logmax"``: log amplitude, min-max scaled to [0, 1].
    * ``"standard"``: log amplitude, standardised per bin (mean 0, std 1).
    """

    kind: str
    amplitude: str
    floor: float
    offset: Any
    scale: Any

    def __post_init__(self) -> None:
        if self.kind not in NORMALISERS:
            raise FeatureError(
                f"normaliser kind must be one of {', '.join(NORMALISERS)}, got {self.kind!r}"
            )
        if self.amplitude not in ("linear", "log"):
            raise FeatureError(
                f"normaliser amplitude must be 'linear' or 'log', got {self.amplitude!r}"
            )
        floor = float(self.floor)
        if not math.isfinite(floor) or floor < 0 or (self.amplitude == "log" and floor <= 0):
            raise FeatureError(
                f"normaliser floor must be finite and > 0 for log amplitude (>= 0 for "
                f"linear), got {self.floor!r}"
            )
        object.__setattr__(self, "floor", floor)
        for name in ("offset", "scale"):
            a = np.asarray(getattr(self, name), dtype=np.float64)
            if a.ndim > 1:
                raise FeatureError(f"normaliser {name} must be a scalar or a 1-D array, "
                                   f"got shape {a.shape}")
            if not np.all(np.isfinite(a)):
                raise FeatureError(f"normaliser {name} must be finite, got non-finite values")
            if name == "scale" and not np.all(a > 0):
                raise FeatureError(f"normaliser scale must be > 0, got min {a.min()!r}")
            a = a.copy()
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    @property
    def n_bins(self) -> int | None:
        """Bins the per-bin constants are for; None when all constants are scalars."""
        sizes = {a.size for a in (self.offset, self.scale) if a.ndim == 1}
        return sizes.pop() if sizes else None

    def forward(self, mag: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Magnitudes → features (``out=`` for the real-time path)."""
        if out is None:
            out = np.empty(np.shape(mag), dtype=np.float64)
        if self.amplitude == "log":
            np.add(mag, self.floor, out=out)
            np.log(out, out=out)
        else:
            out[...] = mag
        out -= self.offset
        out /= self.scale
        return out

    def inverse(self, features: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Features → magnitudes, never negative (``out=`` for the real-time path)."""
        if out is None:
            out = np.empty(np.shape(features), dtype=np.float64)
        np.multiply(features, self.scale, out=out)
        out += self.offset
        if self.amplitude == "log":
            # Clip before exp: a wild decoder output must not overflow to inf.
            np.minimum(out, 30.0, out=out)
            np.exp(out, out=out)
            out -= self.floor
        np.maximum(out, 0.0, out=out)
        return out

    @classmethod
    def fit(cls, mags: np.ndarray, *, kind: str = "max", floor: float = LOG_FEATURE_FLOOR
            ) -> Normaliser:
        """Fit the constants of ``kind`` on training magnitudes (frames, bins)."""
        mags = np.asarray(mags, dtype=np.float64)
        if kind == "max":
            top = float(mags.max())
            return cls("max", "linear", 0.0, 0.0, top if top > 0 else 1.0)
        logs = np.log(mags + floor)
        if kind == "logmax":
            lo, hi = float(logs.min()), float(logs.max())
            return cls("logmax", "log", floor, lo, hi - lo if hi > lo else 1.0)
        if kind == "standard":
            std = logs.std(axis=0)
            return cls("standard", "log", floor, logs.mean(axis=0),
                       np.where(std > 1e-6, std, 1.0))
        raise FeatureError(f"normaliser kind must be one of {', '.join(NORMALISERS)}, "
                           f"got {kind!r}")

    def to_dict(self) -> dict[str, Any]:
        def plain(a: np.ndarray) -> Any:
            return float(a) if a.ndim == 0 else [float(v) for v in a]

        return {"kind": self.kind, "amplitude": self.amplitude, "floor": self.floor,
                "offset": plain(self.offset), "scale": plain(self.scale)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normaliser:
        try:
            return cls(d["kind"], d["amplitude"], d["floor"], d["offset"], d["scale"])
        except KeyError as e:
            raise FeatureError(f"normaliser is missing the field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            if isinstance(e, FeatureError):
                raise
            raise FeatureError(f"normaliser constants are not numbers: {e}") from None
