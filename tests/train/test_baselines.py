"""Baselines on real music: PCA against a slow SVD reference, metrics on known
signals, the perceptual score, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device.errors import EvaluationError
from device.sound.features import LOW_LATENCY, PAPER, magnitudes
from tests.music import clip, track
from train import baselines as B

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_bundle"


@pytest.fixture(scope="module")
def frames() -> tuple[np.ndarray, np.ndarray]:
    """(train, test) magnitude frames of two different real tracks, low-latency frame."""
    train = magnitudes(np.asarray(clip("aztec", seconds=3.0)), config=LOW_LATENCY)
    test = magnitudes(np.asarray(clip("castle", seconds=2.0)), config=LOW_LATENCY)
    return train[::2], test[::3]


def reference_pca(train: np.ndarray, test: np.ndarray, k: int, amplitude: str,
                  g: float) -> np.ndarray:
    """Slow reference: full SVD of the centred, mapped training frames, projection of the
    mapped test frames on the first k right singular vectors, map back."""
    if amplitude == "linear":
        fwd, inv = (lambda m: m), (lambda y: np.maximum(y, 0.0))
    elif amplitude == "log":
        fwd = lambda m: np.log(m + 1e-5)  # noqa: E731
        inv = lambda y: np.maximum(np.exp(y) - 1e-5, 0.0)  # noqa: E731
    else:
        p = float(amplitude[3:])
        fwd = lambda m: m ** p  # noqa: E731
        inv = lambda y: np.maximum(y, 0.0) ** (1 / p)  # noqa: E731
    x = fwd(train / g)
    mu = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
    v = vt[:k]
    return inv((fwd(test / g) - mu) @ v.T @ v + mu) * g


@pytest.mark.parametrize("amplitude", B.AMPLITUDES)
def test_pca_matches_an_svd_reference(frames, amplitude):
    train, test = frames
    g = float(train.max())
    fitted = B.fit_baselines(train, units=(3, 8), amplitudes=(amplitude,), global_max=g)
    names = [m.name for m in fitted]
    assert names == ["mean", f"pca3-{amplitude}", f"pca8-{amplitude}"]
    for m, k in zip(fitted[1:], (3, 8), strict=True):
        want = reference_pca(train, test, k, amplitude, g)
        got = m.reconstruct(test)
        assert np.allclose(got, want, rtol=1e-6, atol=1e-9 * g), (amplitude, k)
    # nested subspaces: 8 components fit the training frames better than 3
    e3 = np.mean((fitted[1].reconstruct(train) - train) ** 2)
    e8 = np.mean((fitted[2].reconstruct(train) - train) ** 2)
    assert e8 < e3


def test_mean_spectrum_predicts_the_training_mean(frames):
    train, test = frames
    m = B.MeanSpectrum.fit(train)
    pred = m.reconstruct(test)
    assert pred.shape == test.shape
    assert np.allclose(pred, train.mean(axis=0))


def test_amplitude_maps_invert(frames):
    m = frames[0] / frames[0].max()
    for a in B.AMPLITUDES:
        assert np.allclose(B.amplitude_inverse(B.amplitude_forward(m, a), a), m, atol=1e-12)
    with pytest.raises(EvaluationError, match="amplitude must be one of linear"):
        B.amplitude_forward(m, "cube")


def test_pca_size_beyond_the_data_is_refused(frames):
    with pytest.raises(EvaluationError, match=r"PCA units must be in 1\.\.266 .*got 5000"):
        B.PCASpectrum(frames[0][:, :1025], amplitude="linear", units=5000, global_max=1.0)


class Halve:
    name, units = "halve", 1

    def reconstruct(self, mags):
        return 0.5 * np.asarray(mags)


def test_audio_metrics_on_known_reconstructions():
    x = np.asarray(clip("aztec", seconds=2.0))
    g = 300.0
    same = B.score_audio(B.Identity(), x, LOW_LATENCY, g)
    assert same["snr_db"] > 100 and same["lsd_db"] < 1e-6 and same["sc_db"] < -200
    half = B.score_audio(Halve(), x, LOW_LATENCY, g)
    six = 20 * np.log10(2)
    # half the magnitudes with the input phase: half the signal, exactly
    assert half["snr_db"] == pytest.approx(six, abs=1e-6)
    assert half["sc_db"] == pytest.approx(-six, abs=1e-6)
    # LSD: 6.02 dB where bins are well above the -100 dB floor, less where they are not
    assert 4.0 < half["lsd_db"] <= six + 1e-9


def test_visqol_scores_untouched_high_and_degraded_lower():
    x = np.asarray(clip("aztec", seconds=3.0))
    score = B.Visqol()
    noisy = x + 0.02 * np.random.default_rng(0).standard_normal(len(x))
    clean, bad = score(x, x, 22050), score(x, noisy, 22050)
    assert clean > 4.5
    assert bad < clean - 0.5


def test_a_bundle_of_another_frame_is_refused():
    with pytest.raises(EvaluationError, match="has frame .* the data has"):
        B.BundleModel(TINY, PAPER)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    from train.data import build_dataset

    out = tmp_path_factory.mktemp("bl") / "ds"
    build_dataset(out, frame=LOW_LATENCY, sources=["pushover"],
                  counts={"train": 600, "valid": 50, "test": 200}, seed=2, max_tracks=3,
                  max_seconds=5)
    return out


def test_cli_baselines_with_defaults(small_dataset, capsys):
    from train.cli import main

    assert main(["baselines", "--data", str(small_dataset)]) == 0
    out = capsys.readouterr().out
    for name in ("mean", "pca8-linear", "pca8-log", "pca8-pow0.5", "pca8-pow0.33"):
        assert f"| {name} |" in out
    assert "audio SC" not in out  # no audio given: the test split only


def test_cli_baselines_scores_bundles_and_audio_side_by_side(small_dataset, tmp_path, capsys):
    from train.cli import main

    js, md = tmp_path / "b.json", tmp_path / "b.md"
    assert main(["baselines", "--data", str(small_dataset), "--units", "4", "8",
                 "--bundle", str(TINY), "--audio", str(track("castle")),
                 "--start", "10", "--seconds", "3", "--perceptual", "none",
                 "--json", str(js), "--markdown", str(md)]) == 0
    res = json.loads(js.read_text())
    assert res["fit_frames"] > 0 and res["audio"][0]["seconds"] == 3
    methods = res["methods"]
    assert {"mean", "pca4-linear", "pca8-pow0.33", "bundle:tiny", "untouched"} <= set(methods)
    tiny = methods["bundle:tiny"]
    assert tiny["units"] == 8 and set(tiny["test"]) == {"mse_paper", "sc_db", "lsd_db"}
    assert set(tiny["audio"]["mean"]) == {"mse_paper", "sc_db", "lsd_db", "snr_db"}
    # PCA of 8 linear components beats the mean spectrum on held-out frames and audio
    assert methods["pca8-linear"]["test"]["mse_paper"] < methods["mean"]["test"]["mse_paper"]
    assert methods["pca8-linear"]["audio"]["mean"]["sc_db"] < \
        methods["mean"]["audio"]["mean"]["sc_db"]
    table = md.read_text()
    assert "| bundle:tiny | 8 |" in table
    assert capsys.readouterr().out == table
