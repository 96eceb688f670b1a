"""The real-time engine: one hop of audio in, one hop out, in the paper's three modes.

    original   analysis → synthesis, untouched (reconstructs the input exactly)
    resynth    |X| → encoder → units moved by the controls inside their trained range
               (PreparedModel.resynth_values) → decoder → |Y|, with X's phase
    generate   controls mapped onto each unit's range → decoder → |Y|, invented phase,
               its level kept to what |Y| implies (phase.LevelKeeper)

Every mode aims at one loudness (device.sound.level: resynth and generate get a
make-up gain, calibrated per model at load and refined while playing), and
every hop ends in a soft-knee look-ahead limiter (device.sound.level.Limiter), so no
control setting puts a sample beyond full scale; the limiter's look-ahead
adds ``Engine.limiter.delay`` samples to the frame's latency
(:attr:`Engine.latency_samples`).

Real-time rules (the audio thread calls :meth:`Engine.process` every hop):
every buffer is allocated here, in ``__init__`` / :func:`prepare_model`; a hop
only writes into them (``out=``), takes no lock and does no I/O.
:meth:`Engine.apply` runs on the audio thread too, between hops; it may build
the small immutable :class:`EngineSnapshot` that other threads read.

Mode switches and model swaps never cut: the engine renders the old and the
new path side by side for :attr:`Engine.fade_hops` hops (about 20 ms) and mixes
them with an equal-power crossfade (the two paths are uncorrelated, so
cos²+sin²=1 keeps the loudness).  A switch asked for during a fade waits for
it to end; only the latest one waits.
"""

from __future__ import annotations

import logging
import math
import queue
from dataclasses import dataclass

import numpy as np

from device.state import commands as c
from device.models.bundle import Bundle
from device.state.controls import ControlsSnapshot, UnitControls
from device.errors import ControlError, ModelError
from device.sound.features import FrameConfig, StreamAnalyzer, StreamSynthesizer
from device.sound.finite import INPUT_LIMIT, FiniteGuard
from device.sound.level import (Limiter, ProgramLevel, ResynthMakeUp, coherent_weights,
                                headroom_gain, ramp_gain)
from device.state.modulation import LfoBank, MotionRecorder
from device.sound.phase import LevelKeeper, make_phase
from device.sound.pitch import NoteGate
from device.models.runtime import Model

log = logging.getLogger(__name__)

FADE_SECONDS = 0.02  # crossfade length: short enough to feel instant, long enough not to click
KEEPER_LIMIT_DB = 24.0  # a safety bound for the level keeper, not a working range
MAKEUP_LIMIT_DB = 30.0  # generate's make-up: the same, for a model whose defaults are near silent
_MAKEUP_LIMIT = 10 ** (MAKEUP_LIMIT_DB / 20)
GAIN_JUMP = 0.5  # a make-up falling below this fraction in one hop falls at once (-6 dB)
_TINY = 1e-12  # below any audible magnitude; keeps the phase of silent bins finite
MOTION_PUBLISH_S = 0.04  # a looping take republishes the controls at most this often


@dataclass(frozen=True)
class EngineSnapshot:
    """What the display, LEDs and presets need; replaced (never mutated) on change.

    ``hops`` is the number of hops processed when the snapshot was published;
    ``labels`` the model's unit labels (``Bundle.unit_labels``, one per unit).
    """

    mode: str
    model: str
    units: int
    controls: ControlsSnapshot
    hops: int
    motion: str = "stop"   # the motion recorder: stop, record, loop
    note: str = ""         # device.sound.pitch.NoteGate.label(): "" drone, "-" shut, "C4"
    labels: tuple[str, ...] = ()


