"""How a model plays: per-unit sweeps through the real engine, offline.

Every measurement renders audio with :class:`device.sound.engine.Engine` driven hop
by hop (:func:`device.sound.render.render`), exactly as the instrument plays it:
generate mode (the decoder alone, invented phase) and resynth mode on real
music.  Controls are set before the first hop; the first ``settle_s``
seconds (the level keeper's listening time and the STFT's warm-up) are left
out of every level and spectrum.

For each unit, with every other unit at its default (gain 1, scale 1):

* its fader (gain) at 0, 0.5 and 1, and its knob (scale) at 0 and 2;
* **level** (dBFS RMS of the output) at each setting; the change from gain 0
  to 1; **monotonic** when the three levels do not turn back by more than
  :data:`MONOTONIC_TOL_DB`; **inhibitory** when gain 1 is quieter than gain 0;
* **spectral change**: the log-spectral distance (dB, RMS over bands) between
  gain 0 and gain 1 of the long-term spectrum in 1/3-octave bands (Welch,
  8192-point Hann frames: steady, unlike per-bin LSD, see shared/harness.md;
  a band more than 60 dB under the signal's total counts as 60 dB under);
* its **part**: that long-term band-spectrum change (dB per band, gain 1
  minus gain 0), averaged over the clips;
* the **centroid** shift (Hz) of the long-term spectrum from gain 0 to 1.

Across units: the Pearson correlation of the parts, and the **participation
ratio** ("distinct controls") of the Gram matrix of the parts normalised to
unit length, ``(sum lambda)^2 / sum lambda^2``: 1 when every unit does the
same thing, the number of units when all are orthogonal.

Worst-case **peak** (|sample|, full scale = 1) at the control extremes: each
unit's knob at 0 and at 2, and every knob at 2.  It is read before any output
limiter when the engine can leave its limiter out (an ``Engine(...,
limiter=False)`` keyword), else from the output, and the report says which.
When it is read before the limiter, the same signal is also passed through the
engine's own output limiter (:func:`limited`, the last stage of every hop, issue
12): the **output peak** and the largest **gain reduction** (dB) at each extreme.
The resynth bar ("no control extreme exceeds full scale") is read on that output,
what the player hears, with the pre-limiter peak beside it: resynthesis keeps its
input's level (issue 12: the modes within 1 dB), and a mastered input that peaks
at 0.97 already resynthesises to 1.1-1.3 before the limiter at default controls.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.state import commands as c
from device.models.bundle import Bundle, read_bundle
from device.errors import EvaluationError
from device.sound.render import TimedCommand, render
from train.baselines import Clip

log = logging.getLogger(__name__)

SETTLE_S = 0.5  # level keeper listens 0.1 s, then follows over tau 0.25 s
WELCH_FFT = 8192  # 0.37 s at 22050 Hz: 2.7 Hz bins, two or more in the 25 Hz band
BAND_RANGE_DB = 60.0  # bands further below the signal's total power count as this far below
BAND_FLOOR = 1e-12  # absolute band power floor, for silence
MONOTONIC_TOL_DB = 0.05  # a level turning back by less is a flat step, not a reversal
AUDIBLE_DB = 2.0  # done-when: band LSD between gain 0 and 1 at least this
GAINS = (0.0, 0.5, 1.0)
SCALES = (0.0, 2.0)


# -- measuring one signal --------------------------------------------------------------
def third_octave_bands(sample_rate: int, *, lowest_hz: float = 25.0
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres, lower edges, upper edges) in Hz of the base-2 1/3-octave bands from
    ``lowest_hz`` whose upper edge is below Nyquist (25 Hz .. 8 kHz at 22050 Hz)."""
    k0 = round(3 * math.log2(lowest_hz / 1000.0))
    ks = np.arange(k0, k0 + 60)
    fc = 1000.0 * 2.0 ** (ks / 3.0)
    lo, hi = fc * 2.0 ** (-1 / 6), fc * 2.0 ** (1 / 6)
    keep = hi <= sample_rate / 2
    return fc[keep], lo[keep], hi[keep]


