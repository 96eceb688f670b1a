"""Honest baselines: what a linear method of the same size does on the same frames.

Every baseline is fitted on a dataset's training frames (linear magnitudes,
frames x bins) and judged, beside any number of model bundles, on

* the dataset's test split (spectral metrics only: the frames have no phase), and
* any audio given: analysed with the dataset's frame (``device.sound.features.stft``),
  reconstructed, resynthesised with the input's phase (``istft``), and scored
  with the spectral metrics, the resynthesis SNR and a perceptual score.

Baselines (``units`` K, one per requested size):

* ``mean``: every frame predicted by the training frames' mean spectrum.
* ``pcaK-<amplitude>``: projection onto the first K principal components
  (scikit-learn ``PCA``) of the training frames after an amplitude map, then
  mapped back.  Amplitudes, on magnitudes divided by the training maximum g:
  ``linear`` (the best linear K-unit autoencoder in MSE), ``log``
  (``ln(m + 1e-5)``, the floor of the log-spectral distance: -100 dB) and
  ``pow0.5`` / ``pow0.33`` (compressed ``m ** p``).

Figures are in the units of :mod:`train.metrics`: MSE in the paper's units
(the dataset's training maximum), spectral convergence and log-spectral
distance in dB, SNR in dB.  The perceptual score is ViSQOL v3 in audio mode
(MOS-LQO, 1..5; ``visqol-python``, a pure-Python port of Google's ViSQOL
3.3.3), run at 48 kHz after resampling, against the untouched clip.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from device.sound.audiofile import load_audio
from device.errors import EvaluationError
from device.sound.features import FrameConfig, istft, stft
from train import metrics as M

log = logging.getLogger(__name__)

AMPLITUDES = ("linear", "log", "pow0.5", "pow0.33")
LOG_FLOOR = M.LSD_FLOOR  # relative to the training maximum: -100 dB, as the LSD metric
PERCEPTUAL = ("visqol", "none")
VISQOL_RATE = 48000  # ViSQOL's audio mode is built for 48 kHz
KEYS = ("mse_paper", "sc_db", "lsd_db", "snr_db", "perceptual")


# -- amplitude maps --------------------------------------------------------------------
def amplitude_forward(m: np.ndarray, amplitude: str) -> np.ndarray:
    """Max-scaled magnitudes (frames x bins, 0..~1) -> the amplitude PCA works on."""
    if amplitude == "linear":
        return m
    if amplitude == "log":
        return np.log(m + LOG_FLOOR)
    if amplitude.startswith("pow"):
        return np.power(m, float(amplitude[3:]))
    raise EvaluationError(f"amplitude must be one of {', '.join(AMPLITUDES)}, got "
                          f"{amplitude!r}")


def amplitude_inverse(y: np.ndarray, amplitude: str) -> np.ndarray:
    """Inverse of :func:`amplitude_forward`, never negative (a projection can undershoot)."""
    if amplitude == "linear":
        return np.maximum(y, 0.0)
    if amplitude == "log":
        return np.maximum(np.exp(np.minimum(y, 30.0)) - LOG_FLOOR, 0.0)
    if amplitude.startswith("pow"):
        return np.power(np.maximum(y, 0.0), 1.0 / float(amplitude[3:]))
    raise EvaluationError(f"amplitude must be one of {', '.join(AMPLITUDES)}, got "
                          f"{amplitude!r}")


# -- the baselines ---------------------------------------------------------------------
@dataclass
class MeanSpectrum:
    """Predicts the training frames' mean linear magnitude spectrum for every frame."""

    mean: np.ndarray  # (bins,) linear magnitudes
    name: str = "mean"
    units: int = 0

    @classmethod
    def fit(cls, train: np.ndarray) -> MeanSpectrum:
        return cls(np.asarray(train, np.float64).mean(axis=0))

    def reconstruct(self, mags: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.mean, np.shape(mags)).copy()


