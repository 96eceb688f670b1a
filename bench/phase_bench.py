"""Phase reconstruction on held-out real music: spectral convergence and cost, side by side.

For each frame configuration (the paper's and the low-latency one) the true
magnitudes of a music segment are given to each phase method; the result is
resynthesised (WOLA), analysed again, and compared with the true magnitudes:

    spectral convergence (dB) = 20·log10(‖ |STFT(y)| - |X| ‖_F / ‖ |X| ‖_F)   (lower is better)

Methods: RTPGHI, the seed's per-bin phase advance and random phase (the
engine's streaming generators, one frame at a time), and offline fast
Griffin-Lim (Perraudin, Balazs and Søndergaard 2013, α = 0.99, random initial
phase, seed 0) with 32 and 100 iterations, in numpy over device.sound.features'
batch STFT and a frame-vectorised inverse (librosa is not installed; this is the same algorithm as
librosa.griffinlim's default).  Cost is CPU seconds per second of audio, one
thread.

The segment: pushover/space.ogg, the training run's *test* track (models/default
manifest), not used to tune anything here.

    .venv/bin/python bench/phase_bench.py [--seconds 6] [--json FILE]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.report import emit  # noqa: E402
from device.sound.features import LOW_LATENCY, PAPER, FrameConfig, istft, stft  # noqa: E402
from device.sound.phase import RTPGHI, make_phase  # noqa: E402
from tests.music import clip  # noqa: E402

TRACK, START_S = "space", 30.0


def spectral_convergence_db(y: np.ndarray, mags: np.ndarray, config: FrameConfig, *,
                            level_matched: bool = False) -> float:
    """SC in dB; ``level_matched`` first scales y's magnitudes to the truth's norm
    (phase inconsistency also costs loudness; this separates the two)."""
    got = np.abs(stft(y, config=config))[: len(mags)]
    if level_matched:
        got *= np.linalg.norm(mags) / np.linalg.norm(got)
    return 20.0 * math.log10(np.linalg.norm(got - mags) / np.linalg.norm(mags))


def streamed(name: str, mags: np.ndarray, config: FrameConfig) -> tuple[np.ndarray, float]:
    """Complex spectra from a streaming phase generator; (spectra, seconds spent)."""
    gen = make_phase(name, config)
    # A generator with look-ahead returns the previous frame's spectrum.
    lag = int(getattr(gen, "lookahead", 1 if isinstance(gen, RTPGHI) else 0))
    n = len(mags)
    out = np.zeros(config.n_bins, dtype=np.complex128)
    spectra = np.zeros((n, config.n_bins), dtype=np.complex128)
    zeros = np.zeros(config.n_bins)
    t0 = time.process_time()
    for i in range(n + lag):
        gen.synthesize(mags[i] if i < n else zeros, out)
        if i >= lag:
            spectra[i - lag] = out
    return spectra, time.process_time() - t0


def overlap_add_istft(spectra: np.ndarray, config: FrameConfig, length: int) -> np.ndarray:
    """device.sound.features.istft, vectorised over frames (loops over the K/R frame
    offsets instead of the frames): the same result, fast enough that Griffin-Lim's
    cost here is the algorithm's, not a Python loop's."""
    K, R = config.win_length, config.hop_length
    frames = np.fft.irfft(spectra, n=config.n_fft, axis=-1)[:, :K] * config.synthesis_window
    T, q = len(frames), -(-K // R)
    pad = q * R - K
    if pad:
        frames = np.pad(frames, ((0, 0), (pad, 0)))  # keep frame ends aligned
    blocks = np.zeros((T + q - 1, R))
    for j in range(q):
        blocks[j:j + T] += frames[:, j * R:(j + 1) * R]
    out = blocks.reshape(-1)[pad:]
    return out[K - R:K - R + length]


def fast_griffin_lim(mags: np.ndarray, config: FrameConfig, length: int, *,
                     iterations: int, alpha: float = 0.99, seed: int = 0) -> np.ndarray:
    """Fast Griffin-Lim: the projection sequence with Nesterov-like momentum α."""
    rng = np.random.default_rng(seed)
    c = mags * np.exp(2j * np.pi * rng.random(mags.shape))
    prev = c
    for _ in range(iterations):
        proj = stft(overlap_add_istft(c, config, length), config=config)[: len(mags)]
        t = mags * np.exp(1j * np.angle(proj))
        c = t + alpha * (t - prev)
        prev = t
    return overlap_add_istft(prev, config, length)


def bench_config(name: str, config: FrameConfig, x: np.ndarray) -> dict:
    mags = np.abs(stft(x, config=config))
    seconds = len(x) / config.sample_rate
    rows = {}
    for method in ("rtpghi", "advance", "random"):
        spectra, cost = streamed(method, mags, config)
        y = istft(spectra, config=config, length=len(x))
        rows[method] = {"sc_db": round(spectral_convergence_db(y, mags, config), 2),
                        "sc_db_level_matched": round(spectral_convergence_db(
                            y, mags, config, level_matched=True), 2),
                        "level_db": round(20 * math.log10(np.linalg.norm(y) / np.linalg.norm(x)),
                                          2),
                        "cost_s_per_audio_s": round(cost / seconds, 5),
                        "us_per_hop": round(1e6 * cost / len(mags), 1)}
    for iters in (32, 100):
        t0 = time.process_time()
        y = fast_griffin_lim(mags, config, len(x), iterations=iters)
        cost = time.process_time() - t0
        rows[f"griffin_lim_{iters}"] = {
            "sc_db": round(spectral_convergence_db(y, mags, config), 2),
            "sc_db_level_matched": round(spectral_convergence_db(
                y, mags, config, level_matched=True), 2),
            "cost_s_per_audio_s": round(cost / seconds, 4)}
    gl = rows["griffin_lim_32"]["cost_s_per_audio_s"]
    rt = rows["rtpghi"]
    return {"frame": config.to_dict(), "frames": len(mags), "methods": rows,
            "rtpghi_minus_advance_db": round(rt["sc_db"] - rows["advance"]["sc_db"], 2),
            "rtpghi_minus_advance_level_matched_db": round(
                rt["sc_db_level_matched"] - rows["advance"]["sc_db_level_matched"], 2),
            "rtpghi_cost_fraction_of_gl32": round(rt["cost_s_per_audio_s"] / gl, 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    x = np.array(clip(TRACK, start_s=START_S, seconds=args.seconds))
    result = {
        "bench": "phase", "track": f"pushover/{TRACK}.ogg", "start_s": START_S,
        "seconds": args.seconds, "machine": platform.machine(), "python": platform.python_version(),
        "configs": {name: bench_config(name, cfg, x)
                    for name, cfg in (("paper", PAPER), ("low_latency", LOW_LATENCY))},
    }
    return emit(result, args.json)


if __name__ == "__main__":
    sys.exit(main())
