"""How generate mode lives and how loud every mode plays, through the real engine (JSON).

For each bundle given (default: models/default and models/wide16), run as
checks, each a function ``check_NAME(ctx) -> dict`` listed in :data:`CHECKS`
(add LFO, transposition, ... checks the same way):

* ``held``: generate mode, no input, faders still, at default controls and
  at ``--settings`` seeded random fader settings (gains uniform in 0..1,
  knobs at 1): the normalised autocorrelation of the output at lag n_fft
  (target <= 0.3; real music scores -0.2..0.35), the output level (dBFS
  RMS), the level its decoded spectrum implies (reference level + the
  spectrum's power relative to the default spectrum's, computed from the
  decoder alone: Parseval through WOLA) and the difference (target within
  1 dB), and the default-controls level (target >= -20 dBFS).
* ``faders``: each unit's fader at 0, 0.25, 0.5, 0.75, 1 (the others at their
  defaults), generate mode: is the decoded spectrum's power monotonic in the
  fader, is the output level, and does the output rise wherever the spectrum
  does (target: every fader whose spectrum is monotonic; a step counts as
  flat within 0.3 dB).
* ``modes``: real unseen music (hyperrogue-music), each mode at default
  controls on the same segment: the level of each (dBFS RMS, from 4 s on:
  the make-ups settled) and the largest difference between two modes (what
  Rew/FF changes; target <= 1 dB).
* ``extremes``: music normalised to a 0 dBFS peak, every mode, control
  extremes (every knob up; every fader down but one, its knob up, for each
  unit; every fader and knob up but one muted): the largest output sample
  (target <= 1.0, never beyond full scale) and the limiter's largest gain
  reduction.

    .venv/bin/python bench/generate_bench.py [--seconds 12] [--settings 3] [--seed 0]
        [--json FILE] [BUNDLE ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.report import emit  # noqa: E402
from device.state import commands as c  # noqa: E402
from device.models.bundle import read_bundle  # noqa: E402
from device.sound.engine import Engine, prepare_model  # noqa: E402
from device.sound.level import REFERENCE_DBFS  # noqa: E402

DEFAULT_BUNDLES = ["models/default", "models/wide16"]
UNSEEN = Path("/usr/share/hyperrogue/music")
TRACKS = ("hr3-caves", "hr3-icyland", "hr-savino-ocean", "hr3-rlyeh")
FLAT_DB = 0.3


class Context:
    """What every check gets: the bundle, its path, the options, a random generator."""

    def __init__(self, path: str, args: argparse.Namespace):
        self.path = path
        self.bundle = read_bundle(path)
        self.args = args
        self.rate = self.bundle.frame.sample_rate
        self.rng = np.random.default_rng(args.seed)
        self._model = prepare_model(self.bundle)

    def engine(self, mode: str, commands=()) -> Engine:
        e = Engine(self.bundle, mode=mode)
        for cmd in commands:
            e.apply(cmd)
        return e

    def decoded_power(self, adjusted: np.ndarray) -> float:
        """Mean square per sample the decoded spectrum of ``adjusted`` implies."""
        m = self._model
        units, mag = np.zeros(m.units), np.zeros(self.bundle.n_bins)
        m.unit_values(adjusted, units)
        m.decode(units, mag)
        frame = self.bundle.frame
        two_sided = 2 * np.sum(mag ** 2) - mag[0] ** 2 - mag[-1] ** 2
        return float(two_sided / (frame.n_fft * np.sum(frame.analysis_window ** 2)))


def run(engine: Engine, x: np.ndarray, *, track_gr: bool = False) -> tuple[np.ndarray, float]:
    """Output of ``engine`` over ``x`` and the largest per-hop gain reduction (dB)."""
    R = engine.hop_length
    hops = len(x) // R
    y = np.zeros(hops * R)
    out = np.zeros(R)
    gr = 0.0
    for h in range(hops):
        engine.process(x[h * R:(h + 1) * R], out)
        y[h * R:(h + 1) * R] = out
        gr = max(gr, engine.limiter.hop_reduction_db)
    return y, gr


def level_db(y: np.ndarray) -> float:
    return round(float(10 * np.log10(max(np.mean(y ** 2), 1e-20))), 2)


def autocorrelation(y: np.ndarray, lag: int) -> float:
    a, b = y[:-lag] - y[:-lag].mean(), y[lag:] - y[lag:].mean()
    return round(float(a @ b / np.sqrt((a @ a) * (b @ b))), 3)


def gains_commands(gains: np.ndarray) -> list:
    return [c.SetGain(u, float(g)) for u, g in enumerate(gains)]


def check_held(ctx: Context) -> dict:
    units, rate = ctx.bundle.units, ctx.rate
    settings = [("default", np.ones(units))] + [
        (f"random{i}", ctx.rng.uniform(0.0, 1.0, units)) for i in range(ctx.args.settings)]
    p0 = ctx.decoded_power(np.ones(units))
    rows = []
    silence = np.zeros(4 * rate)
    for name, gains in settings:
        engine = ctx.engine("generate", gains_commands(gains))
        y, gr = run(engine, silence)
        y = y[rate:]  # from 1 s: the level keeper listened, the spectrum is held
        want = REFERENCE_DBFS + 10 * np.log10(ctx.decoded_power(gains) / p0)
        got = level_db(y)
        rows.append({"setting": name, "gains": [round(float(g), 3) for g in gains],
                     "autocorrelation_at_n_fft": autocorrelation(y, ctx.bundle.frame.n_fft),
                     "level_dbfs": got, "spectrum_level_dbfs": round(want, 2),
                     "level_minus_spectrum_db": round(got - want, 2),
                     "keeper_gain_db": {  # the level keepers' corrections: partials, noise
                         "tonal": round(20 * np.log10(engine._now.keeper.gain), 2),
                         "noise": round(20 * np.log10(engine._now.keeper_noise.gain), 2)},
                     "stillness": round(float(engine._now.phase.stillness), 3),
                     "limiter_max_gr_db": round(gr, 2)})
    return {"settings": rows,
            "max_abs_autocorrelation": max(abs(r["autocorrelation_at_n_fft"]) for r in rows),
            "max_abs_level_error_db": max(abs(r["level_minus_spectrum_db"]) for r in rows),
            "default_level_dbfs": rows[0]["level_dbfs"],
            "targets": {"max_abs_autocorrelation": 0.3, "max_abs_level_error_db": 1.0,
                        "default_level_dbfs_at_least": -20.0}}


def check_faders(ctx: Context) -> dict:
    units, rate = ctx.bundle.units, ctx.rate
    positions = (0.0, 0.25, 0.5, 0.75, 1.0)
    silence = np.zeros(int(1.5 * rate))
    rows = []
    for u in range(units):
        spectrum, output = [], []
        for g in positions:
            adjusted = np.ones(units)
            adjusted[u] = g
            spectrum.append(10 * np.log10(ctx.decoded_power(adjusted)))
            y, _ = run(ctx.engine("generate", [c.SetGain(u, g)]), silence)
            output.append(level_db(y[rate // 2:]))
        ds, do = np.diff(spectrum), np.diff(output)
        rising = ds[-1] + ds[0] > 0 if len(ds) else True  # the direction of the whole sweep

        def monotonic(d, up=rising):
            return bool(np.all(d >= -FLAT_DB) if up else np.all(d <= FLAT_DB))

        rows.append({"unit": u, "spectrum_db": [round(s, 2) for s in spectrum],
                     "output_dbfs": output, "spectrum_monotonic": monotonic(ds),
                     "output_monotonic": monotonic(do),
                     "output_follows_steps": bool(np.all(np.abs(do - ds) <= 1.0))})
    spectral = [r for r in rows if r["spectrum_monotonic"]]
    return {"positions": positions, "units": rows,
            "spectrum_monotonic": len(spectral),
            "output_monotonic_where_spectrum_is": sum(r["output_monotonic"] for r in spectral),
            "output_monotonic": sum(r["output_monotonic"] for r in rows),
            "target": "output_monotonic_where_spectrum_is == spectrum_monotonic"}


def unseen_music(name: str, rate: int, seconds: float, start_s: float = 30.0) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    with sf.SoundFile(UNSEEN / f"{name}.ogg") as f:
        f.seek(int(start_s * f.samplerate))
        x = f.read(int(seconds * f.samplerate), dtype="float64", always_2d=True).mean(axis=1)
        sr = f.samplerate
    g = np.gcd(rate, sr)
    return resample_poly(x, rate // g, sr // g)


def check_modes(ctx: Context) -> dict:
    rate, rows = ctx.rate, []
    for name in TRACKS:
        x = unseen_music(name, rate, ctx.args.seconds)
        levels = {}
        for mode in ("original", "resynth", "generate"):
            y, _ = run(ctx.engine(mode), x)
            levels[mode] = level_db(y[4 * rate:])
        spread = max(levels.values()) - min(levels.values())
        rows.append({"track": f"hyperrogue/{name}.ogg", "levels_dbfs": levels,
                     "max_change_db": round(spread, 2)})
    return {"tracks": rows, "seconds": ctx.args.seconds,
            "max_change_db": max(r["max_change_db"] for r in rows), "target_db": 1.0}


def check_extremes(ctx: Context) -> dict:
    rate, units = ctx.rate, ctx.bundle.units
    x = unseen_music(TRACKS[0], rate, 2.0)
    x = x / np.max(np.abs(x))
    cases = {"every knob up": [c.SetScale(u, 2.0) for u in range(units)],
             "every knob up, unit 0 muted": [c.SetScale(u, 2.0) for u in range(units)]
             + [c.SetMute(0, True)]}
    for u in range(units):
        cases[f"only unit {u}, knob up"] = [c.SetGain(v, 0.0) for v in range(units) if v != u] \
            + [c.SetScale(u, 2.0)]
    rows = []
    for mode in ("original", "resynth", "generate"):
        for name, commands in cases.items():
            y, gr = run(ctx.engine(mode, commands), x)
            rows.append({"mode": mode, "case": name, "peak": round(float(np.max(np.abs(y))), 4),
                         "max_gr_db": round(gr, 2)})
    return {"cases": rows, "max_peak": max(r["peak"] for r in rows),
            "max_gr_db": max(r["max_gr_db"] for r in rows), "target_peak_at_most": 1.0}


def check_motion(ctx: Context) -> dict:
    """An LFO at 0.5 Hz on each unit (10 s level envelope swing, target >= 3 dB on one
    unit) and a +12 note (centroid ratio, target 1.8..2.2): bench/motion_bench.py."""
    try:
        from bench.motion_bench import measure
    except ImportError:  # run as a script from bench/
        from motion_bench import measure
    return measure(ctx.path)


CHECKS = {"held": check_held, "faders": check_faders, "modes": check_modes,
          "extremes": check_extremes, "motion": check_motion}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="*", help="bundle paths (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=12.0, help="music per track (modes)")
    ap.add_argument("--settings", type=int, default=3, help="random fader settings (held)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checks", default=",".join(CHECKS), help="comma-separated subset")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    paths = args.bundles or [p for p in DEFAULT_BUNDLES if (ROOT / p).exists()]
    result = {"bench": "generate", "machine": platform.machine(),
              "python": platform.python_version(), "seed": args.seed, "bundles": {}}
    for path in paths:
        full = path if os.path.isabs(path) else str(ROOT / path)
        ctx = Context(full, args)
        out = {}
        for name in args.checks.split(","):
            t0 = time.process_time()
            out[name] = CHECKS[name](ctx)
            out[name]["cpu_s"] = round(time.process_time() - t0, 1)
            print(f"{path} {name}: done in {out[name]['cpu_s']} s", file=sys.stderr)
        result["bundles"][path] = out
    return emit(result, args.json)


if __name__ == "__main__":
    sys.exit(main())
