"""RTPGHI phase for generated magnitudes (device/sound/phase.py), on tones and real music."""

import numpy as np
import pytest

from device.sound.features import LOW_LATENCY, PAPER, FrameConfig, istft, stft
from device.sound.phase import RTPGHI, gamma_for, make_phase
from tests.allocations import Allocations, forked
from tests.music import clip


def spectral_convergence_db(X: np.ndarray, Y: np.ndarray) -> float:
    return 20 * np.log10(np.linalg.norm(np.abs(Y) - np.abs(X)) / np.linalg.norm(np.abs(X)))


def rebuild(mag: np.ndarray, name: str, frame: FrameConfig, **options) -> np.ndarray:
    """Spectra with invented phase, aligned to ``mag`` (RTPGHI runs one frame late)."""
    gen = RTPGHI(frame, **options) if options else make_phase(name, frame)
    out = np.zeros(frame.n_bins, complex)
    Y = np.zeros(mag.shape, complex)
    for t in range(len(mag)):
        Y[t] = gen.synthesize(mag[t], out)
    if isinstance(gen, RTPGHI):
        Y = np.concatenate([Y[1:], np.zeros((1, frame.n_bins))])
    return Y


def test_gamma_is_the_published_constant_for_hann():
    assert gamma_for(PAPER) == pytest.approx(0.25645 * 2048**2)
    assert gamma_for(LOW_LATENCY) > 0


def test_steady_tone_advances_by_its_true_frequency():
    """Phase continuity: at the peak, each hop turns by 2π·f·hop/sr (mod 2π), not by
    the bin centre's frequency as the seed's phase advance does (the published
    algorithm: ``hold=False``; held spectra are the next test)."""
    frame = FrameConfig(hop_length=256)
    f = 1000.3 * frame.n_fft / frame.sample_rate  # between bins
    f_hz = 1000.3
    x = np.sin(2 * np.pi * f_hz * np.arange(frame.sample_rate) / frame.sample_rate)
    mag = np.abs(stft(x, config=frame))
    Y = rebuild(mag, "rtpghi", frame, hold=False)
    k = int(round(f))
    steps = np.angle(Y[20:60, k] * np.conj(Y[19:59, k]))
    want = np.angle(np.exp(2j * np.pi * f_hz * frame.hop_length / frame.sample_rate))
    np.testing.assert_allclose(steps, want, atol=0.02)
    adv = rebuild(mag, "advance", frame)
    adv_steps = np.angle(adv[20:60, k] * np.conj(adv[19:59, k]))
    assert np.all(np.abs(np.angle(np.exp(1j * (adv_steps - want)))) > 0.05)


