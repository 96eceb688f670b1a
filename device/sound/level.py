"""Gain staging: the loudness each mode aims at, make-up gains, the output limiter.

Every mode aims at one loudness, the *program level*: the input's loudness
while there is input (the mean square of the input, averaged over
``tau_s`` = 3 s, frozen while the input is quieter than ``gate_dbfs``), and
``reference_dbfs`` (-18 dBFS RMS) when there has been none.

* original plays the input untouched: it is at the program level by definition.
* resynth at default controls (every unit at gain 1, scale 1) plays at the
  input's level: a slow make-up (:class:`ResynthMakeUp`) matches the output to
  the input, with the effect of the faders divided out (see there), so the
  faders still change the level.
* generate at default controls plays at the program level: the make-up is
  sqrt(program level / P₀), P₀ the output power the model's default spectrum
  implies (computed once at model load); away from the defaults the output
  follows the decoded spectrum's energy (phase.LevelKeeper makes the invented
  phase as loud as the spectrum says).

* In both model modes the controls may raise the level at most
  ``CONTROL_HEADROOM_DB`` (6 dB) above what the default controls play: every
  knob at 2 lifts every part at once, which decoded 30 dB louder than the
  input and left the limiter 31-42 dB of gain reduction to do (34x full scale
  before it, issue 11).  Beyond that the controls still change the timbre,
  and lowering is never limited.

The whole chain ends in :class:`Limiter`, so that no control setting ever
produces a sample beyond full scale.  Everything here allocates nothing per hop.
"""

from __future__ import annotations

import math

import numpy as np

from device.errors import ConfigError
from device.sound.features import FrameConfig
from device.sound.finite import FiniteGuard

REFERENCE_DBFS = -18.0  # program level with no input: RMS, dB re full scale
GATE_DBFS = -45.0       # input hops quieter than this do not move the program level
PROGRAM_TAU_S = 3.0
IDLE_EPS = 1e-5  # a gain this close to 1 (1e-4 dB) counts as released: the fast path
CONTROL_HEADROOM_DB = 6.0  # the most the controls raise a mode's level over its defaults
CONTROL_HEADROOM = 10 ** (CONTROL_HEADROOM_DB / 10)  # the same as a power ratio
METER_FALL_DB_S = 20.0  # the gain-reduction meter falls this fast after a peak


def db(power_ratio: float) -> float:
    """A power ratio in dB (-inf for 0)."""
    return 10.0 * math.log10(power_ratio) if power_ratio > 0 else -math.inf


def coherent_weights(frame: FrameConfig) -> tuple[np.ndarray, float]:
    """(bin weights, scale) such that scale·Σ weights·|X|² is the output energy of one
    hop synthesised from a consistent spectrum X (Parseval through WOLA: DC and
    Nyquist count once, the others twice); see phase.LevelKeeper."""
    w = np.full(frame.n_bins, 2.0)
    w[0] = w[-1] = 1.0
    scale = frame.hop_length / (frame.n_fft * float(np.sum(frame.analysis_window ** 2)))
    return w, scale


def headroom_gain(energy: float, energy0: float,
                  headroom: float = CONTROL_HEADROOM) -> float:
    """The gain (<= 1) that keeps a spectrum of energy ``energy`` at most ``headroom`` (a
    power ratio: CONTROL_HEADROOM is 6 dB) louder than the default controls' ``energy0``
    (any consistent unit: Σ w·|Y|²): 1 up to the headroom, sqrt(headroom/ratio) above
    it.  1 when either is not > 0."""
    if energy <= 0.0 or energy0 <= 0.0:
        return 1.0
    over = energy / (energy0 * headroom)
    return 1.0 / math.sqrt(over) if over > 1.0 else 1.0


def ramp_gain(out: np.ndarray, old: float, new: float, ramp: np.ndarray,
              scratch: np.ndarray) -> None:
    """Scale ``out`` in place by a gain ramped linearly from ``old`` to ``new`` over the hop
    (``ramp``: (1..R)/R, ``scratch``: R floats), so a changing gain never steps."""
    if old == new:
        if new != 1.0:
            out *= new
        return
    np.multiply(ramp, new - old, out=scratch)
    scratch += old
    out *= scratch


