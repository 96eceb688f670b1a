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

from typing import Protocol

import numpy as np

from device.errors import FeatureError
from device.sound.features import FrameConfig

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


def gamma_for(frame: FrameConfig) -> float:
    """PGHI's window constant γ (samples²) for ``frame``'s analysis window.

    Průša et al. give γ = 0.25645·L² for a Hann window of L samples, from
    the Gaussian that fits it best.  Our asymmetric (Mauler & Martin) window
    is not symmetric, so we match time spread instead: γ scales with the
    variance of w², calibrated so that a Hann window gets exactly the
    published constant.
    """

    def spread(w: np.ndarray) -> float:
        p = w * w
        t = np.arange(len(w))
        mean = float(np.dot(t, p) / p.sum())
        return float(np.dot((t - mean) ** 2, p) / p.sum())

    from device.sound.features import hann

    L = frame.win_length
    kappa = 0.25645 * L * L / spread(hann(L))
    return kappa * spread(np.asarray(frame.analysis_window))


class RTPGHI:
    """Real-time phase gradient heuristic integration, one frame of look-ahead.

    From Průša & Holighaus, "Phase vocoder done right" (2017), with the
    frequency-invariant phase convention.  For a frame of log-magnitudes
    s (bins m, hops n), with hop a, FFT size M and window constant γ:

        φ_t(m, n) = (a·M/γ) · ∂s/∂m + 2π·a·m/M      phase advance per hop
        φ_ω(m, n) = -(γ/(a·M)) · ∂s/∂n              phase step per bin

    (centred differences, plus -2π·c/M per bin because our frames are
    referenced to their start, not their centre c; the time difference needs the next frame, hence
    one hop of delay — harmless in generate mode, which has no input).
    The paper integrates with a max-heap: the loudest known bin spreads its
    phase to its neighbours first.  A Python heap costs milliseconds per
    frame, so this integrates the same way, vectorised: every spectral peak
    advances in time with the trapezoid of φ_t, and every other bin takes
    the phase of the peak whose lobe it lies in (split at the valley between
    two peaks), integrated across bins with the trapezoid of φ_ω.  Bins more
    than ``tol_db`` below the frame's maximum carry noise, not partials: they
    take the plain time integration (random phase once the spectrum holds still).

    **Held spectra** (generate mode with the faders still).  A frame that does
    not change gets the same phase advance every hop, so the output is a sum of
    steady sinusoids; on the bin grid (a broad hump collapses onto its peak's
    lobe, a flat region onto bin centres) it repeats every n_fft samples: a
    buzz, not a sustained sound.  So the generator measures how still the
    spectrum is, ``w`` in 0..1: the magnitude-weighted mean change of the
    log-magnitudes over one window (n_fft samples), 0 at ``still_db`` or more,
    1 when nothing changed.  Real music moves by several dB per window
    (``w`` ≈ 0: plain RTPGHI, the figures of ``bench/phase_bench.py``); a held
    decoder output moves by nothing.  In proportion to ``w``:

    * a *tonal* peak (at least ``tonal_db`` above the higher of the two
      valleys that bound its lobe, and within ``tol_db`` of the maximum)
      advances at its quadratic-interpolated frequency, and its phase also
      diffuses (a random walk of variance 2π·``line_hz``·hop/sample_rate rad²
      per hop): a Lorentzian line
      ``line_hz`` wide, whose autocorrelation at lag τ decays as
      exp(-π·line_hz·τ): 0.17 at τ = n_fft for 6 Hz at 22050 Hz;
    * every other bin (a broad hump, a flat floor, anything below the
      tolerance: PGHI's rule for coefficients too small to integrate) is
      noise-like and takes uniformly random phase each hop.

    ``seed`` makes the randomness repeatable; ``hold=False`` turns all of this
    off (the published algorithm, for comparison).
    """

    def __init__(self, frame: FrameConfig, *, tol_db: float = 100.0, still_db: float = 1.0,
                 tonal_db: float = 6.0, line_hz: float = 6.0, seed: int = 0,
                 hold: bool = True):
        if not 0 < still_db <= 20 or not 0 <= line_hz <= 100 or not 0 < tonal_db <= 60:
            raise FeatureError(f"RTPGHI needs still_db in (0, 20] dB, tonal_db in (0, 60] dB "
                               f"and line_hz in 0..100 Hz, got still_db={still_db!r}, "
                               f"tonal_db={tonal_db!r}, line_hz={line_hz!r}")
        self.frame = frame
        n = frame.n_bins
        a, M = frame.hop_length, frame.n_fft
        self.gamma = gamma_for(frame)
        self._t_scale = a * M / self.gamma / 2.0  # /2: centred difference over 2 bins
        self._f_scale = -self.gamma / (a * M) / 2.0
        # PGHI assumes a window centred on time 0; ours starts the frame, so
        # each bin also turns by -2π·c/M, c the centre of the window's energy
        # (w², as for γ): for the asymmetric pair that is 1387, not the 1269 of
        # w, and worth about 1.5 dB of spectral convergence at low latency.
        w = np.asarray(frame.analysis_window)
        self._f_offset = -2.0 * np.pi * float(np.dot(np.arange(len(w)), w * w) / np.dot(w, w)) / M
        # A decoded lobe is broader than a sinusoid's: in time it is a short pulse
        # around that centre, which on the asymmetric pair lies far before the
        # 256 samples the synthesis window keeps (its energy was lost: dark notches
        # at every tonal peak).  Held frames centre it on the synthesis window's
        # energy instead (the same place for the symmetric Hann frame).
        ws = np.asarray(frame.synthesis_window)
        self._f_offset_held = -2.0 * np.pi * float(
            np.dot(np.arange(len(ws)), ws * ws) / np.dot(ws, ws)) / M
        self._omega = 2.0 * np.pi * a * np.arange(n) / M
        self._tol = tol_db / 20.0 * np.log(10.0)  # natural-log amplitude
        self._idx = np.arange(n)
        self._mag = np.zeros((2, n))  # this frame, next frame (look-ahead)
        self._s = np.zeros((3, n))  # log-magnitudes: previous, this, next
        self._tg = np.zeros((2, n))  # φ_t: previous frame, this frame
        self._fg = np.zeros(n)
        self._phase = np.zeros(n)
        self._step = np.zeros(n)
        self._cum = np.zeros(n)
        self._peak = np.zeros(n, dtype=bool)
        self._tmp_b = np.zeros(n - 2, dtype=bool)
        self._tmp_b2 = np.zeros(n - 2, dtype=bool)
        self._tmp_n = np.zeros(n, dtype=bool)
        self._use_left = np.zeros(n, dtype=bool)
        self._left = np.zeros(n, dtype=np.intp)
        self._right = np.zeros(n, dtype=np.intp)
        self._valley = np.zeros(n, dtype=np.intp)
        self._owner = np.zeros(n, dtype=np.intp)
        self._scratch = np.zeros(n, dtype=np.intp)
        self._gather = np.zeros(n)
        self._quiet = np.zeros(n, dtype=bool)
        self._frames = 0
        # Held spectra (see the class docstring).
        self.hold = hold
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._still = still_db / 20.0 * np.log(10.0)  # natural-log amplitude
        self._sigma = float(np.sqrt(2.0 * np.pi * line_hz * a / frame.sample_rate))
        self._tonal_prom = tonal_db / 20.0 * np.log(10.0)
        self._prom = np.zeros(n)
        self._ones = np.ones(n)
        self._same = np.zeros(n, dtype=bool)
        self._unchanged = 0
        self._held_before = False
        self._peak_step = np.zeros(n)
        self._outmag = np.zeros(n)
        self._noise_gain = float(np.sqrt(frame.n_fft * a / (
            np.sum(np.asarray(frame.synthesis_window) ** 2) * np.sum(w * w))))
        self._bins = np.arange(n, dtype=np.float64)  # float: adding intp would buffer a cast
        self._first = np.zeros(n, dtype=np.intp)
        self._last = np.zeros(n, dtype=np.intp)
        self._bin_step = 2.0 * np.pi * a / M  # phase advance per hop per bin of frequency
        self._history = np.zeros((max(1, round(M / a)), n))  # log-magnitudes, one window back
        self._hist_at = 0
        self._diff = np.zeros(n)
        self._curv = np.zeros(n)
        self._num = np.zeros(n)
        self._noise = np.zeros(n)
        self._tonal = np.zeros(n, dtype=bool)
        self._noisy = np.zeros(n, dtype=bool)
        self.stillness = 0.0  # w of the last frame, 0..1
        # The bins of the last frame that were noise-like (all False unless held); the
        # engine synthesises them apart, each part kept to its own energy.
        self.noisy = self._noisy

    def reset(self) -> None:
        for a in (self._mag, self._s, self._tg, self._phase, self._history):
            a[...] = 0.0
        self._frames = 0
        self._hist_at = 0
        self._rng = np.random.default_rng(self._seed)
        self.stillness = 0.0
        self._noisy[:] = False
        self._unchanged = 0
        self._held_before = False

    def _measure_stillness(self) -> float:
        """w in 0..1 from the newest frame against the one a window earlier."""
        newest, hist = self._s[2], self._history
        old = hist[self._hist_at]
        np.subtract(newest, old, out=self._diff)
        np.abs(self._diff, out=self._diff)
        total = float(self._mag[1].dot(self._ones))  # (.sum() buffers ~1 kB)
        moved = float(self._diff.dot(self._mag[1])) / total if total > 0 else 0.0
        old[:] = newest
        self._hist_at = (self._hist_at + 1) % len(hist)
        if self._frames <= len(hist):  # no full window seen yet: assume it moves
            return 0.0
        return min(max(1.0 - moved / self._still, 0.0), 1.0)

    def _prominence(self, s: np.ndarray) -> None:
        """``_prom[m]``: how far bin m stands above the higher of its lobe's two edges
        (the valleys to the neighbouring peaks); meaningful at peaks."""
        owner, idx, n = self._owner, self._idx, len(s)
        edge, first, last = self._tmp_n, self._first, self._last
        # first bin of each lobe: owner changes from the bin before
        edge[0] = True
        np.not_equal(owner[1:], owner[:-1], out=edge[1:])
        scratch = self._scratch
        scratch[:] = 0
        np.copyto(scratch, idx, where=edge)
        np.maximum.accumulate(scratch, out=first)
        # last bin of each lobe: owner changes to the bin after
        edge[-1] = True
        np.not_equal(owner[:-1], owner[1:], out=edge[:-1])
        scratch[:] = n - 1
        np.copyto(scratch, idx, where=edge)
        np.minimum.accumulate(scratch[::-1], out=last[::-1])
        prom, lo = self._prom, self._diff
        s.take(first, out=prom, mode="clip")
        s.take(last, out=lo, mode="clip")
        np.maximum(prom, lo, out=prom)
        np.subtract(s, prom, out=prom)

    def _hold_peaks(self, cur: np.ndarray, w: float, stable: bool) -> None:
        """Tonal peaks of a held frame: interpolated frequency and a diffusing phase.

        Marks ``_tonal`` (tonal peaks) and adds to ``_phase`` at them
        w·(ω(m + δ) - step + σ·z), δ the quadratic-interpolated offset in bins.
        ``stable``: the frame is the one of the last call, so the tonal peaks and
        their frequencies are too (kept from then).
        """
        curv, num, tonal = self._curv, self._num, self._tonal
        if not stable:
            curv[0] = curv[-1] = 0.0
            np.add(cur[:-2], cur[2:], out=curv[1:-1])
            curv[1:-1] -= cur[1:-1]
            curv[1:-1] -= cur[1:-1]
        if not stable:  # which peaks are tonal, and their frequencies, change with |Y|
            self._prominence(cur)
            np.greater_equal(self._prom, self._tonal_prom, out=tonal)
            tonal &= self._peak
            np.greater_equal(cur, cur.max() - self._tol, out=self._tmp_n)
            tonal &= self._tmp_n
            # δ = (s[m-1] - s[m+1]) / (2·curvature), in -0.5..0.5 at a peak
            freq = self._peak_step
            freq[0] = freq[-1] = 0.0
            np.subtract(cur[:-2], cur[2:], out=freq[1:-1])
            freq *= 0.5
            np.divide(freq, curv, out=freq, where=tonal)
            np.minimum(freq, 0.5, out=freq)  # (np.clip's Python wrapper costs µs)
            np.maximum(freq, -0.5, out=freq)
            freq += self._bins  # the peak's frequency, in bins
            freq *= self._bin_step  # as a phase advance per hop
        np.subtract(self._peak_step, self._step, out=num)  # less what the time step added
        self._rng.standard_normal(out=self._noise)
        self._noise *= self._sigma
        num += self._noise
        num *= w
        np.add(self._phase, num, out=self._phase, where=tonal)

    def synthesize(self, mag: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Take the newest magnitudes; return the previous frame with its phase."""
        s, tg = self._s, self._tg
        # shift the look-ahead window by one frame
        s[0] = s[1]
        s[1] = s[2]
        np.add(mag, 1e-12, out=s[2])
        np.log(s[2], out=s[2])
        # A frame equal to the one before, twice running, leaves this frame equal to
        # the last call's: its lobes, φ_t and tonal peaks are kept (a held setting).
        same = self._same
        np.not_equal(mag, self._mag[1], out=same)
        self._unchanged = 0 if same[same.argmax()] else self._unchanged + 1
        stable = self._unchanged >= 2 and self._frames > 2
        self._mag[0] = self._mag[1]
        self._mag[1] = mag
        first = self._frames == 0
        self._frames += 1
        cur = s[1]
        w = self.stillness = self._measure_stillness() if self.hold else 0.0
        # φ_t of this frame (centred difference across bins, one-sided at the edges)
        tg[0] = tg[1]
        if not stable:
            t = tg[1]
            np.subtract(cur[2:], cur[:-2], out=t[1:-1])
            t[0] = 2.0 * (cur[1] - cur[0])
            t[-1] = 2.0 * (cur[-1] - cur[-2])
            t *= self._t_scale
            t += self._omega
        # φ_ω of this frame (centred difference across hops)
        fg = self._fg
        np.subtract(s[2], s[0], out=fg)
        fg *= self._f_scale
        # A held frame's lobes are placed where the synthesis window reads (see __init__).
        fg += self._f_offset + w * (self._f_offset_held - self._f_offset)
        # time integration of every bin (trapezoid)
        step = self._step
        np.add(tg[0], tg[1], out=step)
        step *= 0.5
        phase = self._phase
        if not first:
            phase += step
        # frequency integration from peaks: cum[m] = Σ_{j<m} (φ_ω[j] + φ_ω[j+1]) / 2
        cum, inc = self._cum, self._gather  # (accumulating in place would copy)
        inc[0] = 0.0
        np.add(fg[:-1], fg[1:], out=inc[1:])
        inc[1:] *= 0.5
        # The ufunc's method: np.cumsum's Python wrapper costs µs, and ndarray.cumsum(out=)
        # keeps a small object every few hundred calls on numpy 2.4 (~150 kB an hour here).
        np.add.accumulate(inc, out=cum)
        quiet = self._quiet
        if not stable:
            self._assign_lobes(cur)
            np.less(cur, cur.max() - self._tol, out=quiet)
        if w > 0.0:
            # reads step (self._step) before it is reused below
            self._hold_peaks(cur, w, stable and self._held_before)
        self._held_before = w > 0.0
        if self._left[-1] >= 0:  # at least one peak: spread the peaks' phases over lobes
            owner, g = self._owner, self._gather
            phase.take(owner, out=g, mode="clip")  # "raise" buffers a copy
            g -= cum.take(owner, out=self._step, mode="clip")
            g += cum
            np.copyto(g, phase, where=quiet)
            phase[:] = g
        if w == 0.0:
            self._noisy[:] = False
        else:
            # Noise-like bins of a held frame (not in a tonal peak's lobe, or below the
            # tolerance) decorrelate: w·2π·(U - 1/2) on top, uniform at w = 1.
            noisy = self._noisy
            self._tonal.take(self._owner, out=noisy, mode="clip")
            np.logical_not(noisy, out=noisy)
            noisy |= self._quiet
            noise = self._noise
            self._rng.random(out=noise)
            noise -= 0.5
            noise *= 2.0 * np.pi * w
            np.add(phase, noise, out=phase, where=noisy)
        # Wrap to [-π, π] (keeps cos/sin exact); rint is 3x faster than remainder.
        turns = self._step
        np.multiply(phase, 1.0 / (2.0 * np.pi), out=turns)
        np.rint(turns, out=turns)
        turns *= 2.0 * np.pi
        phase -= turns
        if w > 0.0:
            # Random phase adds up incoherently across overlapping frames: a hop carries
            # Σw_s²·Σw_a²/(n_fft·hop) of the energy a consistent spectrum gives (-3.6 dB
            # on the low-latency frame, -6 dB on the paper's), so noise-like bins are
            # raised by its inverse square root, in proportion to w: the balance of
            # noise to partials stays the decoded spectrum's.
            mag = self._outmag
            mag[:] = self._mag[0]
            np.multiply(mag, 1.0 + w * (self._noise_gain - 1.0), out=mag, where=self._noisy)
            return _polar(mag, phase, out)
        return _polar(self._mag[0], phase, out)

    def _assign_lobes(self, s: np.ndarray) -> None:
        """owner[m] = the peak whose lobe bin m lies in (valleys split lobes)."""
        n = len(s)
        peak, b = self._peak, self._tmp_b
        peak[0] = s[0] > s[1]
        peak[-1] = s[-1] > s[-2]
        np.greater(s[1:-1], s[:-2], out=peak[1:-1])
        np.greater_equal(s[1:-1], s[2:], out=b)
        peak[1:-1] &= b
        idx, left, right = self._idx, self._left, self._right
        # nearest peak at or left of m (-1 if none)
        # (each accumulates from a scratch buffer: accumulating in place copies)
        scratch = self._scratch
        scratch[:] = -1
        np.copyto(scratch, idx, where=peak)
        np.maximum.accumulate(scratch, out=left)
        # nearest peak at or right of m (n if none)
        scratch[:] = n
        np.copyto(scratch, idx, where=peak)
        np.minimum.accumulate(scratch[::-1], out=right[::-1])
        # m belongs to its left peak on a falling slope (s[m] >= s[m+1]: between
        # that peak and the valley) and to its right peak on a rising one; the
        # same split as at the valley, without finding valleys.
        owner, use_left, w = self._owner, self._use_left, self._tmp_n
        np.greater_equal(s[:-1], s[1:], out=use_left[:-1])
        use_left[-1] = True
        np.greater_equal(right, n, out=w)  # no peak to the right: the left one
        use_left |= w
        np.greater_equal(left, 0, out=w)  # no peak to the left: the right one
        use_left &= w
        np.copyto(owner, right)
        np.copyto(owner, left, where=use_left)


SLEW_DB = 1.0    # the level keeper's gain moves at most this much per hop
LISTEN_S = 0.1   # and only after averaging this long since its (re)start


class LevelKeeper:
    """Make-up gain for invented phase: the output as loud as its magnitudes say.

    With the true phase, WOLA synthesis turns spectral energy into output energy
    at a fixed ratio set by the frame (Parseval: hop / (n_fft · Σ w_a²) of the
    rfft energy, bins 1..N/2-1 counted twice).  Invented phase adds up less
    coherently and comes out quieter: RTPGHI on the low-latency frame's
    asymmetric window, on real music, by 4.3 dB, varying 3.3-5.0 dB with the
    music, so a fixed gain would not do.  The keeper follows both energies
    over ``tau_s`` and scales each output hop by the square root of their
    ratio, within ±``limit_db`` and at most :data:`SLEW_DB` per hop, ramped
    across the hop so the gain never steps.  After a (re)start, at a switch to
    generate mode, it listens for :data:`LISTEN_S` before it moves.
    Allocates nothing per hop.

    The two energies are lined up in time first: a magnitude frame measures
    the input around its analysis window's energy centroid, while the hop
    written when it is pushed holds the frame's samples where the synthesis
    window begins.  On the low-latency frame the output runs 3 hops behind the
    magnitudes (the produced energy is compared 3 hops late); on the paper's
    Hann frame 1 hop ahead.  Lined up, with the true phase, the gain stays
    within 0.3 dB of 1 on real music (0.8 dB without).
    """

    def __init__(self, frame: FrameConfig, *, tau_s: float = 0.25, limit_db: float = 6.0):
        if not 0 < tau_s <= 10 or not 0 < limit_db <= 24:
            raise FeatureError(f"LevelKeeper needs tau_s in (0, 10] s and limit_db in (0, 24] "
                               f"dB, got tau_s={tau_s!r}, limit_db={limit_db!r}")
        R = frame.hop_length
        self._weights = np.full(frame.n_bins, 2.0)
        self._weights[0] = self._weights[-1] = 1.0  # DC and Nyquist appear once
        self._coherent = R / (frame.n_fft * float(np.sum(frame.analysis_window ** 2)))
        self._decay = float(np.exp(-R / (tau_s * frame.sample_rate)))
        self._low, self._high = 10 ** (-limit_db / 20), 10 ** (limit_db / 20)
        self._squares = np.zeros(frame.n_bins)
        self._ramp = np.arange(1, R + 1) / R
        self._gains = np.zeros(R)
        w2 = frame.analysis_window ** 2
        centroid = float(np.sum(np.arange(len(w2)) * w2) / np.sum(w2))
        written = frame.n_fft - frame.synthesis_support + R / 2
        self.lag = int((written - centroid) / R)  # hops; > 0: the output sounds them later
        self._ring = np.zeros(abs(self.lag))     # the energies waiting to be lined up
        # Hops before the averages start: the ring's zeros, the synthesis overlap filling
        # up, and a phase generator's look-ahead frame; earlier ratios overshoot.  Then
        # LISTEN_S of averaging before the gain moves: one hop's ratio is noisy (±4 dB).
        self._warmup = len(self._ring) + -(-frame.synthesis_support // R) + 1
        self._listen = self._warmup + max(1, round(LISTEN_S * frame.sample_rate / R))
        self._slew = 10 ** (SLEW_DB / 20)
        self.reset()

    def reset(self) -> None:
        self.expected = 0.0   # smoothed output energy per hop the magnitudes imply
        self.produced = 0.0   # smoothed output energy per hop before the gain
        self.gain = 1.0
        self._ring[:] = 0.0
        self._at = 0
        self._seen = 0        # hops since reset: the first aligned pair seeds both averages

    def _delayed(self, energy: float) -> float:
        if not len(self._ring):
            return energy
        ring, at = self._ring, self._at
        oldest = float(ring[at])
        ring[at] = energy
        self._at = (at + 1) % len(ring)
        return oldest

    def apply(self, mag: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Scale ``out`` (this hop, synthesised from ``mag``'s frame) in place."""
        np.multiply(mag, mag, out=self._squares)
        expected = self._coherent * float(np.dot(self._squares, self._weights))
        produced = float(np.dot(out, out))
        if self.lag > 0:
            produced = self._delayed(produced)
        elif self.lag < 0:
            expected = self._delayed(expected)
        self._seen += 1
        if self._seen < self._warmup:
            out *= self.gain
            return out
        a = self._decay
        self.expected = a * self.expected + (1 - a) * expected
        self.produced = a * self.produced + (1 - a) * produced
        target = self.gain
        if self._seen >= self._listen and self.produced > 1e-12:  # silence: keep the gain
            target = min(max((self.expected / self.produced) ** 0.5, self._low), self._high)
            target = min(max(target, self.gain / self._slew), self.gain * self._slew)
        g = self._gains
        np.multiply(self._ramp, target - self.gain, out=g)
        g += self.gain
        out *= g
        self.gain = target
        return out