class PCASpectrum:
    """K principal components of amplitude-mapped, max-scaled training frames.

    One scikit-learn ``PCA`` is fitted per amplitude with the largest K asked
    for; smaller sizes use its leading components (principal subspaces are
    nested, so that equals a fit with fewer components).
    """

    def __init__(self, train: np.ndarray, *, amplitude: str, units: int, global_max: float,
                 pca: Any | None = None):
        if amplitude not in AMPLITUDES:
            raise EvaluationError(f"amplitude must be one of {', '.join(AMPLITUDES)}, got "
                                  f"{amplitude!r}")
        n, bins = np.shape(train)
        if not 1 <= units <= min(n, bins):
            raise EvaluationError(f"PCA units must be in 1..{min(n, bins)} (frames, bins of "
                                  f"the training split), got {units}")
        self.amplitude, self.units, self.global_max = amplitude, units, float(global_max)
        self.name = f"pca{units}-{amplitude}"
        if pca is None:
            pca = _pca(units, n, bins)
            pca.fit(amplitude_forward(np.asarray(train, np.float64) / self.global_max,
                                      amplitude))
        if pca.n_components_ < units:
            raise EvaluationError(f"the shared PCA has {pca.n_components_} components, "
                                  f"{self.name} needs {units}")
        self.mean_ = np.asarray(pca.mean_, np.float64)
        self.components_ = np.asarray(pca.components_[:units], np.float64)  # (K, bins)
        self.pca = pca

    def encode(self, mags: np.ndarray) -> np.ndarray:
        """Linear magnitudes (frames x bins) -> component scores (frames x K)."""
        y = amplitude_forward(np.asarray(mags, np.float64) / self.global_max, self.amplitude)
        return (y - self.mean_) @ self.components_.T

    def reconstruct(self, mags: np.ndarray) -> np.ndarray:
        """Linear magnitudes (frames x bins) -> their K-component reconstruction."""
        y = self.encode(mags) @ self.components_ + self.mean_
        return amplitude_inverse(y, self.amplitude) * self.global_max


def _pca(units: int, frames: int, bins: int) -> Any:
    """scikit-learn's exact PCA: one bins x bins eigenproblem when frames >> bins
    (fast on a dataset), else the SVD of the frames."""
    from sklearn.decomposition import PCA

    solver = "covariance_eigh" if frames > 2 * bins else "full"
    return PCA(n_components=units, svd_solver=solver)


def fit_baselines(train: np.ndarray, *, units: Sequence[int] = (8,),
                  amplitudes: Sequence[str] = AMPLITUDES, global_max: float | None = None
                  ) -> list[Any]:
    """The mean spectrum and one PCA per (size, amplitude), fitted on ``train``
    (linear magnitudes, frames x bins).  ``global_max`` defaults to ``train.max()``."""
    train = np.asarray(train, np.float64)
    g = float(train.max()) if global_max is None else float(global_max)
    if not g > 0:
        raise EvaluationError(f"training frames must have a maximum > 0, got {g}")
    out: list[Any] = [MeanSpectrum.fit(train)]
    if not units:
        return out
    top = max(units)
    for amp in amplitudes:
        pca = None
        if top <= min(train.shape):
            pca = _pca(top, *train.shape)
            pca.fit(amplitude_forward(train / g, amp))
        for k in sorted(units):
            out.append(PCASpectrum(train, amplitude=amp, units=k, global_max=g, pca=pca))
    return out


# -- bundles on the same frames --------------------------------------------------------
class BundleModel:
    """A model bundle's own TFLite encoder and decoder, frame by frame
    (:func:`train.evaluate.reconstruct`), in the same interface as the baselines."""

    def __init__(self, path: str | os.PathLike, frame: FrameConfig):
        from device.models.bundle import read_bundle

        self.bundle = read_bundle(path)
        self.path = os.fspath(path)
        if self.bundle.frame != frame:
            raise EvaluationError(
                f"bundle {self.path!r} has frame {self.bundle.frame.to_dict()}, the data has "
                f"{frame.to_dict()}: compare models on the frame they were trained for")
        self.name = f"bundle:{self.bundle.name}"
        self.units = self.bundle.units

    def reconstruct(self, mags: np.ndarray) -> np.ndarray:
        from train.evaluate import reconstruct

        return reconstruct(self.bundle, np.asarray(mags, np.float32))[1]


class Identity:
    """The STFT round trip, untouched: the ceiling every score is read against."""

    name = "untouched"
    units = None

    def reconstruct(self, mags: np.ndarray) -> np.ndarray:
        return np.asarray(mags, np.float64)


