"""Reconstruction metrics on linear magnitude spectra (frames x bins), in numpy.

* ``mse_paper``: mean over bins and frames of the squared error of magnitudes
  divided by the training set's global maximum — the paper's [0, 1] units,
  so figures compare across feature scalings.
* ``spectral_convergence_db``: ``20 log10(||S - S'||_F / ||S||_F)``; lower is better.
* ``log_spectral_distance_db``: per frame the RMS over bins of
  ``20 log10((S + eps) / (S' + eps))``, averaged over frames; ``eps`` is
  ``global_max * 1e-5`` (-100 dB) so silent bins do not dominate.
* ``snr_db``: ``10 log10(sum x^2 / sum (x - x')^2)`` of two signals.
"""

from __future__ import annotations

import numpy as np

LSD_FLOOR = 1e-5  # relative to the global maximum: -100 dB


def mse_paper(true: np.ndarray, pred: np.ndarray, global_max: float) -> float:
    d = (np.asarray(pred, np.float64) - np.asarray(true, np.float64)) / float(global_max)
    return float(np.mean(d * d))


def spectral_convergence_db(true: np.ndarray, pred: np.ndarray) -> float:
    t = np.asarray(true, np.float64)
    num = np.linalg.norm(t - np.asarray(pred, np.float64))
    den = np.linalg.norm(t)
    return float(20.0 * np.log10(max(num, 1e-300) / max(den, 1e-300)))


def log_spectral_distance_db(true: np.ndarray, pred: np.ndarray, global_max: float) -> float:
    eps = LSD_FLOOR * float(global_max)
    t = np.asarray(true, np.float64)
    p = np.maximum(np.asarray(pred, np.float64), 0.0)
    d = 20.0 * np.log10((t + eps) / (p + eps))
    return float(np.mean(np.sqrt(np.mean(d * d, axis=-1))))


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    r = np.asarray(reference, np.float64)
    e = r - np.asarray(estimate, np.float64)
    return float(10.0 * np.log10(max(np.sum(r * r), 1e-300) / max(np.sum(e * e), 1e-300)))


def spectral_metrics(true: np.ndarray, pred: np.ndarray, global_max: float) -> dict[str, float]:
    """The three spectral metrics of one reconstruction, as a dict."""
    return {"mse_paper": mse_paper(true, pred, global_max),
            "sc_db": spectral_convergence_db(true, pred),
            "lsd_db": log_spectral_distance_db(true, pred, global_max)}
