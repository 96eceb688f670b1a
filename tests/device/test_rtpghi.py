"""RTPGHI phase for generated magnitudes (device/phase.py), on tones and real music."""

import numpy as np
import pytest

from device.features import LOW_LATENCY, PAPER, FrameConfig, istft, stft
from device.phase import RTPGHI, gamma_for, make_phase
from tests.music import clip


def spectral_convergence_db(X: np.ndarray, Y: np.ndarray) -> float:
    return 20 * np.log10(np.linalg.norm(np.abs(Y) - np.abs(X)) / np.linalg.norm(np.abs(X)))


def rebuild(mag: np.ndarray, name: str, frame: FrameConfig) -> np.ndarray:
    """Spectra with invented phase, aligned to ``mag`` (RTPGHI runs one frame late)."""
    gen = make_phase(name, frame)
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
    the bin centre's frequency as the seed's phase advance does."""
    frame = FrameConfig(hop_length=256)
    f = 1000.3 * frame.n_fft / frame.sample_rate  # between bins
    f_hz = 1000.3
    x = np.sin(2 * np.pi * f_hz * np.arange(frame.sample_rate) / frame.sample_rate)
    mag = np.abs(stft(x, config=frame))
    Y = rebuild(mag, "rtpghi", frame)
    k = int(round(f))
    steps = np.angle(Y[20:60, k] * np.conj(Y[19:59, k]))
    want = np.angle(np.exp(2j * np.pi * f_hz * frame.hop_length / frame.sample_rate))
    np.testing.assert_allclose(steps, want, atol=0.02)
    adv = rebuild(mag, "advance", frame)
    adv_steps = np.angle(adv[20:60, k] * np.conj(adv[19:59, k]))
    assert np.all(np.abs(np.angle(np.exp(1j * (adv_steps - want)))) > 0.05)


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


def test_rtpghi_allocates_no_arrays_per_hop():
    """tracemalloc sees numpy's array buffers: a hop's peak must stay under the
    size of one 1025-bin float array (8 kB), so no temporaries are made."""
    import tracemalloc

    gen = RTPGHI(LOW_LATENCY)
    rng = np.random.default_rng(0)
    mags = np.abs(rng.standard_normal((50, LOW_LATENCY.n_bins)))
    out = np.zeros(LOW_LATENCY.n_bins, complex)
    tracemalloc.start()  # before the warm-up, so caches it fills count as the start
    try:
        for m in mags[:5]:
            gen.synthesize(m, out)
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for m in mags[5:]:
            gen.synthesize(m, out)
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - start < 8 * LOW_LATENCY.n_bins, (start, end, peak)
    assert end - start < 1024