# -- the perceptual score --------------------------------------------------------------
class Visqol:
    """ViSQOL v3, audio mode (``visqol-python``): MOS-LQO 1..5 of ``degraded`` against
    ``reference`` (mono, ``sample_rate`` Hz), both resampled to 48 kHz by
    ``scipy.signal.resample_poly``.  About 2-3 s of CPU per second of audio."""

    name = "ViSQOL v3 audio mode (visqol-python), MOS-LQO"

    def __init__(self) -> None:
        try:
            from visqol import VisqolApi
        except ImportError:  # pragma: no cover - the train extra installs it
            raise EvaluationError("the perceptual score needs visqol-python (pip install "
                                  "'aesynth[train]'), or pass --perceptual none") from None
        self.api = VisqolApi()
        self.api.create(mode="audio")

    def __call__(self, reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
        from scipy.signal import resample_poly

        g = gcd(VISQOL_RATE, int(sample_rate))
        up, down = VISQOL_RATE // g, int(sample_rate) // g
        ref = resample_poly(np.asarray(reference, np.float64), up, down)
        deg = resample_poly(np.asarray(degraded, np.float64), up, down)
        return float(self.api.measure_from_arrays(ref, deg, VISQOL_RATE).moslqo)


# -- scoring ---------------------------------------------------------------------------
def score_frames(method: Any, mags: np.ndarray, global_max: float) -> dict[str, float]:
    """Spectral metrics of ``method`` on magnitude frames (frames x bins)."""
    return M.spectral_metrics(mags, method.reconstruct(mags), global_max)


def score_audio(method: Any, x: np.ndarray, frame: FrameConfig, global_max: float, *,
                perceptual: Callable[[np.ndarray, np.ndarray, int], float] | None = None,
                perceptual_seconds: float = 6.0) -> dict[str, float]:
    """Metrics of ``method`` on one mono signal ``x`` at ``frame.sample_rate``: spectral
    metrics of its STFT, SNR (dB) of the resynthesis with the input phase, and the
    perceptual score of the first ``perceptual_seconds`` of that resynthesis."""
    spec = stft(x, config=frame)
    mags = np.abs(spec)
    pred = method.reconstruct(mags)
    out = M.spectral_metrics(mags, pred, global_max)
    y = istft(pred * np.exp(1j * np.angle(spec)), config=frame, length=len(x))
    out["snr_db"] = M.snr_db(x, y)
    if perceptual is not None:
        n = min(len(x), int(perceptual_seconds * frame.sample_rate))
        out["perceptual"] = perceptual(x[:n], y[:n], frame.sample_rate)
    return out


@dataclass(frozen=True)
class Clip:
    """A part of an audio file: ``start`` and ``seconds`` in the file's time (s)."""

    path: str
    start: float
    seconds: float | None

    def load(self, sample_rate: int) -> np.ndarray:
        x = load_audio(self.path, sample_rate, start_s=self.start, seconds=self.seconds)
        return np.asarray(x, np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "start": self.start, "seconds": self.seconds}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in KEYS if rows and all(k in r for r in rows)]
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def run_baselines(data: str | os.PathLike, *, audio: Sequence[Clip] = (),
                  units: Sequence[int] = (8,), bundles: Sequence[str] = (),
                  amplitudes: Sequence[str] = AMPLITUDES, fit_frames: int | None = None,
                  test_frames: int | None = None, perceptual: str = "visqol",
                  perceptual_seconds: float = 6.0) -> dict[str, Any]:
    """Fit the baselines on ``data``'s training split; score them and ``bundles`` on its
    test split and on ``audio``.  Returns the JSON document (see :func:`markdown`).

    ``fit_frames`` / ``test_frames`` cap the frames used (the first ones; the
    dataset is already shuffled).  Raises EvaluationError for a bundle of
    another frame, a bad size or perceptual name; DataError for a bad dataset.
    """
    from train.data import load_dataset

    if perceptual not in PERCEPTUAL:
        raise EvaluationError(f"perceptual must be one of {', '.join(PERCEPTUAL)}, got "
                              f"{perceptual!r}")
    if not perceptual_seconds > 0:
        raise EvaluationError(f"perceptual_seconds must be > 0, got {perceptual_seconds}")
    t0 = time.monotonic()
    ds = load_dataset(data)
    train = ds.train[:fit_frames] if fit_frames else ds.train
    test = ds.test[:test_frames] if test_frames else ds.test
    g = float(np.max(ds.train))
    methods: list[Any] = fit_baselines(train, units=units, amplitudes=amplitudes, global_max=g)
    methods += [BundleModel(b, ds.frame) for b in bundles]
    scorer = Visqol() if perceptual == "visqol" and audio else None
    res: dict[str, Any] = {
        "data": os.fspath(data), "frame": ds.frame.to_dict(), "global_max": g,
        "fit_frames": int(len(train)), "test_frames": int(len(test)),
        "test_tracks": ds.tracks("test"), "units": list(units),
        "perceptual": {"name": scorer.name if scorer else None,
                       "seconds": perceptual_seconds if scorer else None},
        "audio": [c.to_dict() for c in audio], "methods": {}}
    clips = [(c, c.load(ds.frame.sample_rate)) for c in audio]
    if clips:
        methods.append(Identity())
    for m in methods:
        entry: dict[str, Any] = {"units": m.units}
        if not isinstance(m, Identity):
            entry["test"] = score_frames(m, np.asarray(test, np.float64), g)
        if clips:
            files = {}
            for c, x in clips:
                files[c.path] = score_audio(m, x, ds.frame, g, perceptual=scorer,
                                            perceptual_seconds=perceptual_seconds)
            entry["audio"] = {"files": files, "mean": _mean(list(files.values()))}
        res["methods"][m.name] = entry
        log.info("%s: %s", m.name, {k: v for k, v in entry.items() if k != "audio"})
    res["seconds"] = round(time.monotonic() - t0, 1)
    return res