@dataclass(frozen=True)
class Measurement:
    """Long-term measures of one rendered signal.

    level_db: dBFS RMS; bands_db: 1/3-octave band powers (dB re full scale,
    floored :data:`BAND_RANGE_DB` below their sum); centroid_hz: of the Welch
    spectrum; peak: max |sample| over the whole signal; clipped: fraction of
    samples beyond full scale.
    """

    level_db: float
    bands_db: np.ndarray
    centroid_hz: float
    peak: float
    clipped: float


def measure(y: np.ndarray, sample_rate: int, *, settle_s: float = SETTLE_S) -> Measurement:
    """:class:`Measurement` of mono ``y`` (float, full scale 1) at ``sample_rate`` Hz;
    levels and spectra leave out the first ``settle_s`` seconds."""
    from scipy.signal import welch

    y = np.asarray(y, np.float64)
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    clipped = float(np.mean(np.abs(y) > 1.0)) if len(y) else 0.0
    s = y[int(settle_s * sample_rate):]
    if len(s) < WELCH_FFT:
        raise EvaluationError(f"a measured signal must last at least settle_s + "
                              f"{WELCH_FFT / sample_rate:.2f} s, got {len(y) / sample_rate:.2f} s")
    rms = float(np.sqrt(np.mean(s * s)))
    f, psd = welch(s, fs=sample_rate, window="hann", nperseg=WELCH_FFT)
    df = f[1] - f[0]
    _, lo, hi = third_octave_bands(sample_rate)
    power = np.array([psd[(f >= a) & (f < b)].sum() * df for a, b in zip(lo, hi, strict=True)])
    # A band 60 dB under the whole signal is masked; without a relative floor the
    # near-empty low bands of a static (bin-grid) spectrum swing by tens of dB and
    # decide every distance.
    floor = max(float(power.sum()) * 10.0 ** (-BAND_RANGE_DB / 10.0), BAND_FLOOR)
    bands_db = 10.0 * np.log10(np.maximum(power, floor))
    total = float(psd.sum())
    centroid = float((f * psd).sum() / total) if total > 0 else 0.0
    return Measurement(20.0 * math.log10(max(rms, 1e-10)), bands_db, centroid, peak, clipped)


def band_lsd_db(a: np.ndarray, b: np.ndarray) -> float:
    """Log-spectral distance (dB) of two band spectra in dB: RMS of their difference."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(np.sqrt(np.mean(d * d)))


def participation_ratio(rows: np.ndarray) -> float:
    """Distinct controls among effect rows (units x bands): rows normalised to unit
    length, eigenvalues lambda of their Gram matrix, ``(sum lambda)^2 / sum lambda^2``.
    1 when all rows are parallel, the number of rows when they are orthogonal;
    a row of zeros (a unit with no effect) counts for nothing."""
    r = np.asarray(rows, np.float64)
    norms = np.linalg.norm(r, axis=1, keepdims=True)
    r = np.divide(r, norms, out=np.zeros_like(r), where=norms > 0)
    lam = np.linalg.eigvalsh(r @ r.T)
    lam = np.clip(lam, 0.0, None)
    den = float(np.sum(lam * lam))
    return float(np.sum(lam) ** 2 / den) if den > 0 else 0.0


def correlation(rows: np.ndarray) -> np.ndarray:
    """Pearson correlation (units x units) of effect rows; 0 where a row is constant."""
    r = np.asarray(rows, np.float64)
    r = r - r.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(r, axis=1, keepdims=True)
    r = np.divide(r, norms, out=np.zeros_like(r), where=norms > 0)
    return r @ r.T


# -- driving the engine ----------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """A control setting: ``unit``'s gain and scale (None: every unit's), the rest
    at gain 1, scale 1."""

    label: str
    unit: int | None
    gain: float = 1.0
    scale: float = 1.0

    def commands(self, units: int) -> list[TimedCommand]:
        which = range(units) if self.unit is None else (self.unit,)
        out = []
        for u in which:
            if self.gain != 1.0:
                out.append(TimedCommand(0.0, c.SetGain(u, self.gain)))
            if self.scale != 1.0:
                out.append(TimedCommand(0.0, c.SetScale(u, self.scale)))
        return out


def settings(units: int) -> list[Setting]:
    """Default, each unit's gain sweep and knob extremes, and every knob at 2."""
    out = [Setting("default", None)]
    for u in range(units):
        out += [Setting(f"u{u} gain {g:g}", u, gain=g) for g in GAINS if g != 1.0]
        out += [Setting(f"u{u} scale {s:g}", u, scale=s) for s in SCALES]
    out.append(Setting("all scale 2", None, scale=2.0))
    return out


