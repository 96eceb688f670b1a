"""Frame configurations, STFT round trips and normalisers (device/sound/features.py)."""

import numpy as np
import pytest

from device.errors import FeatureError, FrameConfigError
from device.sound.features import (
    LOW_LATENCY,
    PAPER,
    FrameConfig,
    Normaliser,
    StreamAnalyzer,
    StreamSynthesizer,
    istft,
    magnitudes,
    stft,
)
from tests.music import clip

CONFIGS = {
    "paper": PAPER,
    "low_latency": LOW_LATENCY,
    "asym_hop64": FrameConfig(hop_length=64, window="asymmetric", synthesis_length=128),
    "hann_hop256_fft4096": FrameConfig(n_fft=4096, win_length=2048, hop_length=256),
}


def error_db(x: np.ndarray, y: np.ndarray) -> float:
    return 20 * np.log10(np.linalg.norm(x - y) / np.linalg.norm(x))


def stream(x: np.ndarray, config: FrameConfig) -> tuple[np.ndarray, np.ndarray]:
    """Run x through the streaming analyser/synthesiser; return (spectra, output)."""
    R = config.hop_length
    a, s = StreamAnalyzer(config), StreamSynthesizer(config)
    xs = np.concatenate([x, np.zeros(config.win_length + R)])
    n = len(xs) // R
    spectra = np.empty((n, config.n_bins), complex)
    out = np.empty(n * R)
    for t in range(n):
        a.push(xs[t * R:(t + 1) * R], out=spectra[t])
        s.push(spectra[t], out=out[t * R:(t + 1) * R])
    return spectra, out


@pytest.mark.parametrize("name", CONFIGS)
def test_batch_round_trip_on_real_music(name):
    config = CONFIGS[name]
    x = clip("aztec", seconds=2.0)
    y = istft(stft(x, config=config), config=config, length=len(x))
    assert error_db(x, y) <= -90


@pytest.mark.parametrize("name", CONFIGS)
def test_streaming_equals_batch(name):
    config = CONFIGS[name]
    x = clip("castle", seconds=1.0)
    S = stft(x, config=config)
    spectra, out = stream(x, config)
    np.testing.assert_allclose(spectra[: len(S)], S, atol=1e-9)
    D = config.stream_delay
    y = out[D:D + len(x)]
    assert error_db(x, y) <= -90
    np.testing.assert_allclose(y, istft(S, config=config, length=len(x)), atol=1e-10)


def test_stft_agrees_with_direct_dft():
    """A slow reference: the DFT as a matrix product on explicitly cut frames."""
    config = FrameConfig(n_fft=256, win_length=256, hop_length=64)
    x = clip("greek", seconds=0.1)
    S = stft(x, config=config)
    K, R = config.win_length, config.hop_length
    padded = np.concatenate([np.zeros(K - R), x, np.zeros(K)])
    n = np.arange(K)
    k = np.arange(config.n_bins)[:, None]
    dft = np.exp(-2j * np.pi * k * n / config.n_fft)
    for t in (0, 3, 10, len(S) - 2):
        frame = padded[t * R:t * R + K] * config.analysis_window
        np.testing.assert_allclose(S[t], dft @ frame, atol=1e-9)


def test_stft_agrees_with_scipy():
    from scipy.signal import ShortTimeFFT

    config = PAPER
    x = clip("japanese", seconds=1.0)
    sft = ShortTimeFFT(config.analysis_window, hop=config.hop_length, fs=config.sample_rate,
                       fft_mode="onesided", mfft=config.n_fft)
    ref = np.abs(sft.stft(x).T)  # scipy's phase is relative to the window centre
    ours = np.abs(stft(x, config=config))
    # scipy's frame p is centred on sample p*hop; ours t ends at sample (t+1)*hop
    lag = config.win_length // 2 // config.hop_length - 1
    for t in range(5, 30):
        np.testing.assert_allclose(ours[t], ref[t - lag - sft.p_min], rtol=1e-7, atol=1e-9)