# -- reports ---------------------------------------------------------------------------
def _cell(d: dict[str, float] | None, key: str, fmt: str) -> str:
    if not d or key not in d:
        return "—"
    if d[key] < -200:  # the untouched round trip: exact to float precision
        return "< -200"
    return format(d[key], fmt)


def markdown(res: dict[str, Any]) -> str:
    """The side-by-side table: test split (MSE, SC, LSD) and audio means (SC, LSD, SNR,
    perceptual), one row per method, grouped by size."""
    has_audio = bool(res["audio"])
    head = "| method | units | test MSE (paper) | test SC dB | test LSD dB |"
    rule = "|---|---|---|---|---|"
    if has_audio:
        head += " audio SC dB | audio LSD dB | audio SNR dB | perceptual |"
        rule += "---|---|---|---|"
    L = [f"Fitted on {res['fit_frames']} training frames of `{res['data']}`, test split "
         f"{res['test_frames']} frames; MSE in the paper's units (training max "
         f"{res['global_max']:.4g}).", ""]
    if has_audio:
        p = res["perceptual"]
        what = (f"{p['name']} on the first {p['seconds']:g} s of each clip" if p["name"]
                else "none")
        L += [f"Audio: {len(res['audio'])} clip(s), means over clips; SNR of the resynthesis "
              f"with the input phase; perceptual score: {what}.", ""]
    L += [head, rule]

    def order(kv: tuple[str, dict]) -> tuple:
        name, e = kv
        u = e["units"]
        return (u is None, u or 0, not name.startswith("bundle:"), name)

    for name, e in sorted(res["methods"].items(), key=order):
        t, a = e.get("test"), (e.get("audio") or {}).get("mean")
        row = (f"| {name} | {'' if e['units'] is None else e['units']} | "
               f"{_cell(t, 'mse_paper', '.3g')} | {_cell(t, 'sc_db', '.2f')} | "
               f"{_cell(t, 'lsd_db', '.2f')} |")
        if has_audio:
            row += (f" {_cell(a, 'sc_db', '.2f')} | {_cell(a, 'lsd_db', '.2f')} | "
                    f"{_cell(a, 'snr_db', '.2f')} | {_cell(a, 'perceptual', '.2f')} |")
        L.append(row)
    return "\n".join(L) + "\n"


def write(res: dict[str, Any], *, json_path: Path | None, markdown_path: Path | None) -> None:
    for path, text in ((json_path, json.dumps(res, indent=1) + "\n"),
                       (markdown_path, markdown(res))):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