@pytest.mark.parametrize("f_hz", [1000.3, 440.0])
def test_held_tone_keeps_its_frequency_and_diffuses(f_hz):
    """A spectrum that does not change is held: its peak advances at the quadratic-
    interpolated frequency on average, and its phase takes a random walk whose
    per-hop variance is 2π·line_hz·hop/sample_rate (a line line_hz wide)."""
    frame = FrameConfig(hop_length=256)
    x = np.sin(2 * np.pi * f_hz * np.arange(3 * frame.sample_rate) / frame.sample_rate)
    mag = np.abs(stft(x, config=frame))[:-frame.n_fft // frame.hop_length]  # not the tail
    gen = RTPGHI(frame, line_hz=6.0)
    out = np.zeros(frame.n_bins, complex)
    Y = np.array([gen.synthesize(m, out).copy() for m in mag])[1:]
    assert gen.stillness > 0.99
    k = int(round(f_hz * frame.n_fft / frame.sample_rate))
    assert gen._tonal[k]  # the tone's peak is a partial (its sidelobes may be too)
    steps = np.angle(Y[40:-20, k] * np.conj(Y[39:-21, k]))
    want = 2 * np.pi * f_hz * frame.hop_length / frame.sample_rate
    dev = np.angle(np.exp(1j * (steps - want)))
    var = 2 * np.pi * 6.0 * frame.hop_length / frame.sample_rate
    assert abs(dev.mean()) < 4 * np.sqrt(var / len(dev))
    assert 0.7 * var < dev.var() < 1.4 * var


def autocorrelation(y: np.ndarray, lag: int) -> float:
    a, b = y[:-lag] - y[:-lag].mean(), y[lag:] - y[lag:].mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


@pytest.mark.parametrize("frame", [LOW_LATENCY, PAPER], ids=["low_latency", "paper"])
def test_held_spectrum_does_not_repeat_every_n_fft(frame):
    """One magnitude frame held for 3 s (what generate mode gets with the faders still):
    a few harmonic peaks on a noise floor, the long-term spectrum of a real signal.
    The seed's bin-centre phase advance repeats it every n_fft samples (the measure
    sees that: near 1); held RTPGHI must not (at most 0.3, as real music).  The
    decoder's own spectra, where the published RTPGHI buzzes too, are in
    tests/device/test_engine.py."""
    rng = np.random.default_rng(3)
    t = np.arange(2 * frame.sample_rate) / frame.sample_rate
    x = sum(np.sin(2 * np.pi * 220.0 * h * t) / h for h in range(1, 6))
    x = x + 0.05 * np.convolve(rng.standard_normal(len(t)), np.ones(8) / 8, mode="same")
    held = np.sqrt(np.mean(np.abs(stft(x, config=frame)) ** 2, axis=0))
    mag = np.tile(held, (3 * frame.sample_rate // frame.hop_length, 1))
    ys = {}
    for name in ("advance", "rtpghi"):
        spectra = rebuild(mag, name, frame)
        ys[name] = istft(spectra, config=frame)[frame.sample_rate:-frame.sample_rate // 2]
    assert autocorrelation(ys["advance"], frame.n_fft) > 0.8  # the buzz this is about
    assert abs(autocorrelation(ys["rtpghi"], frame.n_fft)) <= 0.3


@pytest.mark.parametrize("frame, margin_db", [(PAPER, 10.0), (FrameConfig(hop_length=128), 10.0)])
def test_rtpghi_beats_phase_advance_on_real_music(frame, margin_db):
    """True magnitudes of held-out music, phase invented: RTPGHI is far closer
    to consistent spectra than the seed's per-bin phase advance (measured
    here: about -20 dB against -6 dB at hop 512)."""
    x = clip("castle", start_s=40, seconds=4.0)
    X = stft(x, config=frame)
    mag = np.abs(X)
    scores = {}
    for name in ("rtpghi", "advance", "random"):
        y = istft(rebuild(mag, name, frame), config=frame, length=len(x))
        scores[name] = spectral_convergence_db(X[10:-10], stft(y, config=frame)[10:-10])
    assert scores["rtpghi"] <= scores["advance"] - margin_db, scores
    assert scores["advance"] < scores["random"] + 3.0, scores


def test_low_latency_frame_still_gains_over_phase_advance():
    """The asymmetric pair fits PGHI's Gaussian model poorly (harness.md warns):
    the gain is smaller, about 3 dB once levels are matched; this pins it."""
    frame = LOW_LATENCY
    x = clip("castle", start_s=40, seconds=4.0)
    X = stft(x, config=frame)
    scores = {}
    for name in ("rtpghi", "advance"):
        y = istft(rebuild(np.abs(X), name, frame), config=frame, length=len(x))
        y *= np.linalg.norm(x) / np.linalg.norm(y)
        scores[name] = spectral_convergence_db(X[20:-20], stft(y, config=frame)[20:-20])
    assert scores["rtpghi"] <= scores["advance"] - 2.0, scores


@forked  # tests/allocations.py: no other thread allocates in the child
def test_rtpghi_allocates_no_arrays_per_hop():
    """tracemalloc sees numpy's array buffers: a hop's peak must stay under the
    size of one 1025-bin float array (8 kB), so no temporaries are made."""
    gen = RTPGHI(LOW_LATENCY)
    rng = np.random.default_rng(0)
    mags = np.abs(rng.standard_normal((500, LOW_LATENCY.n_bins)))
    out = np.zeros(LOW_LATENCY.n_bins, complex)
    # 50 hops of warm-up: numpy and CPython fill small one-time caches (seen: 1.2 kB,
    # not always by hop 5), which must not count as a leak.
    with Allocations() as a:  # started before the warm-up: caches it fills count as the start
        for m in mags[:50]:
            gen.synthesize(m, out)
        a.begin()
        for m in mags[50:275]:
            gen.synthesize(m, out)
        a.split()
        for m in mags[275:]:
            gen.synthesize(m, out)
    assert a.peak < 8 * LOW_LATENCY.n_bins, a
    assert a.retained < 1024, a  # one 16-byte object kept per hop would be 7.2 kB


# -- the level keeper: invented phase as loud as the magnitudes say --------------------
def _streamed(mag: np.ndarray, frame: FrameConfig, *, keep: bool, phase: str = "rtpghi",
              spectra: np.ndarray | None = None) -> tuple[np.ndarray, list[float]]:
    """The engine's generate path, hop by hop: phase → StreamSynthesizer → LevelKeeper."""
    from device.sound.features import StreamSynthesizer
    from device.sound.phase import LevelKeeper

    gen, synth, keeper = make_phase(phase, frame), StreamSynthesizer(frame), LevelKeeper(frame)
    spec, out = np.zeros(frame.n_bins, complex), np.zeros(frame.hop_length)
    ys, gains = [], []
    for t, m in enumerate(mag):
        if spectra is None:
            gen.synthesize(m, spec)
        else:
            spec[:] = spectra[t]
        synth.push(spec, out=out)
        if keep:
            keeper.apply(m, out)
        gains.append(keeper.gain)
        ys.append(out.copy())
    return np.concatenate(ys), gains


def _level_db(y: np.ndarray, x: np.ndarray, skip: int) -> float:
    n = min(len(y), len(x))
    return 20 * np.log10(np.linalg.norm(y[skip:n]) / np.linalg.norm(x[skip:n]))


@pytest.mark.parametrize("frame", [LOW_LATENCY, PAPER], ids=["low_latency", "paper"])
def test_level_keeper_brings_invented_phase_back_to_the_musics_level(frame):
    x = np.asarray(clip("space", start_s=30.0, seconds=6.0), dtype=np.float64)
    mag = np.abs(stft(x, config=frame))
    skip = frame.sample_rate // 2  # the keeper's first half second: it is still listening
    raw, _ = _streamed(mag, frame, keep=False)
    kept, gains = _streamed(mag, frame, keep=True)
    if frame is LOW_LATENCY:
        assert _level_db(raw, x, skip) < -3.0  # the loss the keeper is for (measured -4.3 dB)
    assert abs(_level_db(kept, x, skip)) < 0.5
    assert max(gains) <= 10 ** (6 / 20) + 1e-9


def test_level_keeper_leaves_true_phase_alone():
    """With the true phase nothing is lost: the gain stays at 1 within 0.4 dB (0.8 dB
    without lining the two energies up in time: device.sound.phase.LevelKeeper)."""
    x = np.asarray(clip("aztec", start_s=10.0, seconds=4.0), dtype=np.float64)
    spectra = stft(x, config=LOW_LATENCY)
    _, gains = _streamed(np.abs(spectra), LOW_LATENCY, keep=True, spectra=spectra)
    settled = 20 * np.log10(np.array(gains[LOW_LATENCY.sample_rate // 2 // 128:]))
    assert np.max(np.abs(settled)) < 0.4, (settled.min(), settled.max())


def test_level_keeper_never_steps_the_gain_within_a_hop():
    from device.sound.phase import SLEW_DB, LevelKeeper

    keeper = LevelKeeper(LOW_LATENCY)
    loud = np.full(LOW_LATENCY.n_bins, 10.0)
    quiet = np.full(LOW_LATENCY.hop_length, 1e-3)  # far quieter than the magnitudes say
    steps = []
    for _ in range(keeper._listen + 10):  # past the hops it waits and listens, to the limit
        before, out = keeper.gain, quiet.copy()
        keeper.apply(loud, out)
        steps.append((before, out / 1e-3))
    assert all(r[-1] == before for before, r in steps[:keeper._listen - 1])  # listening
    rising = [(before, r) for before, r in steps if r[-1] > before]
    assert rising, "the gain never rose"
    for before, ramp in rising:  # each hop: a smooth ramp, at most SLEW_DB higher
        assert np.all(np.diff(ramp) >= 0) and ramp[0] - before < 2 * (ramp[1] - ramp[0]) + 1e-12
        assert ramp[-1] <= before * 10 ** (SLEW_DB / 20) + 1e-12
    assert keeper.gain == pytest.approx(10 ** (6 / 20))  # and no further than limit_db
    with pytest.raises(Exception, match=r"tau_s in \(0, 10\] s and limit_db in \(0, 24\] dB"):
        LevelKeeper(LOW_LATENCY, tau_s=0)