def test_low_latency_is_under_12_ms_and_paper_is_93():
    assert LOW_LATENCY.latency_ms <= 12.0
    assert LOW_LATENCY.n_bins == PAPER.n_bins == 1025
    assert abs(PAPER.latency_ms - 92.8) < 0.1


def test_impulse_comes_out_after_the_stated_delay():
    config = LOW_LATENCY
    x = np.zeros(4096)
    x[1000] = 1.0
    _, out = stream(x, config)
    assert np.argmax(np.abs(out)) == 1000 + config.stream_delay


@pytest.mark.parametrize("kwargs, words", [
    (dict(hop_length=100, window="asymmetric", synthesis_length=256), "does not reconstruct"),
    (dict(hop_length=0), "hop_length must be in 1..win_length=2048, got 0"),
    (dict(win_length=4096), "win_length must be in 16..n_fft=2048, got 4096"),
    (dict(window="kaiser"), "window must be one of hann, asymmetric, got 'kaiser'"),
    (dict(window="asymmetric", synthesis_length=2000), "synthesis_length must be an even"),
    (dict(sample_rate=1000), "sample_rate must be in 8000..192000 Hz, got 1000"),
    (dict(n_fft=2049), "n_fft must be even"),
    (dict(hop_length=2048), "leaves gaps"),
])
def test_bad_frame_configs_say_what_and_why(kwargs, words):
    with pytest.raises(FrameConfigError, match=words.replace("(", r"\(").replace(".", r"\.")):
        FrameConfig(**kwargs)


def test_frame_config_round_trips_through_dict():
    for config in CONFIGS.values():
        assert FrameConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("kind", ["max", "logmax", "standard"])
def test_normaliser_round_trip_and_range(kind):
    mags = magnitudes(clip("space", seconds=2.0), config=PAPER)
    norm = Normaliser.fit(mags, kind=kind)
    feats = norm.forward(mags)
    if kind in ("max", "logmax"):
        assert feats.min() >= -1e-12 and feats.max() <= 1 + 1e-12
        assert feats.max() == pytest.approx(1.0)
    else:
        np.testing.assert_allclose(feats.mean(axis=0), 0, atol=1e-9)
    back = norm.inverse(feats)
    np.testing.assert_allclose(back, mags, rtol=1e-9, atol=1e-9)
    again = Normaliser.from_dict(norm.to_dict())
    np.testing.assert_allclose(again.forward(mags), feats)


def test_normaliser_inverse_never_negative_nor_infinite():
    norm = Normaliser("logmax", "log", 1e-3, -6.9, 12.0)
    wild = np.array([-1e6, -3.0, 0.0, 1.0, 1e6])
    out = norm.inverse(wild)
    assert np.all(out >= 0) and np.all(np.isfinite(out))


def test_normaliser_out_parameter_writes_in_place():
    norm = Normaliser("standard", "log", 1e-3, np.zeros(1025), np.ones(1025))
    mags = np.abs(np.random.default_rng(0).standard_normal(1025))
    out = np.empty(1025)
    assert norm.forward(mags, out=out) is out
    np.testing.assert_allclose(out, np.log(mags + 1e-3))


@pytest.mark.parametrize("args, words", [
    (("max", "linear", 0.0, 0.0, 0.0), "scale must be > 0"),
    (("max", "linear", 0.0, float("nan"), 1.0), "offset must be finite"),
    (("logmax", "log", 0.0, 0.0, 1.0), "floor must be finite and > 0"),
    (("loud", "linear", 0.0, 0.0, 1.0), "kind must be one of max, logmax, standard"),
    (("max", "cubic", 0.0, 0.0, 1.0), "amplitude must be 'linear' or 'log'"),
])
def test_bad_normalisers_are_refused(args, words):
    with pytest.raises(FeatureError, match=words):
        Normaliser(*args)


def test_stft_refuses_stereo():
    with pytest.raises(FeatureError, match=r"mono 1-D signal, got shape \(10, 2\)"):
        stft(np.zeros((10, 2)), config=PAPER)