class ProgramLevel:
    """The loudness every mode aims at: the input's, or ``reference_dbfs`` without one.

    ``power`` is a mean square per sample (full scale sine: 0.5).  Call
    :meth:`push` with every input hop.
    """

    def __init__(self, frame: FrameConfig, *, reference_dbfs: float = REFERENCE_DBFS,
                 gate_dbfs: float = GATE_DBFS, tau_s: float = PROGRAM_TAU_S):
        for name, v, lo, hi in (("reference_dbfs", reference_dbfs, -60.0, 0.0),
                                ("gate_dbfs", gate_dbfs, -120.0, 0.0),
                                ("tau_s", tau_s, 0.1, 60.0)):
            if not lo <= v <= hi:
                raise ConfigError(f"program level {name} must be in {lo:g}..{hi:g}, got {v!r}")
        R = frame.hop_length
        self.reference = 10.0 ** (reference_dbfs / 10.0)
        self._gate = 10.0 ** (gate_dbfs / 10.0)
        self._decay = math.exp(-R / (tau_s * frame.sample_rate))
        self._tau_hops = tau_s * frame.sample_rate / R
        self._inv_r = 1.0 / R
        self.reset()

    def reset(self) -> None:
        self.power = self.reference
        self.last = 0.0  # the last hop's power
        self._heard = 0  # hops above the gate since the reset

    def set_reference(self, dbfs: float) -> None:
        """A new level for no input (dB RMS, -60..0); takes over at once if none was heard."""
        if not -60.0 <= dbfs <= 0.0:
            raise ConfigError(f"program level reference_dbfs must be in -60..0, got {dbfs!r}")
        self.reference = 10.0 ** (dbfs / 10.0)
        if self._heard == 0:
            self.power = self.reference

    def push(self, block: np.ndarray) -> float:
        """One input hop (R samples); returns the program power."""
        p = self.last = float(np.dot(block, block)) * self._inv_r
        if p >= self._gate:
            self._heard += 1
            # The first seconds average everything heard so far (no pull towards the
            # reference), then an exponential average with time constant tau_s.
            a = max(self._decay, 1.0 - 1.0 / self._heard) if self._heard < self._tau_hops \
                else self._decay
            if self._heard == 1:
                a = 0.0
            self.power = a * self.power + (1.0 - a) * p
        return self.power

    @property
    def dbfs(self) -> float:
        return db(self.power)


class ResynthMakeUp:
    """Resynth's make-up gain: at default controls the output is as loud as the input.

    The decoder's reconstruction comes out 1.6–6.5 dB quieter than its input
    (a log-domain autoencoder under-estimates energy, and more so on some
    music), so a fixed gain would not do.  Per hop it averages (over
    ``tau_s``) the input power P_in, the output power before make-up P_out,
    and two spectral energies: S of the decoded spectrum played now and S₀ of
    the decoded spectrum at default controls (the same units without the
    user's gains; decoded a second time only while the controls differ from
    the defaults).  The gain is sqrt(P_in/P_out · S/S₀): P_out·S₀/S is what the
    output would be at default controls, so the faders' effect is divided out
    and they still change the level, up to ``headroom_db`` above the input (S/S₀
    is capped there).  Within ±``limit_db``, ramped.

    Seeded at model load (``seed``) from one typical frame, the normaliser's
    mean spectrum, so the first hops are already close; state is kept per
    model, across mode switches.
    """

    def __init__(self, frame: FrameConfig, *, seed: float = 1.0, tau_s: float = 2.0,
                 limit_db: float = 20.0, headroom_db: float = CONTROL_HEADROOM_DB):
        R = frame.hop_length
        self._headroom = 10 ** (headroom_db / 10)
        self._decay = math.exp(-R / (tau_s * frame.sample_rate))
        self._tau_hops = tau_s * frame.sample_rate / R
        self._low, self._high = 10 ** (-limit_db / 20), 10 ** (limit_db / 20)
        self.seed = min(max(seed, self._low), self._high)
        self.reset()

    def reset(self) -> None:
        self.gain = self.seed
        self._n = 0
        self._p_in = self._p_out = self._s = self._s0 = 0.0

    def update(self, p_in: float, p_out: float, s: float, s0: float) -> float:
        """One hop's powers (input, output before make-up: mean squares) and spectral
        energies (now, at default controls); returns the target gain for this hop."""
        if p_in <= 1e-10 or s0 <= 0.0:  # silence tells nothing: hold (but keep the cap:
            return self.gain * self._cap(s, s0)  # maxed units decode loud from silence)
        self._n += 1
        a = max(self._decay, 1.0 - 1.0 / self._n) if self._n < self._tau_hops else self._decay
        self._p_in = a * self._p_in + (1 - a) * p_in
        self._p_out = a * self._p_out + (1 - a) * p_out
        self._s = a * self._s + (1 - a) * s
        self._s0 = a * self._s0 + (1 - a) * s0
        if self._p_out > 0 and self._s0 > 0 and self._n >= 8:
            rise = self._s / self._s0  # the faders' effect on the level
            g = math.sqrt(self._p_in / self._p_out * rise)  # to the input's level at defaults
            self.gain = min(max(g, self._low), self._high)
        return self.gain * self._cap(s, s0)

    def _cap(self, s: float, s0: float) -> float:
        """The headroom's gain (<= 1).  It acts on this hop's rise at once (a knob turned
        up must not overshoot while the averages catch up: 16x full scale for a second
        did) and lets go as slowly as the averages do."""
        rise = s / s0 if s0 > 0.0 else 0.0
        if self._s0 > 0.0:
            rise = max(rise, self._s / self._s0)
        return headroom_gain(rise, 1.0, self._headroom)


