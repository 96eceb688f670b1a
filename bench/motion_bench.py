"""Motion and pitch in generate mode, measured on the output (JSON).

    python -m bench.motion_bench models/default [models/wide16 ...] [--seconds 10]

Per bundle, rendered offline through the real engine (device.sound.render.render):

- ``lfo``: every unit in turn gets a sine LFO at 0.5 Hz, depth 1, the others
  at their defaults; the level envelope is the RMS in 50 ms frames (dBFS)
  over ``--seconds`` s, after the first 0.5 s (the level keeper settles).
  ``swing_db`` = 95th − 5th percentile of the envelope (robust to a click);
  ``best_unit`` is the unit with the largest swing, ``envelope_period_s``
  the period of that envelope found by autocorrelation (expected 2 s).
- ``pitch``: the drone, then a held note +12 semitones from the reference
  (60 → 72); spectral centroid of the long-term power spectrum of each
  (Hz), and their ratio (expected 2: the issue's bound is 1.8..2.2).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from device.state import commands as c
from device.models.bundle import read_bundle
from device.sound.engine import Engine
from device.sound.render import TimedCommand, render

LFO_HZ = 0.5
SETTLE_S = 0.5
FRAME_S = 0.05


def level_envelope(y: np.ndarray, rate: int, *, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS level (dBFS) of ``y`` in consecutive frames of ``frame_s`` seconds."""
    n = int(round(frame_s * rate))
    frames = y[: len(y) // n * n].reshape(-1, n).astype(np.float64)
    return 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-20)


def envelope_period(env: np.ndarray, frame_s: float = FRAME_S, *, min_s: float = 0.5,
                    max_s: float = 5.0) -> float:
    """The lag (s) of the highest autocorrelation peak of ``env`` in min_s..max_s."""
    e = env - env.mean()
    ac = np.correlate(e, e, mode="full")[len(e) - 1:]
    lo, hi = int(min_s / frame_s), min(int(max_s / frame_s), len(ac) - 1)
    k = lo + int(np.argmax(ac[lo:hi + 1]))
    if 0 < k < len(ac) - 1:  # parabolic interpolation of the peak
        a, b, d = ac[k - 1], ac[k], ac[k + 1]
        den = a - 2 * b + d
        k = k + (0.5 * (a - d) / den if den else 0.0)
    return float(k * frame_s)


def spectral_centroid(y: np.ndarray, rate: int, n_fft: int = 4096) -> float:
    """Centroid (Hz) of the mean power spectrum of ``y`` (Hann frames, hop n_fft/2)."""
    win = np.hanning(n_fft)
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[:: n_fft // 2]
    p = np.mean(np.abs(np.fft.rfft(frames * win, axis=1)) ** 2, axis=0)
    f = np.fft.rfftfreq(n_fft, 1.0 / rate)
    return float(np.sum(f * p) / np.sum(p))


def _dbfs(y: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(y ** 2)))


def _render(bundle, seconds: float, controls: list) -> np.ndarray:
    engine = Engine(bundle, mode="generate")
    try:
        rate = bundle.frame.sample_rate
        return render(engine, np.zeros(0, np.float32), controls,
                      n_samples=int(seconds * rate))
    finally:
        engine.close()


def measure(path: str, seconds: float = 10.0) -> dict:
    bundle = read_bundle(path)
    rate = bundle.frame.sample_rate
    skip = int(SETTLE_S / FRAME_S)
    units = []
    for u in range(bundle.units):
        cmds = [TimedCommand(0.0, c.SetLfoRate(u, LFO_HZ)),
                TimedCommand(0.0, c.SetLfoDepth(u, 1.0))]
        y = _render(bundle, seconds + SETTLE_S, cmds)
        env = level_envelope(y, rate)[skip:]
        units.append({"unit": u, "swing_db": float(np.percentile(env, 95) - np.percentile(env, 5)),
                      "min_dbfs": float(env.min()), "max_dbfs": float(env.max()),
                      "envelope_period_s": envelope_period(env)})
    best = max(units, key=lambda r: r["swing_db"])
    still = level_envelope(_render(bundle, seconds + SETTLE_S, []), rate)[skip:]
    drone = _render(bundle, 4.0, [])
    octave = _render(bundle, 4.0, [TimedCommand(0.0, c.NoteOn(72))])
    c0 = spectral_centroid(drone[int(SETTLE_S * rate):], rate)
    c1 = spectral_centroid(octave[int(SETTLE_S * rate):], rate)
    return {
        "bundle": path, "units": bundle.units, "seconds": seconds,
        "lfo": {"rate_hz": LFO_HZ, "depth": 1.0, "shape": "sine",
                "best_unit": best["unit"], "swing_db": best["swing_db"],
                "envelope_period_s": best["envelope_period_s"],
                "units_swing_ge_3db": sum(r["swing_db"] >= 3.0 for r in units),
                "still_swing_db": float(np.percentile(still, 95) - np.percentile(still, 5)),
                "per_unit": units},
        "pitch": {"reference": 60, "note": 72, "centroid_drone_hz": c0,
                  "centroid_note_hz": c1, "centroid_ratio": c1 / c0,
                  "level_drone_dbfs": _dbfs(drone[int(SETTLE_S * rate):]),
                  "level_note_dbfs": _dbfs(octave[int(SETTLE_S * rate):])},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bundles", nargs="+", help="model bundles (directories or .zip)")
    p.add_argument("--seconds", type=float, default=10.0, help="LFO envelope length (s)")
    args = p.parse_args(argv)
    results = [measure(b, args.seconds) for b in args.bundles]
    json.dump(results, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
