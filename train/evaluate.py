"""Judge a bundle on any audio: metrics, pictures and a Markdown report.

The bundle's own TFLite models run through ``device.models.runtime`` frame by frame,
with the features of ``device.sound.features``, so the figures are those of the
instrument, not of the Keras model it came from.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from device.sound.audiofile import load_audio
from device.models.bundle import Bundle, read_bundle
from device.errors import EvaluationError
from device.sound.features import istft, stft
from device.models.runtime import Model
from train import metrics as M

log = logging.getLogger(__name__)


def global_max_of(bundle: Bundle) -> float:
    """The training set's global maximum magnitude (the paper's unit)."""
    g = bundle.manifest.get("training", {}).get("global_max")
    if isinstance(g, (int, float)) and g > 0:
        return float(g)
    if bundle.normaliser.kind == "max":
        return float(np.max(bundle.normaliser.scale))
    raise EvaluationError(f"bundle {bundle.name!r} records no training.global_max (a number "
                          f"> 0) and its normaliser is {bundle.normaliser.kind!r}, not 'max'; "
                          f"cannot report MSE in the paper's units")


def reconstruct(bundle: Bundle, mags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit activations, reconstructed magnitudes) of ``mags`` through the bundle."""
    feats = bundle.normaliser.forward(mags).astype(np.float32)
    units = np.empty((len(mags), bundle.units), np.float32)
    out = np.empty_like(feats)
    with Model(bundle.encoder.content, name="encoder") as enc, \
            Model(bundle.decoder.content, name="decoder") as dec:
        u_buf = np.empty((1, bundle.units), np.float32)
        y_buf = np.empty((1, bundle.n_bins), np.float32)
        for i in range(len(feats)):
            enc.run(feats[i: i + 1], out=u_buf)
            units[i] = u_buf[0]
            dec.run(u_buf, out=y_buf)
            out[i] = y_buf[0]
    return units, bundle.normaliser.inverse(out)


def evaluate_audio(bundle: Bundle, x: np.ndarray) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of one mono signal at the bundle's rate, and arrays for the plots."""
    frame = bundle.frame
    spec = stft(x, config=frame)
    mags, phase = np.abs(spec), np.angle(spec)
    _, pred = reconstruct(bundle, mags)
    g = global_max_of(bundle)
    metrics = M.spectral_metrics(mags, pred, g)
    y = istft(pred * np.exp(1j * phase), config=frame, length=len(x))
    metrics["snr_db"] = M.snr_db(x, y)
    metrics["seconds"] = len(x) / frame.sample_rate
    return metrics, {"mags": mags, "pred": pred, "audio": y}


def evaluate(bundle_path: str | os.PathLike, audio: list[str], *, report_dir: Path | None = None,
             seconds: float | None = None) -> dict[str, Any]:
    """Evaluate ``bundle_path`` on each file in ``audio``; optionally write a report."""
    bundle = read_bundle(bundle_path)
    result: dict[str, Any] = {"bundle": str(bundle_path), "name": bundle.name,
                              "units": bundle.units, "files": {}}
    seen = set(_trained_on(bundle))
    plots = []
    for i, path in enumerate(audio):
        x = load_audio(path, bundle.frame.sample_rate)
        if seconds:
            x = x[: int(seconds * bundle.frame.sample_rate)]
        metrics, arrays = evaluate_audio(bundle, x)
        metrics["seen_in_training"] = os.path.realpath(path) in seen
        result["files"][str(path)] = metrics
        log.info("%s: %s", path, metrics)
        if report_dir is not None:
            report_dir.mkdir(parents=True, exist_ok=True)
            png = report_dir / f"spectrogram_{i}_{Path(path).stem}.png"
            plot_spectrograms(arrays["mags"], arrays["pred"], bundle, png, title=Path(path).name)
            plots.append(png.name)
    keys = ("mse_paper", "sc_db", "lsd_db", "snr_db")
    files = result["files"].values()
    result["mean"] = {k: float(np.mean([m[k] for m in files])) for k in keys}
    if report_dir is not None:
        curves = report_dir / "training_curves.png"
        has_curves = plot_curves(bundle.manifest.get("training", {}).get("history", {}), curves)
        write_report(report_dir / "report.md", result, plots,
                     curves.name if has_curves else None)
    return result


def _trained_on(bundle: Bundle) -> list[str]:
    """Real paths of the recordings the bundle was trained on (from its manifest)."""
    data = bundle.manifest.get("training", {}).get("data", {})
    paths = data.get("paths", {}) if isinstance(data, dict) else {}
    train = paths.get("train", []) if isinstance(paths, dict) else []
    return [os.path.realpath(p) for p in train if isinstance(p, str)]


# -- pictures -------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_spectrograms(mags: np.ndarray, pred: np.ndarray, bundle: Bundle, path: Path, *,
                      title: str = "", max_seconds: float = 12.0) -> None:
    """The paper's Figure 2: original (top) and reconstructed (bottom) STFT, in dB."""
    plt = _plt()
    f = bundle.frame
    n = min(len(mags), int(max_seconds * f.sample_rate / f.hop_length))
    g = global_max_of(bundle)
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True, constrained_layout=True)
    extent = (0, n * f.hop_length / f.sample_rate, 0, f.sample_rate / 2000)
    for ax, m, label in ((axes[0], mags, "original"), (axes[1], pred, "reconstructed")):
        db = 20 * np.log10(np.maximum(m[:n], g * 1e-5) / g)
        im = ax.imshow(db.T, origin="lower", aspect="auto", extent=extent, vmin=-100, vmax=0,
                       cmap="magma")
        ax.set_ylabel("kHz")
        ax.set_title(f"{title} {label}" if title else label)
    axes[1].set_xlabel("seconds")
    fig.colorbar(im, ax=axes, label="dB re training max")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_curves(history: dict[str, list[float]], path: Path) -> bool:
    """Training and validation loss per epoch (log scale); False when none recorded."""
    series = {k: v for k, v in history.items() if isinstance(v, list) and v}
    if not series:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for k, v in series.items():
        ax.plot(np.arange(1, len(v) + 1), v, label=k)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_report(path: Path, result: dict[str, Any], plots: list[str],
                 curves: str | None) -> None:
    lines = [f"# Evaluation of `{result['name']}` ({result['units']} units)", "",
             "MSE in the paper's units (magnitudes / training max); spectral convergence and "
             "log-spectral distance in dB (lower is better); SNR of the audio resynthesised "
             "with the input phase (higher is better).", "",
             "| file | seconds | seen in training | MSE (paper) | SC dB | LSD dB | SNR dB |",
             "|---|---|---|---|---|---|---|"]
    for f, m in result["files"].items():
        lines.append(f"| {Path(f).name} | {m['seconds']:.1f} | {m['seen_in_training']} | "
                     f"{m['mse_paper']:.3g} | {m['sc_db']:.2f} | {m['lsd_db']:.2f} | "
                     f"{m['snr_db']:.2f} |")
    mean = result["mean"]
    lines += [f"| **mean** | | | {mean['mse_paper']:.3g} | {mean['sc_db']:.2f} | "
              f"{mean['lsd_db']:.2f} | {mean['snr_db']:.2f} |", ""]
    for p in plots:
        lines += [f"![{p}]({p})", ""]
    if curves:
        lines += ["## Training curves", "", f"![training curves]({curves})", ""]
    path.write_text("\n".join(lines))


def write_json(result: dict[str, Any], path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