class Limiter:
    """A soft-knee look-ahead peak limiter: no output sample beyond ``ceiling_db``.

    Per input sample of level a (dBFS) the required gain comes from a soft-knee
    static curve of ratio ∞ with a knee ``knee_db`` wide: below
    k₀ = ceiling - knee/2 nothing; in the knee the reduction rises as
    (a - k₀)²/(2·knee) dB, so the output there stays below the ceiling; above
    ceiling + knee/2 the sample is brought exactly to the ceiling.  The output gain at a
    sample is then (1) the minimum of the required gains over the next
    ``lookahead`` samples, (2) released towards 1 with time constant
    ``release_s``, (3) averaged over ``lookahead`` + 1 samples, so it starts
    to fall ``lookahead`` samples before a peak and never steps.  Each stage
    only lowers the gain where a later sample needs it, so
    |y| <= ceiling exactly (see the proof in the comments of :meth:`process`).

    Latency: ``delay`` samples (``lookahead_s``, at most one hop; 33 samples =
    1.5 ms at 22050 Hz).  ``hop_reduction_db`` is the largest reduction in the
    last hop (dB, >= 0); ``gain_reduction_db`` the meter for the display: a
    peak hold that falls :data:`METER_FALL_DB_S`, so a display drawing 30
    frames a second sees every peak.  Allocates nothing per hop.
    """

    def __init__(self, frame: FrameConfig, *, ceiling_db: float = -1.0, knee_db: float = 6.0,
                 lookahead_s: float = 0.0015, release_s: float = 0.1):
        for name, v, lo, hi in (("ceiling_db", ceiling_db, -20.0, 0.0),
                                ("knee_db", knee_db, 0.0, 24.0),
                                ("lookahead_s", lookahead_s, 0.0, 0.05),
                                ("release_s", release_s, 0.001, 5.0)):
            if not lo <= v <= hi:
                raise ConfigError(f"limiter {name} must be in {lo:g}..{hi:g}, got {v!r}")
        R = frame.hop_length
        L = min(round(lookahead_s * frame.sample_rate), R)
        self.delay = L
        self._knee = knee_db
        self._idle = True  # no reduction anywhere in the state: the fast path applies
        self.set_ceiling(ceiling_db)
        self._x = np.zeros(L + R)     # input: the last L samples, then this hop
        self._req = np.ones(L + R)    # required gain per input sample, same layout
        self._m = (np.zeros(L + R), np.zeros(L + R))  # sliding-minimum scratch
        self._h = np.zeros(R)
        self._d = np.zeros(R)
        self._g = np.ones(L + R)      # released gain: the last L, then this hop
        self._c = np.zeros(L + R + 1)  # running sum of _g, for the box average
        self._c_tail = self._c[1:]     # made once: a per-hop view costs a small cache entry
        self._new = self._x[L:]       # this hop's input, made finite in place
        self._finite = FiniteGuard(R)
        self._s = np.zeros(R)
        self._a = np.zeros(R)
        self._v = np.zeros(R)
        r = math.exp(-1.0 / (release_s * frame.sample_rate))
        self._r = r
        self._fall = METER_FALL_DB_S * R / frame.sample_rate
        k = np.arange(R)
        self._r_up = r ** -k          # r^-k (<= e^(R/release) : no overflow for R <= a hop)
        self._r_down = r ** k
        # Doubling steps of the sliding minimum over L + 1 samples.
        self._spans = []
        span = 1
        while 2 * span <= L + 1:
            self._spans.append(span)
            span *= 2
        self._span = span
        self.reset()

    def set_ceiling(self, ceiling_db: float) -> None:
        """A new ceiling (dBFS, -20..0), from the next hop on."""
        if not -20.0 <= ceiling_db <= 0.0:
            raise ConfigError(f"limiter ceiling_db must be in -20..0, got {ceiling_db!r}")
        self.ceiling = 10 ** (ceiling_db / 20)
        self._k0 = ceiling_db - self._knee / 2
        self._knee_start = 10 ** (self._k0 / 20)  # samples below this need no reduction

    def reset(self) -> None:
        self._x[:] = 0.0
        self._req[:] = 1.0
        self._g[:] = 1.0
        self._idle = True
        self.gain_reduction_db = 0.0  # the meter: peak hold falling METER_FALL_DB_S
        self.hop_reduction_db = 0.0   # the largest reduction in the last hop

    def process(self, block: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``block`` (R samples) in; ``out`` (R, float64) gets the limited hop from
        ``delay`` samples earlier.  ``out`` may not be ``block``."""
        L = self.delay
        R = len(self._h)
        x, req = self._x, self._req
        x[L:] = block
        # The last stage: a NaN or inf from anywhere upstream must not stay in the gain.
        self._finite.apply(self._new)
        # Required gain of the new samples, from their level a (dBFS):
        # u = max(a - k0, 0); v = min(u, knee); reduction = v²/(2·knee) + (u - v).
        a, v = self._a, self._v
        np.abs(self._new, out=a)
        if self._idle and a[a.argmax()] < self._knee_start:
            # Fast path (most hops): nothing in the look-ahead needs reduction and the
            # gain is fully released, so every stage above gives 1: just the delay.
            out[:] = x[:R]
            req[L:] = 1.0
            self.hop_reduction_db = 0.0
            self.gain_reduction_db = max(0.0, self.gain_reduction_db - self._fall)
            if L:
                x[:L] = x[R:]
                req[:L] = req[R:]
            return out
        np.maximum(a, 1e-12, out=a)
        np.log10(a, out=a)
        a *= 20.0
        a -= self._k0
        np.maximum(a, 0.0, out=a)
        np.minimum(a, self._knee, out=v)
        a -= v
        if self._knee > 0:
            v *= v
            v *= 0.5 / self._knee
            a += v
        a *= -math.log(10.0) / 20.0
        np.exp(a, out=req[L:])
        # (1) h[i] = min(req[i .. i+L]): doubling windows, then two that overlap.
        n = L + R
        src, dst = req, self._m[0]
        for span in self._spans:
            np.minimum(src[:n - span], src[span:n], out=dst[:n - span])
            dst[n - span:] = src[n - span:]
            src, dst = dst, (self._m[1] if dst is self._m[0] else self._m[0])
        h = self._h
        np.minimum(src[:R], src[L + 1 - self._span:L + 1 - self._span + R], out=h)
        # (2) release: g[i] = min(h[i], 1 - (1 - g[i-1])·r), in closed form
        # g[i] = 1 - r^i · max((1 - g_prev)·r, max_{k<=i} (1 - h[k])·r^-k) <= h[i].
        d = self._d
        np.subtract(1.0, h, out=d)
        d *= self._r_up
        g = self._g
        previous = g[L - 1] if L else g[-1]  # the last gain of the hop before
        d[0] = max(d[0], (1.0 - previous) * self._r)
        np.maximum.accumulate(d, out=self._s)
        np.multiply(self._s, self._r_down, out=g[L:])
        np.subtract(1.0, g[L:], out=g[L:])
        # (3) s[i] = mean(g[i-L .. i]); each of those g[j] <= h[j] <= req[i] since
        # [j, j+L] holds i: so s[i]·|x[i]| <= ceiling.
        c = self._c
        np.add.accumulate(g, out=self._c_tail)
        s = self._s
        np.subtract(c[L + 1:L + 1 + R], c[:R], out=s)
        s *= 1.0 / (L + 1)
        np.multiply(x[:R], s, out=out)
        low = float(s[s.argmin()])  # (s.min() buffers 1 kB: a reduction's scratch)
        # (the box average of ones is 1 within rounding: that is no reduction)
        self.hop_reduction_db = -20.0 * math.log10(low) if low < 1.0 - 1e-9 else 0.0
        self.gain_reduction_db = max(self.hop_reduction_db, self.gain_reduction_db - self._fall)
        # keep the last L samples of input, required gain and gain for the next hop
        if L:
            x[:L] = x[R:]
            req[:L] = req[R:]
            g[:L] = g[R:]
        # Idle again once every gain still in the box average is back within IDLE_EPS of
        # 1 (11.5 release time constants after a reduction of any depth; exactly 1 would
        # take ~37).  Snapping those gains to 1 is safe: a sample that needed less than
        # IDLE_EPS of reduction lies far below the ceiling (the knee's reduction at
        # the ceiling is knee/8 dB).
        if g[g.argmin()] >= 1.0 - IDLE_EPS and low >= 1.0 - IDLE_EPS:
            g[:] = 1.0
            self._idle = True
        else:
            self._idle = False
        return out

    def __repr__(self) -> str:
        return (f"<Limiter ceiling={20 * math.log10(self.ceiling):.1f} dBFS "
                f"delay={self.delay} gr={self.gain_reduction_db:.1f} dB>")