class PreparedModel:
    """A bundle's encoder and decoder loaded, with their I/O buffers and unit ranges.

    Build it with :func:`prepare_model` off the audio thread (loading takes
    milliseconds to seconds); the engine then only calls :meth:`encode` and
    :meth:`decode`, which allocate nothing.
    """

    def __init__(self, bundle: Bundle, *, num_threads: int = 1):
        self.bundle = bundle
        self.name = bundle.name
        self.frame: FrameConfig = bundle.frame
        self.units = bundle.units
        self.normaliser = bundle.normaliser
        n = bundle.n_bins
        self.encoder = Model(bundle.encoder.content, name=f"{bundle.name}/encoder",
                             num_threads=num_threads)
        self.decoder = Model(bundle.decoder.content, name=f"{bundle.name}/decoder",
                             num_threads=num_threads)
        for role, model, want_in, want_out in (("encoder", self.encoder, n, self.units),
                                               ("decoder", self.decoder, self.units, n)):
            if model.input_shape != (1, want_in) or model.output_shape != (1, want_out):
                self.close()
                raise ModelError(
                    f"{bundle.name}/{role}: tensors must be (1, {want_in}) -> (1, {want_out}), "
                    f"got {model.input_shape} -> {model.output_shape}")
        self._x = np.zeros((1, n), dtype=np.float32)
        self._h = np.zeros((1, self.units), dtype=np.float32)
        self._y = np.zeros((1, n), dtype=np.float32)
        self._f64 = np.zeros(n)
        # A model's output is input to the rest of the hop: NaN/inf from it become 0.
        self._units_finite = FiniteGuard(self.units)
        self._mag_finite = FiniteGuard(n)
        stats = bundle.unit_stats
        if stats is None:
            log.warning("%s has no unit_stats: generate mode assumes units in 0..1, mean 0.5",
                        bundle.name)
            lo, mid, hi = np.zeros(self.units), np.full(self.units, 0.5), np.ones(self.units)
        else:
            lo, mid, hi = (np.asarray(a, dtype=np.float64) for a in
                           (stats.min, stats.mean, stats.max))
        # Segment slopes of the generate-mode map (see unit_values).
        self._lo = lo.copy()
        self._hi = hi.copy()
        self._rise_low = mid - lo
        self._rise_high = hi - mid
        self._seg = np.zeros(self.units)
        self._down = np.zeros(self.units)  # resynth_values' scratch
        self._up = np.zeros(self.units)
        self._ranged = stats is not None  # resynth maps onto [min, max] only when known
        self.labels: tuple[str, ...] = bundle.unit_labels
        self._calibrate()

    def _calibrate(self) -> None:
        """Per-model level constants, at load (off the audio thread; see device.sound.level).

        ``power0``: output power per sample (mean square) that the decoded spectrum
        at default controls implies, the reference for generate mode's make-up.
        ``resynth``: resynth's make-up, seeded with the energy ratio of one typical
        frame (the normaliser's mean spectrum) to its reconstruction.
        """
        weights, scale = coherent_weights(self.frame)
        R = self.frame.hop_length
        n = self.frame.n_bins
        units, mag = np.zeros(self.units), np.zeros(n)
        self.unit_values(np.ones(self.units), units)
        self.decode(units, mag)
        self.energy0 = float(np.dot(mag * mag, weights))  # generate's headroom reference
        self.power0 = scale * self.energy0 / R
        norm = self.normaliser
        typical = norm.inverse(np.full(n, 0.0 if norm.kind == "standard" else 0.5))
        self.encode(typical, units)
        self.decode(units, mag)
        e_in = float(np.dot(typical * typical, weights))
        e_out = float(np.dot(mag * mag, weights))
        seed = math.sqrt(e_in / e_out) if e_in > 0 and e_out > 0 else 1.0
        self.resynth = ResynthMakeUp(self.frame, seed=seed)
        self.weights = weights

    def energy(self, mag: np.ndarray, scratch: np.ndarray) -> float:
        """Σ w·|Y|² of magnitudes ``mag`` (n_bins), the output energy of one hop up to a
        constant (level.coherent_weights); ``scratch`` (n_bins floats, may be ``mag``)
        takes the squares, so nothing is allocated."""
        np.multiply(mag, mag, out=scratch)
        return float(np.dot(scratch, self.weights))

    def encode(self, mag: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Magnitudes (n_bins) → hidden units (units, float64 ``out``)."""
        # In float64 first: a mixed float64→float32 ufunc would allocate a cast buffer.
        self.normaliser.forward(mag, out=self._f64)
        self._x[0] = self._f64
        self.encoder.run(self._x, out=self._h)
        out[:] = self._h[0]
        self._units_finite.apply(out)
        return out

    def decode(self, units: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Hidden units (units) → magnitudes (n_bins, float64 ``out``, never negative)."""
        self._h[0] = units
        self.decoder.run(self._h, out=self._y)
        out[:] = self._y[0]  # a plain cast copy; float32 inputs to ufuncs would buffer
        # A bin the model could not compute (NaN, ±inf) plays nothing: 0 after the inverse,
        # which would otherwise clip inf to its loudest magnitude.
        bad = self._mag_finite.apply(out)
        self.normaliser.inverse(out, out=out)
        if bad:
            np.copyto(out, 0.0, where=self._mag_finite.replaced_mask)
        self._mag_finite.apply(out)  # the inverse's exp() of a finite value can overflow
        return out

    @property
    def nonfinite(self) -> int:
        """Non-finite values its encoder and decoder produced (replaced by 0)."""
        return self._units_finite.replaced + self._mag_finite.replaced

    def unit_values(self, adjusted: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Generate mode: adjusted control values a = gain×scale×(0 if muted) → unit values.

        Piecewise linear per unit through (a=0, min), (a=1, mean), (a=2, max)
        of the unit's activations on the training data.  So the reset state
        (gain 1, scale 1) and any fader × knob product of 1 play each unit's
        typical value, every position moves the sound, the bottom is the
        unit's quietest seen value and the top (fader up, knob full) its loudest.
        """
        seg = self._seg
        np.clip(adjusted, 0.0, 1.0, out=seg)
        np.multiply(seg, self._rise_low, out=out)
        out += self._lo
        np.subtract(adjusted, 1.0, out=seg)
        np.clip(seg, 0.0, 1.0, out=seg)
        seg *= self._rise_high
        out += seg
        return out

    def resynth_values(self, encoded: np.ndarray, adjusted: np.ndarray,
                       out: np.ndarray) -> np.ndarray:
        """Resynth mode: encoded units h and adjusted controls a (0..2) → unit values.

        ``encoded``, ``adjusted`` and ``out`` are float64 arrays of ``units``;
        ``out`` may be ``encoded`` itself.  Piecewise linear per unit through
        (a=0, min(lo, h)), (a=1, h), (a=2, max(hi, h)), where lo and hi are the
        unit's min and max activations on the training data (``unit_stats``):
        a=1 plays the encoded value exactly (written h - 0 + 0, so the model's
        own reconstruction is bit-exact), a=0 the quietest the unit ever was,
        a=2 its loudest, so no control drives a unit beyond what the decoder
        saw in training (nor below), unless the input itself already did.
        The paper multiplied instead (units × a), which at a=2 doubled a unit
        far past its trained range (20× full scale on loud music, issue 11).
        A bundle without ``unit_stats`` keeps that product.  Allocates nothing.
        """
        if not self._ranged:
            return np.multiply(encoded, adjusted, out=out)
        down, up = self._down, self._up
        # below a=1: (1 - a) of the way from h down to min(lo, h)
        np.minimum(self._lo, encoded, out=down)
        np.subtract(encoded, down, out=down)
        np.subtract(1.0, adjusted, out=self._seg)
        np.clip(self._seg, 0.0, 1.0, out=self._seg)
        down *= self._seg
        # above a=1: (a - 1) of the way from h up to max(hi, h)
        np.maximum(self._hi, encoded, out=up)
        np.subtract(up, encoded, out=up)
        np.subtract(adjusted, 1.0, out=self._seg)
        np.clip(self._seg, 0.0, 1.0, out=self._seg)
        up *= self._seg
        np.subtract(encoded, down, out=out)
        out += up
        return out

    def close(self) -> None:
        for m in (getattr(self, "encoder", None), getattr(self, "decoder", None)):
            if m is not None:
                m.close()

    def __repr__(self) -> str:
        return f"<PreparedModel {self.name!r} units={self.units} hop={self.frame.hop_length}>"


def prepare_model(bundle: Bundle, *, num_threads: int = 1) -> PreparedModel:
    """Load ``bundle``'s interpreters and buffers; call it OFF the audio thread."""
    return PreparedModel(bundle, num_threads=num_threads)


class _Voice:
    """One rendering path (a mode with a model) with its own synthesis and phase state."""

    def __init__(self, frame: FrameConfig, phase: str):
        n = frame.n_bins
        self.synth = StreamSynthesizer(frame)
        self.phase = make_phase(phase, frame)
        # generate mode: invented phase comes out quieter (or louder) than |Y| implies.
        # A held spectrum's noise-like bins and its partials come out differently (random
        # phase adds up incoherently, a lobe made coherent adds up as a pulse), so they
        # are synthesised apart and each kept to its own energy: the balance stays |Y|'s.
        self.keeper = LevelKeeper(frame, limit_db=KEEPER_LIMIT_DB)
        self.keeper_noise = LevelKeeper(frame, limit_db=KEEPER_LIMIT_DB)
        self.synth_noise = StreamSynthesizer(frame)
        self.spec_noise = np.zeros(n, dtype=np.complex128)
        self.mag_noise = np.zeros(n)
        self.out_noise = np.zeros(frame.hop_length)
        # hops the noise path still sounds after the last held frame: its overlap-add tail
        self.noise_hops = -(-frame.synthesis_support // frame.hop_length)
        self.noise_tail = -1  # -1: idle
        self.mag_in = np.zeros(n)
        self.mag = np.zeros(n)
        self.mag0 = np.zeros(n)  # resynth: the decoded spectrum at default controls
        self.units0: np.ndarray = np.zeros(1)
        self.makeup = 1.0  # the make-up gain of the last hop (device.sound.level)
        self.at_defaults = True  # every unit's gain × scale is 1 (resynth needs no 2nd decode)
        self.ramp = np.arange(1, frame.hop_length + 1) / frame.hop_length
        self.scratch = np.zeros(frame.hop_length)
        self.spec = np.zeros(n, dtype=np.complex128)
        self.out = np.zeros(frame.hop_length)
        self.mode = "original"
        self.model: PreparedModel | None = None
        self.units: np.ndarray = np.zeros(1)
        self.adjusted: np.ndarray = np.zeros(1)  # the controls this voice plays
        self.silenced = False  # every unit zeroed or muted (Set)
        self.level = 1.0  # output gate, ramps to 0 while silenced

    def start(self, mode: str, model: PreparedModel) -> None:
        self.mode, self.model = mode, model
        if self.units.shape != (model.units,):  # only at a swap to another unit count
            self.units = np.zeros(model.units)
            self.units0 = np.zeros(model.units)
            self.adjusted = np.zeros(model.units)
        self.synth.reset()
        self.phase.reset()
        self.keeper.reset()
        self.keeper_noise.reset()
        self.synth_noise.reset()
        self.noise_tail = -1
        self.makeup = math.nan  # none yet: the first hop starts at its target, not a ramp


class Engine:
    """Streaming analysis → model → synthesis, one hop per :meth:`process` call."""

    def __init__(self, bundle: Bundle, *, phase: str = "rtpghi", num_threads: int = 1,
                 mode: str = "resynth", limiter: bool = True):
        """``limiter=False`` leaves the output limiter out: for measuring what the model
        and the gain staging produce (train/playability.py), never for playing."""
        self._check_mode(mode)
        self._limit = bool(limiter)
        self.frame: FrameConfig = bundle.frame
        self.hop_length = self.frame.hop_length
        self.phase = phase
        self._model = prepare_model(bundle, num_threads=num_threads)
        self.controls = UnitControls(bundle.units)
        self.mode = mode
        self.hops = 0
        self.retired: queue.SimpleQueue[PreparedModel] = queue.SimpleQueue()
        R = self.hop_length
        self.fade_hops = max(1, math.ceil(FADE_SECONDS * self.frame.sample_rate / R))
        ramp = (np.arange(self.fade_hops * R) + 0.5) / (self.fade_hops * R)
        self._fade_in = np.sin(0.5 * np.pi * ramp)
        self._fade_out = np.cos(0.5 * np.pi * ramp)
        self._gate_up = (np.arange(R) + 0.5) / R  # one-hop linear gate ramp
        self._gate_down = 1.0 - self._gate_up
        self._analyzer = StreamAnalyzer(self.frame)
        self._spec = np.zeros(self.frame.n_bins, dtype=np.complex128)
        self._in = np.zeros(R)
        self._in_finite = FiniteGuard(R, limit=INPUT_LIMIT)  # the engine's edge
        self._mix = np.zeros(R)
        self._adjusted = np.zeros(bundle.units)  # what the voices play: _static × LFOs
        self._static = np.zeros(bundle.units)    # gain × scale × (0 if muted)
        self._is_default = np.zeros(bundle.units, dtype=bool)
        self.lfo = LfoBank(bundle.units, hop_rate=self.frame.sample_rate / R)
        self.motion = MotionRecorder(bundle.units)
        self.notes = NoteGate(self.frame)
        self._publish_hops = max(1, round(MOTION_PUBLISH_S * self.frame.sample_rate / R))
        self._snapshot_due = False
        self._voices = (_Voice(self.frame, phase), _Voice(self.frame, phase))
        self.program = ProgramLevel(self.frame)  # the loudness every mode aims at
        self.limiter = Limiter(self.frame)
        self._pre = np.zeros(R)   # the hop before the limiter
        self._post = np.zeros(R)
        self._at_defaults = True
        self._now = self._voices[0]
        self._now.start(mode, self._model)
        self._old: _Voice | None = None
        self._fade_pos = 0
        self._pending: tuple[str, PreparedModel] | None = None
        self._silenced = False
        self._controls_changed()

    # -- state ---------------------------------------------------------------------------
    @staticmethod
    def _check_mode(mode: str) -> None:
        if mode not in c.MODES:
            raise ControlError(f"mode must be one of {', '.join(c.MODES)}, got {mode!r}")

    @property
    def model(self) -> PreparedModel:
        """The model playing now (or fading in)."""
        return self._model

    @property
    def latency_samples(self) -> int:
        """Input sample to output sample: the frame's latency plus the limiter's look-ahead."""
        return self.frame.latency_samples + self.limiter.delay

    @property
    def stream_delay(self) -> int:
        """Samples by which the output of :meth:`process` lags its input."""
        return self.frame.stream_delay + self.limiter.delay

    @property
    def nonfinite_inputs(self) -> int:
        """Input samples that were NaN or ±inf, replaced by 0 (a plain int)."""
        return self._in_finite.replaced

    @property
    def gain_reduction_db(self) -> float:
        """The limiter's gain reduction meter (dB >= 0, peak hold falling 20 dB/s);
        a float read by the display thread."""
        return self.limiter.gain_reduction_db

    def _publish(self) -> None:
        self.snapshot = EngineSnapshot(self.mode, self._model.name, self._model.units,
                                       self.controls.snapshot(
                                           self.motion.take,
                                           "loop" if self.motion.state == "loop" else "stop"),
                                       self.hops,
                                       self.motion.state, self.notes.label(),
                                       self._model.labels)
        self._snapshot_due = False

    def _controls_changed(self, publish: bool = True) -> None:
        self.controls.adjusted(self._static)
        self._silenced = not self._static.any()
        self.lfo.configure(self.controls)
        self.motion.configure(self.controls)
        # resynth's make-up is defined at default controls (see device.sound.level); a moving
        # LFO is not at defaults.  out=: a motion take replays on the audio thread.
        np.equal(self._static, 1.0, out=self._is_default)
        self._at_defaults = bool(self._is_default.all()) and not self.lfo.active
        if publish:
            self._publish()
        else:
            self._snapshot_due = True

    def _advance_motion(self) -> None:
        """Per hop, before rendering: the motion take, the LFOs, the note gate (no allocation
        but the snapshot a looping take republishes every MOTION_PUBLISH_S)."""
        if self.motion.advance(self.controls):
            self._controls_changed(publish=False)
        if self._snapshot_due and self.hops % self._publish_hops == 0:
            self._publish()
        self.lfo.advance(self._static, out=self._adjusted)
        self.notes.advance()

    def apply(self, cmd: object) -> bool:
        """Apply a unit command, SetMode, StepMode, SwapModel or SetLevel; False if not ours.

        Raises ControlError (or ModelError for a model of another frame) and
        changes nothing when the command cannot be applied.
        """
        match cmd:
            case c.SetMode(mode):
                self._check_mode(mode)
                self._switch(mode, self._model)
            case c.StepMode(delta):
                mode = c.MODES[(c.MODES.index(self.mode) + int(delta)) % len(c.MODES)]
                self._switch(mode, self._model)
            case c.SwapModel(prepared):
                self._swap(prepared)
            case c.SetLevel(reference, ceiling):
                if reference is not None:
                    self.program.set_reference(float(reference))
                if ceiling is not None:
                    self.limiter.set_ceiling(float(ceiling))
            case _:
                if self.notes.apply(cmd):
                    pass
                elif self.motion.apply(cmd, self.controls):
                    self._controls_changed()
                elif self.controls.apply(cmd):
                    self.motion.record(cmd, self.controls)
                    self._controls_changed()
                    return True
                else:
                    return False
        self._publish()
        return True

    def _swap(self, prepared: object) -> None:
        if not isinstance(prepared, PreparedModel):
            raise ModelError(f"SwapModel needs a PreparedModel (from prepare_model), "
                             f"got {type(prepared).__name__}")
        if prepared.frame != self.frame:
            raise ModelError(
                f"model {prepared.name!r} has frame {prepared.frame.to_dict()}, the engine "
                f"plays {self.frame.to_dict()}: restart to change the frame")
        if prepared.units != self.controls.units:
            self.controls = UnitControls(prepared.units)
            self._adjusted = np.zeros(prepared.units)
            self._static = np.zeros(prepared.units)
            self._is_default = np.zeros(prepared.units, dtype=bool)
        old = self._model
        self._model = prepared
        self._switch(self.mode, prepared)
        self._controls_changed()
        if old is not prepared:
            self.retired.put(old)  # closed by release_retired(), off the audio thread

    def release_retired(self) -> int:
        """Close models swapped out; call from a control thread.  Returns how many."""
        n = 0
        while True:
            try:
                model = self.retired.get_nowait()
            except queue.Empty:
                return n
            if model is not self._model and all(v.model is not model for v in self._voices):
                model.close()
            n += 1

    def _switch(self, mode: str, model: PreparedModel) -> None:
        self.mode = mode
        if self._old is not None:  # mid-fade: play it out, then go on from there
            self._pending = (mode, model)
            return
        now = self._now
        if now.mode == mode and now.model is model:
            return
        self._begin_fade(mode, model)

    def _begin_fade(self, mode: str, model: PreparedModel) -> None:
        old = self._now
        new = self._voices[1] if old is self._voices[0] else self._voices[0]
        new.start(mode, model)
        self._take_controls(new)
        new.level = 0.0 if self._gated(new) else 1.0
        self._old, self._now, self._fade_pos = old, new, 0

    # -- the hop -------------------------------------------------------------------------
    def process(self, block: np.ndarray, out: np.ndarray) -> np.ndarray:
        """One hop: ``block`` (hop_length samples, -1..1; ignored in generate mode) in,
        ``out`` (hop_length, float) filled and returned.  Allocates nothing.

        NaN and ±inf in ``block`` become 0 and samples beyond ±INPUT_LIMIT are clipped
        (counted in :attr:`nonfinite_inputs`), so ``out`` is always finite."""
        self._advance_motion()
        self._in[:] = block  # float64 copy: the analyzer wants a contiguous float hop
        self._in_finite.apply(self._in)  # NaN/inf → 0: no state below ever sees one
        self._analyzer.push(self._in, out=self._spec)
        self.program.push(self._in)
        now, old = self._now, self._old
        self._render(now)
        pre = self._pre
        if old is None:
            pre[:] = now.out
        else:
            self._render(old)
            R = self.hop_length
            pos = self._fade_pos
            np.multiply(now.out, self._fade_in[pos:pos + R], out=pre)
            np.multiply(old.out, self._fade_out[pos:pos + R], out=self._mix)
            pre += self._mix
            self._fade_pos = pos + R
            if self._fade_pos >= len(self._fade_in):
                self._old = None
                if self._pending is not None:
                    mode, model = self._pending
                    self._pending = None
                    if mode != now.mode or model is not now.model:
                        self._begin_fade(mode, model)
        if self._limit:
            self.limiter.process(pre, self._post)
            out[:] = self._post  # a plain cast copy into the caller's dtype
        else:
            out[:] = pre
        self.hops += 1
        return out

    def _take_controls(self, v: _Voice) -> None:
        if v.model is self._model:  # an outgoing model keeps the controls it had
            v.adjusted[:] = self._adjusted
            v.silenced = self._silenced
            v.at_defaults = self._at_defaults

    @staticmethod
    def _gated(v: _Voice) -> bool:
        return v.mode != "original" and v.silenced

    def _render(self, v: _Voice) -> None:
        """Fill ``v.out`` with this hop of voice ``v``."""
        model = v.model
        if v.mode == "original":
            v.synth.push(self._spec, out=v.out)
            return
        self._take_controls(v)
        if v.mode == "resynth":
            np.abs(self._spec, out=v.mag_in)
            model.encode(v.mag_in, out=v.units)
            if not v.at_defaults:  # the reference for the make-up: the same units, as encoded
                v.units0[:] = v.units
            model.resynth_values(v.units, v.adjusted, out=v.units)
            model.decode(v.units, out=v.mag)
            e_now = e_default = model.energy(v.mag, v.mag0)
            if not v.at_defaults:
                model.decode(v.units0, out=v.mag0)
                e_default = model.energy(v.mag0, v.mag0)
            # Y = |Y| · X/|X|: the input's phase on the decoded magnitudes.
            np.maximum(v.mag_in, _TINY, out=v.mag_in)
            np.divide(v.mag, v.mag_in, out=v.mag)
            # Part by part: complex × float would allocate a cast buffer.
            np.multiply(self._spec.real, v.mag, out=v.spec.real)
            np.multiply(self._spec.imag, v.mag, out=v.spec.imag)
        else:
            model.unit_values(v.adjusted, out=v.units)
            model.decode(v.units, out=v.mag)
            self.notes.transpose(v.mag)
            e_now = model.energy(v.mag, v.mag0)  # before the noise split below
            v.phase.synthesize(v.mag, v.spec)
            # Split off the noise-like bins of a held frame; while nothing is held (and
            # the noise path's overlap-add tail has played out) the split is skipped.
            if getattr(v.phase, "stillness", 0.0) > 0.0:
                noisy = v.phase.noisy
                v.spec_noise[:] = 0.0
                np.copyto(v.spec_noise, v.spec, where=noisy)
                np.copyto(v.spec, 0.0, where=noisy)
                v.mag_noise[:] = 0.0
                np.copyto(v.mag_noise, v.mag, where=noisy)
                np.copyto(v.mag, 0.0, where=noisy)
                v.noise_tail = v.noise_hops
            elif v.noise_tail > 0:
                v.spec_noise[:] = 0.0
                v.mag_noise[:] = 0.0
                v.noise_tail -= 1
            else:
                v.noise_tail = -1
            if v.noise_tail >= 0:
                v.synth_noise.push(v.spec_noise, out=v.out_noise)
        v.synth.push(v.spec, out=v.out)
        if v.mode == "generate":
            v.keeper.apply(v.mag, v.out)
            if v.noise_tail >= 0:
                v.keeper_noise.apply(v.mag_noise, v.out_noise)
                v.out += v.out_noise
            # At default controls, as loud as the program; elsewhere as |Y| says, up to
            # CONTROL_HEADROOM_DB above the defaults.
            target = math.sqrt(self.program.power / model.power0) if model.power0 > 0 else 1.0
            target = min(target, _MAKEUP_LIMIT) * headroom_gain(e_now, model.energy0)
        else:
            p_out = float(np.dot(v.out, v.out))
            target = model.resynth.update(self.program.last, p_out / self.hop_length,
                                          e_now, e_default)
        # The ramp starts at the target on a voice's first hop (from a gain that never
        # played, every knob up through the seed make-up peaked at 11x full scale) and
        # when the gain must fall by more than GAIN_JUMP at once: the knobs jumped (a
        # preset, every knob up) and their loud spectrum is already in this hop, so
        # ramping down from the old gain would play it too loud for a hop (a click, 1.5x
        # the music's later peaks on chaos-fog).
        old = v.makeup
        if math.isnan(old) or target < old * GAIN_JUMP:
            old = target
        ramp_gain(v.out, old, target, v.ramp, v.scratch)
        v.makeup = target
        if v.mode == "generate":  # a played note's envelope, after the level is set
            self.notes.gate(v.out)
        self._gate(v)

    def _gate(self, v: _Voice) -> None:
        """Silence a model voice when every unit is zeroed or muted (Set), over one hop.

        The decoder of all-zero units still outputs its bias spectrum (a drone
        with no musical meaning); Set means the model contributes nothing.
        """
        target = 0.0 if self._gated(v) else 1.0
        if target == v.level:
            if target == 0.0:
                v.out[:] = 0.0
            return
        v.out *= self._gate_down if target == 0.0 else self._gate_up
        v.level = target

    def close(self) -> None:
        self.release_retired()
        self._model.close()

    def __repr__(self) -> str:
        return (f"<Engine {self._model.name!r} mode={self.mode} hop={self.hop_length} "
                f"phase={self.phase} hops={self.hops}>")