def engine_tap(bundle: Bundle, mode: str, phase: str) -> tuple[Any, str]:
    """An Engine in ``mode`` and what its output is: before the output limiter when
    the engine can leave it out (``limiter=False``), else the engine's output."""
    from device.sound.engine import Engine

    params = inspect.signature(Engine).parameters
    if "limiter" in params:
        return Engine(bundle, phase=phase, mode=mode, limiter=False), "pre-limiter"
    engine = Engine(bundle, phase=phase, mode=mode)
    source = "output (after a limiter)" if hasattr(engine, "limiter") else \
        "output (the engine has no limiter)"
    return engine, source


def limited(pre: np.ndarray, frame: Any) -> tuple[float, float]:
    """(peak, largest gain reduction in dB) of ``pre`` (samples, float) passed hop by
    hop through a fresh :class:`device.sound.level.Limiter` with the engine's default
    settings, the stage ``Engine(..., limiter=False)`` leaves out; the limiter's
    look-ahead tail is flushed with zeros."""
    from device.sound.level import Limiter

    lim = Limiter(frame)
    R = frame.hop_length
    n = len(pre) + lim.delay
    x = np.zeros(-(-n // R) * R)
    x[:len(pre)] = pre
    out = np.empty(R)
    peak = reduction = 0.0
    for i in range(0, len(x), R):
        lim.process(x[i:i + R], out)
        peak = max(peak, float(np.max(np.abs(out))))
        reduction = max(reduction, float(lim.hop_reduction_db))
    return peak, reduction


def render_setting(bundle: Bundle, mode: str, x: np.ndarray, setting: Setting, *,
                   phase: str = "rtpghi") -> tuple[np.ndarray, str]:
    """(output samples, tap) of a fresh engine over ``x`` (generate mode: its length of
    silence) with ``setting`` applied before the first hop."""
    engine, source = engine_tap(bundle, mode, phase)
    try:
        y = render(engine, x, setting.commands(bundle.units))
    finally:
        engine.close()
    return y, source


# -- the sweep -------------------------------------------------------------------------
def sweep_mode(bundle: Bundle, mode: str, signals: Sequence[tuple[str, np.ndarray]], *,
               phase: str = "rtpghi", settle_s: float = SETTLE_S) -> dict[str, Any]:
    """Every :func:`settings` on every signal in ``mode``; the per-unit and per-mode
    figures (see the module docstring) as a JSON-ready dict."""
    rate = bundle.frame.sample_rate
    n = bundle.units
    sets = settings(n)
    meas: dict[str, list[Measurement]] = {s.label: [] for s in sets}
    peaks: list[dict[str, Any]] = []
    tap = ""
    for name, x in signals:
        for s in sets:
            y, tap = render_setting(bundle, mode, x, s, phase=phase)
            m = measure(y, rate, settle_s=settle_s)
            meas[s.label].append(m)
            if s.label == "all scale 2" or "scale" in s.label:
                peaks.append({"setting": s.label, "clip": name, "peak": m.peak,
                              "clipped": m.clipped})
                if tap == "pre-limiter":
                    out_peak, reduction = limited(y, bundle.frame)
                    peaks[-1].update(output_peak=out_peak, gain_reduction_db=reduction)

    def mean_level(label: str) -> float:
        return float(np.mean([m.level_db for m in meas[label]]))

    units, rows = [], []
    for u in range(n):
        g0, gh, g1 = f"u{u} gain 0", f"u{u} gain 0.5", "default"
        levels = [mean_level(k) for k in (g0, gh, g1)]
        d1, d2 = levels[1] - levels[0], levels[2] - levels[1]
        monotonic = not ((d1 < -MONOTONIC_TOL_DB and d2 > MONOTONIC_TOL_DB)
                         or (d1 > MONOTONIC_TOL_DB and d2 < -MONOTONIC_TOL_DB))
        change = levels[2] - levels[0]
        part = np.mean([b.bands_db - a.bands_db for a, b in zip(meas[g0], meas[g1],
                                                                 strict=True)], axis=0)
        lsd = float(np.mean([band_lsd_db(a.bands_db, b.bands_db)
                             for a, b in zip(meas[g0], meas[g1], strict=True)]))
        cshift = float(np.mean([b.centroid_hz - a.centroid_hz
                                for a, b in zip(meas[g0], meas[g1], strict=True)]))
        rows.append(part)
        units.append({
            "unit": u, "level_db": dict(zip(("gain 0", "gain 0.5", "gain 1"), levels,
                                            strict=True)),
            "level_change_db": change, "louder_when_raised": change > 0,
            "inhibitory": change < -MONOTONIC_TOL_DB, "monotonic": monotonic,
            "band_lsd_db": lsd, "audible": lsd >= AUDIBLE_DB, "centroid_shift_hz": cshift,
            "knob_level_db": {"scale 0": mean_level(f"u{u} scale 0"),
                              "scale 2": mean_level(f"u{u} scale 2")},
            "knob_peak": {k: max(m.peak for m in meas[f"u{u} {k}"])
                          for k in ("scale 0", "scale 2")},
            "part_db": [float(v) for v in part]})
    rows = np.array(rows)
    worst = max(peaks, key=lambda p: p["peak"])
    over = sorted({p["setting"] for p in peaks if p["peak"] > 1.0})
    corr = correlation(rows)
    return {
        "mode": mode, "clips": [name for name, _ in signals], "peak_source": tap,
        "default": {"level_db": mean_level("default"),
                    "peak": max(m.peak for m in meas["default"]),
                    "bands_db": [float(v) for v in np.mean([m.bands_db for m in
                                                           meas["default"]], axis=0)],
                    "centroid_hz": float(np.mean([m.centroid_hz for m in meas["default"]]))},
        "units": units, "participation_ratio": participation_ratio(rows),
        "correlation": [[float(v) for v in r] for r in corr],
        "worst_peak": worst, "extremes_over_full_scale": over,
        # after the engine's limiter (None when the peaks were read at the output)
        "worst_output_peak": (max(peaks, key=lambda p: p["output_peak"])
                              if "output_peak" in worst else None),
        "worst_gain_reduction_db": (max(p["gain_reduction_db"] for p in peaks)
                                    if "output_peak" in worst else None),
        "all_scale_2": {"level_db": mean_level("all scale 2"),
                        "peak": max(m.peak for m in meas["all scale 2"])}}


def criteria(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """issue 11's done-when rules for playability, scaled to the unit count N:
    every unit audible (band LSD >= 2 dB, every mode measured), at least 7N/8 units
    louder in generate when raised, participation ratio >= 5N/8 (every mode), and no
    control extreme in resynth beyond full scale."""
    n = result["units"]
    modes = result["modes"]
    out: dict[str, dict[str, Any]] = {}
    audible = {m: sum(u["audible"] for u in r["units"]) for m, r in modes.items()}
    out["all units audible"] = {"value": audible, "need": f"{n} of {n} in every mode",
                                "pass": all(v == n for v in audible.values())}
    need_louder = math.ceil(7 * n / 8)
    if "generate" in modes:
        louder = sum(u["louder_when_raised"] for u in modes["generate"]["units"])
        out["generate louder when raised"] = {"value": louder, "need": f">= {need_louder}",
                                              "pass": louder >= need_louder}
    pr = {m: round(r["participation_ratio"], 2) for m, r in modes.items()}
    need_pr = 5 * n / 8
    out["distinct controls (PR)"] = {"value": pr, "need": f">= {need_pr:g} in every mode",
                                     "pass": all(v >= need_pr for v in pr.values())}
    if "resynth" in modes:
        r = modes["resynth"]
        w, o = r["worst_peak"], r.get("worst_output_peak")
        worst = f"{w['setting']} on {w['clip']}"
        peak = w["peak"] if o is None else o["output_peak"]  # None: read at the output
        if o is not None:
            worst = (f"before the limiter {w['peak']:.2f} ({worst}); at most "
                     f"{r['worst_gain_reduction_db']:.1f} dB of gain reduction")
        out["resynth extremes within full scale"] = {
            "value": round(peak, 3), "need": "<= 1.0" + ("" if o is None else " at the output"),
            "pass": peak <= 1.0, "worst": worst}
    return out


def playability(bundle_path: str | os.PathLike, audio: Sequence[Clip] = (), *,
                generate_seconds: float = 10.0, phase: str = "rtpghi",
                settle_s: float = SETTLE_S, threads: int = 1) -> dict[str, Any]:
    """Sweep ``bundle_path`` in generate mode (``generate_seconds`` of output) and, when
    ``audio`` is given, in resynth mode on each clip.  Returns the JSON document.

    ``threads`` 2: the two modes' sweeps run side by side (each on its own engines;
    the TFLite interpreter and numpy's FFT release the GIL, so two cores do about 1.5x
    the work of one); the figures are the same either way."""
    t0 = time.monotonic()
    bundle = read_bundle(bundle_path)
    rate = bundle.frame.sample_rate
    if not generate_seconds > settle_s + 1.0:
        raise EvaluationError(f"generate_seconds must be > settle_s + 1 = {settle_s + 1:g} s, "
                              f"got {generate_seconds}")
    res: dict[str, Any] = {"bundle": os.fspath(bundle_path), "name": bundle.name,
                           "units": bundle.units, "phase": phase, "settle_s": settle_s,
                           "generate_seconds": generate_seconds,
                           "audio": [a.to_dict() for a in audio],
                           "bands_hz": [float(f) for f in third_octave_bands(rate)[0]],
                           "modes": {}}
    jobs = {"generate": [("silence", np.zeros(int(generate_seconds * rate)))]}
    if audio:
        jobs["resynth"] = [(Path(a.path).name, a.load(rate)) for a in audio]
    if threads > 1 and len(jobs) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="sweep") as pool:
            futures = {m: pool.submit(sweep_mode, bundle, m, sig, phase=phase,
                                      settle_s=settle_s) for m, sig in jobs.items()}
            for m, f in futures.items():
                res["modes"][m] = f.result()
    else:
        for m, sig in jobs.items():
            res["modes"][m] = sweep_mode(bundle, m, sig, phase=phase, settle_s=settle_s)
    res["criteria"] = criteria(res)
    res["seconds"] = round(time.monotonic() - t0, 1)
    return res


# -- reports ---------------------------------------------------------------------------
def plot(res: dict[str, Any], path: Path) -> None:
    """One PNG: per unit its part (band-spectrum change, gain 0 -> 1, per mode) and its
    sweep curve (level re default vs fader x knob: 0, 0.5, 1, 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = res["units"]
    per_row = 4
    rows = -(-n // per_row)
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(18, 2.3 * rows + 0.8),
                             squeeze=False, constrained_layout=True)
    fc = np.array(res["bands_hz"])
    colours = {"generate": "tab:orange", "resynth": "tab:blue"}
    for u in range(rows * per_row):
        ax_p, ax_s = axes[u // per_row, 2 * (u % per_row)], axes[u // per_row,
                                                                2 * (u % per_row) + 1]
        if u >= n:
            ax_p.axis("off")
            ax_s.axis("off")
            continue
        for mode, r in res["modes"].items():
            info = r["units"][u]
            ax_p.semilogx(fc, info["part_db"], color=colours[mode], label=mode)
            ref = r["default"]["level_db"]
            lv = info["level_db"]
            xs = [0.0, 0.5, 1.0, 2.0]
            ys = [lv["gain 0"], lv["gain 0.5"], lv["gain 1"], info["knob_level_db"]["scale 2"]]
            ax_s.plot(xs, np.array(ys) - ref, "o-", color=colours[mode], ms=3)
            ax_s.plot([0.0], [info["knob_level_db"]["scale 0"] - ref], "x", color=colours[mode])
        ax_p.axhline(0, color="0.6", lw=0.5)
        ax_s.axhline(0, color="0.6", lw=0.5)
        flags = []
        for mode, r in res["modes"].items():
            i = r["units"][u]
            flags.append(f"{mode[:3]} {i['level_change_db']:+.1f} dB"
                         + (" INH" if i["inhibitory"] else "")
                         + ("" if i["monotonic"] else " NM"))
        ax_p.set_title(f"unit {u} part (dB/band)", fontsize=8)
        ax_s.set_title("; ".join(flags), fontsize=7)
        ax_p.tick_params(labelsize=6)
        ax_s.tick_params(labelsize=6)
        ax_s.set_xticks([0, 0.5, 1, 2])
        if u == 0:
            ax_p.legend(fontsize=6)
    pr = ", ".join(f"{m} {r['participation_ratio']:.2f}" for m, r in res["modes"].items())
    fig.suptitle(f"{res['name']}: each unit's part (1/3-octave long-term spectrum, gain 1 "
                 f"minus gain 0) and sweep (level dB re default vs gain x scale; x = scale 0)."
                 f"  Distinct controls (PR): {pr}", fontsize=9)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _yn(v: bool) -> str:
    return "yes" if v else "**no**"


def markdown(res: dict[str, Any], png: str | None = None) -> str:
    n = res["units"]
    L = [f"### `{res['name']}` ({n} units)", ""]
    if res["audio"]:
        L += [f"Resynth on {len(res['audio'])} clip(s); generate {res['generate_seconds']:g} s "
              f"of output, phase {res['phase']}; first {res['settle_s']:g} s of each render "
              f"left out.", ""]
    L += ["| criterion | value | need | pass |", "|---|---|---|---|"]
    for k, v in res["criteria"].items():
        val = v["value"] if not isinstance(v["value"], dict) else ", ".join(
            f"{m} {x}" for m, x in v["value"].items())
        L.append(f"| {k} | {val}{' (' + v['worst'] + ')' if 'worst' in v else ''} | "
                 f"{v['need']} | {'PASS' if v['pass'] else '**FAIL**'} |")
    L.append("")
    for mode, r in res["modes"].items():
        L += [f"**{mode}**: default level {r['default']['level_db']:.1f} dBFS, peak "
              f"{r['default']['peak']:.2f}; every knob at 2: {r['all_scale_2']['level_db']:.1f} "
              f"dBFS, peak {r['all_scale_2']['peak']:.2f}; distinct controls (PR) "
              f"{r['participation_ratio']:.2f} of {n}; worst peak at an extreme "
              f"{r['worst_peak']['peak']:.2f} ({r['worst_peak']['setting']}, "
              f"{r['worst_peak']['clip']}); peaks read at the {r['peak_source']}"
              + ("." if not r.get("worst_output_peak") else
                 f"; through the engine's limiter at most "
                 f"{r['worst_output_peak']['output_peak']:.2f} with at most "
                 f"{r['worst_gain_reduction_db']:.1f} dB of gain reduction."), "",
              "| unit | level 0→1 dB | louder | monotonic | band LSD dB | centroid shift Hz "
              "| knob 2 level re default dB | knob 2 peak |",
              "|---|---|---|---|---|---|---|---|"]
        ref = r["default"]["level_db"]
        for u in r["units"]:
            L.append(f"| {u['unit']} | {u['level_change_db']:+.2f} | "
                     f"{_yn(u['louder_when_raised'])} | {_yn(u['monotonic'])} | "
                     f"{u['band_lsd_db']:.2f} | {u['centroid_shift_hz']:+.0f} | "
                     f"{u['knob_level_db']['scale 2'] - ref:+.2f} | "
                     f"{u['knob_peak']['scale 2']:.2f} |")
        corr = np.array(r["correlation"])
        pairs = [(corr[i, j], i, j) for i in range(n) for j in range(i + 1, n)
                 if abs(corr[i, j]) >= 0.6]
        pairs.sort(key=lambda p: -abs(p[0]))
        shown = ", ".join(f"{i}/{j} {v:+.2f}" for v, i, j in pairs[:8]) or "none"
        L += ["", f"Unit pairs whose parts correlate (|r| >= 0.6): {shown}.", ""]
    if png:
        L += [f"![{res['name']}]({png})", ""]
    return "\n".join(L) + "\n"


def write_report(res: dict[str, Any], report_dir: Path) -> dict[str, Path]:
    """``playability.json``, ``<name>.png`` and ``playability.md`` under ``report_dir``."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": report_dir / "playability.json", "png": report_dir / f"{res['name']}.png",
             "markdown": report_dir / "playability.md"}
    paths["json"].write_text(json.dumps(res, indent=1) + "\n")
    plot(res, paths["png"])
    paths["markdown"].write_text(markdown(res, paths["png"].name))
    return paths
