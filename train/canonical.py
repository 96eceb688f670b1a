"""Canonical units: sign, order and a short label for each hidden unit, at export.

An autoencoder's units come out of training in no particular order, and a
unit may be *inhibitory* (raising it makes the sound quieter; the paper's
section 3.4 complaint).  Neither changes what the model can reconstruct, so
export rewrites the weights into a canonical form without changing a single
reconstruction:

1. **Measure** each unit's effect through the decoder: all units at their mean
   activation on the training frames, the one unit swept from its min to its
   max activation (``SWEEP_POINTS`` points); the decoded spectra (linear
   magnitudes) are summed into 1/3-octave band powers.  The effect is the
   change of the band levels (dB) from min to max; the level change is that
   of the total power (dB); the effect size is the RMS of the band changes.
2. **Flip** an inhibitory unit (level change < 0) where the bottleneck
   activation allows an exact rewrite of the innermost layer:

   * sigmoid: sigmoid(-z) = 1 - sigmoid(z), so negate the unit's encoder
     kernel column and bias; in the decoder's first layer W' = -W (the unit's
     row) and b' = b + W (the row added to the bias);
   * tanh, linear: odd functions, so negate the column, bias and row;
   * relu, elu, softplus, ...: no exact rewrite; the unit stays inhibitory
     and the record says so.

   A tied decoder (kernel = encoder kernel transposed) follows the encoder's
   column by itself; only its bias is rewritten.
3. **Order** the units by effect size, the strongest first (fader 1): a
   permutation of the encoder's last kernel columns and bias and of the
   decoder's first kernel rows.
4. **Label** each unit from its part as the fader plays it, from its min to its
   mean activation (:func:`label`): ``sub`` ``low`` ``body``
   ``mid`` ``pres`` ``air`` for the frequency region its effect stands out
   in, ``level`` for a broad change one way, ``noise`` for a broad change
   both ways, ``weak`` for one that barely changes anything; a digit makes
   repeated names unique (``low``, ``low2``), at most 5 characters (the unit
   table's column, ``device.models.bundle.LABEL_MAX_CHARS``).

The rewritten model's reconstruction is checked against the original on
training frames (:data:`RECONSTRUCTION_ATOL`), and unit statistics are taken
afterwards, so the bundle's ``unit_stats`` describe the canonical units.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from device.models.bundle import LABEL_MAX_CHARS
from device.errors import ExportError
from train.fit import PREDICT_BATCH, Run
from train.models import build

log = logging.getLogger(__name__)

SWEEP_POINTS = 9
CHECK_FRAMES = 500
RECONSTRUCTION_ATOL = 1e-4  # of the decoder's output scale (max |y|, at least 1)
BAND_LOW_HZ = 40.0  # below this the 1/3-octave bands hold no bin at n_fft 2048
FLOOR_DB = -80.0  # band powers are floored this far below the base spectrum's total
INHIBITORY_DB = 0.0  # a unit whose level change is below this is inhibitory
WEAK_DB = 0.5  # effect size (RMS band change) below which a unit is "weak"
STANDOUT_DB = 1.5  # a region names a unit when its mean change exceeds the all-band
STANDOUT_FRACTION = 0.3  # mean by more than this (dB) and this fraction of that mean
FLAT_SAME_SIGN = 0.8  # fraction of bands moving the unit's way for a "level"
# Upper edges (Hz) of the named regions; "air" is everything above the last.
REGIONS = (("sub", 60.0), ("low", 250.0), ("body", 800.0), ("mid", 2500.0),
           ("pres", 6000.0))
SHORT = {"noise": "nse", "level": "lvl"}  # names too long to take a digit
# Bottleneck activations with an exact sign flip: "affine" h' = 1 - h, "odd" h' = -h.
FLIPS = {"sigmoid": "affine", "tanh": "odd", "linear": "odd", None: "odd"}


# -- measuring ------------------------------------------------------------------------------
def third_octave_bands(n_bins: int, sample_rate: int,
                       low_hz: float = BAND_LOW_HZ) -> tuple[list[tuple[int, int]], np.ndarray]:
    """1/3-octave bands over the rfft bins: ([(start, stop) bin slices], centres Hz).

    Nominal centres 1000 · 2^(k/3) Hz with edges 2^(±1/6) about them, from
    ``low_hz`` to Nyquist; a band holding no bin is merged into the next, the
    bins below the first band (DC up) into the first.
    """
    n_fft = 2 * (n_bins - 1)
    hz = np.arange(n_bins) * sample_rate / n_fft
    nyquist = sample_rate / 2
    k = np.arange(np.floor(3 * np.log2(low_hz / 1000)), np.ceil(3 * np.log2(nyquist / 1000)) + 1)
    edges = 1000 * 2 ** ((k + 0.5) / 3)
    edges = edges[(edges > low_hz) & (edges < nyquist)]
    cuts = np.searchsorted(hz, edges)
    bands, start = [], 0
    for cut in list(cuts) + [n_bins]:
        if cut > start:
            bands.append((start, int(cut)))
            start = int(cut)
    centres = np.array([np.sqrt(max(hz[a], hz[1] / 2) * hz[b - 1]) if b - 1 > a
                        else max(hz[a], hz[1] / 2) for a, b in bands])
    return bands, centres


def band_db(mags: np.ndarray, bands: list[tuple[int, int]], floor: float) -> np.ndarray:
    """Band levels (dB) of linear magnitudes (frames, bins) -> (frames, bands)."""
    p = np.stack([np.sum(mags[:, a:b] ** 2, axis=1) for a, b in bands], axis=1)
    return 10 * np.log10(np.maximum(p, floor))


def decode_mags(run: Run, units: np.ndarray) -> np.ndarray:
    """Linear magnitudes (frames, bins) the run's decoder makes of ``units`` (frames, units)."""
    y = run.decoder.predict(np.asarray(units, np.float32), batch_size=PREDICT_BATCH, verbose=0)
    return run.normaliser.inverse(np.asarray(y, np.float64))


@dataclasses.dataclass
class Effects:
    """What each unit does, measured through the decoder (one row per unit)."""

    band_db: np.ndarray   # (units, bands): band level at max minus at min, dB
    level_db: np.ndarray  # (units,): total power at max over at min, dB
    size_db: np.ndarray   # (units,): RMS over bands of band_db
    monotonic: np.ndarray  # (units,) bool: the total level moves one way along the sweep
    centres_hz: np.ndarray  # (bands,)


def measure(run: Run, lo: np.ndarray, mean: np.ndarray, hi: np.ndarray, *,
            sample_rate: int, points: int = SWEEP_POINTS) -> Effects:
    """Sweep each unit from ``lo`` to ``hi`` (activations), the others at ``mean``."""
    units = len(mean)
    t = np.linspace(0.0, 1.0, points)
    u = np.tile(mean, (units * points, 1))
    for j in range(units):
        u[j * points:(j + 1) * points, j] = lo[j] + t * (hi[j] - lo[j])
    mags = decode_mags(run, np.vstack([mean[None], u]))
    bands, centres = third_octave_bands(mags.shape[1], sample_rate)
    base_total = float(np.sum(mags[0] ** 2))
    floor = max(base_total, 1e-30) * 10 ** (FLOOR_DB / 10)
    db = band_db(mags[1:], bands, floor).reshape(units, points, len(bands))
    total = 10 * np.log10(np.maximum(np.sum(mags[1:] ** 2, axis=1), floor))
    total = total.reshape(units, points)
    change = db[:, -1] - db[:, 0]
    steps = np.diff(total, axis=1)
    tol = 0.05  # dB: float noise and rounding in a flat stretch are not a reversal
    monotonic = np.all(steps >= -tol, axis=1) | np.all(steps <= tol, axis=1)
    return Effects(band_db=change, level_db=total[:, -1] - total[:, 0],
                   size_db=np.sqrt(np.mean(change ** 2, axis=1)), monotonic=monotonic,
                   centres_hz=centres)


# -- labelling ------------------------------------------------------------------------------
def region(hz: float) -> str:
    for name, top in REGIONS:
        if hz < top:
            return name
    return "air"


def label(band_change: np.ndarray, centres_hz: np.ndarray, level_db: float) -> str:
    """A name for one unit's part from its band level changes (dB, one per band).

    The change is taken in the unit's own direction (what raising it adds, or
    for an inhibitory unit what raising it takes away).  ``weak``: RMS change
    under WEAK_DB.  Otherwise each named region (REGIONS, then ``air``) gets
    the mean change of its bands; the region standing out most above the
    mean over all bands names the unit, unless none stands out by more than
    STANDOUT_DB or STANDOUT_FRACTION of that mean: then the unit is a
    ``level`` when at least FLAT_SAME_SIGN of the bands move its way, else
    ``noise`` (a broad change of texture, not of loudness or region).
    """
    d = np.asarray(band_change, np.float64)
    if np.sqrt(np.mean(d ** 2)) < WEAK_DB:
        return "weak"
    w = d if level_db >= 0 else -d
    mean = float(w.mean())
    names = [region(float(hz)) for hz in centres_hz]
    scores = {n: float(w[[k for k, m in enumerate(names) if m == n]].mean())
              for n in dict.fromkeys(names)}
    best = max(scores, key=scores.get)
    if scores[best] - mean > max(STANDOUT_DB, STANDOUT_FRACTION * abs(mean)):
        return best
    return "level" if np.mean(w > 0) >= FLAT_SAME_SIGN else "noise"


def unique_labels(names: list[str]) -> list[str]:
    """The first of a name keeps it; later ones get 2, 3, ... (shortened to fit 5 chars)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        n = seen.get(name, 0) + 1
        seen[name] = n
        if n == 1:
            out.append(name[:LABEL_MAX_CHARS])
        else:
            stem = SHORT.get(name, name)
            out.append(stem[:LABEL_MAX_CHARS - len(str(n))] + str(n))
    if len(set(out)) != len(out):  # "lvl2" from "level" and a name "lvl2": cannot happen now
        raise ExportError(f"unit labels must be unique, got {out}")
    return out


# -- rewriting the weights ------------------------------------------------------------------
def _layers(run: Run):
    """(encoder's innermost Dense, decoder's first layer) or a reason they can't be used."""
    n = len(run.recipe["hidden"])
    try:
        enc = run.encoder.get_layer(f"enc{n}")
    except ValueError as e:
        return None, f"layer enc{n} not found: {e}"
    # the decoder's first layer, whatever its name (mirrored "dec{n}", or "dec_h1"/
    # "dec_out" of a decoder with its own sizes)
    firsts = [layer for layer in run.decoder.layers if layer.weights]
    if not firsts:
        return None, "the decoder has no layer with weights"
    dec = firsts[0]
    kernel = getattr(enc, "kernel", None)
    if kernel is None or tuple(kernel.shape)[-1] != run.units or getattr(enc, "bias",
                                                                         None) is None:
        return None, f"enc{n} is not a dense layer with a bias and {run.units} units"
    if getattr(dec, "bias", None) is None:
        return None, f"{dec.name} has no bias"
    if not run.recipe.get("tied"):
        k = getattr(dec, "kernel", None)
        if k is None or tuple(k.shape)[0] != run.units:
            return None, f"{dec.name} is not a dense layer taking {run.units} units"
    return (enc, dec), ""


def _copy(run: Run) -> Run:
    auto, enc, dec = build(run.recipe, run.n_bins)
    auto.set_weights(run.autoencoder.get_weights())
    return dataclasses.replace(run, autoencoder=auto, encoder=enc, decoder=dec)


def rewrite(run: Run, flips: np.ndarray, order: np.ndarray, kind: str | None) -> Run:
    """A copy of ``run`` with units ``flips`` (bool, units) sign-flipped the ``kind`` way
    ("affine" or "odd") and then put in ``order`` (new position -> old unit)."""
    out = _copy(run)
    (enc, dec), why = _layers(out)
    if why:
        raise ExportError(f"cannot rewrite the units: {why}")
    e_kernel = np.array(enc.kernel.numpy(), np.float64)  # (inputs, units)
    e_bias = np.array(enc.bias.numpy(), np.float64)
    d_bias = np.array(dec.bias.numpy(), np.float64)
    tied = bool(run.recipe.get("tied"))
    d_kernel = e_kernel.T.copy() if tied else np.array(dec.kernel.numpy(), np.float64)
    sign = np.where(flips, -1.0, 1.0)
    if kind == "affine" and flips.any():
        d_bias = d_bias + d_kernel[flips].sum(axis=0)  # h = 1 - h': W h = W·1 - W h'
    e_kernel = (e_kernel * sign)[:, order]
    e_bias = (e_bias * sign)[order]
    d_kernel = (d_kernel * sign[:, None])[order]
    enc.kernel.assign(e_kernel.astype(np.float32))
    enc.bias.assign(e_bias.astype(np.float32))
    dec.bias.assign(d_bias.astype(np.float32))
    if not tied:
        dec.kernel.assign(d_kernel.astype(np.float32))
    return out


def _max_change(a: Run, b: Run, mags: np.ndarray) -> tuple[float, float]:
    """(max |difference|, max |output|) of the two runs' autoencoder outputs (features)."""
    x = a.features(mags)
    ya = a.autoencoder.predict(x, batch_size=PREDICT_BATCH, verbose=0)
    yb = b.autoencoder.predict(x, batch_size=PREDICT_BATCH, verbose=0)
    return float(np.max(np.abs(ya - yb))), float(np.max(np.abs(ya)))


def canonicalize(run: Run, train_mags: np.ndarray, *, sample_rate: int
                 ) -> tuple[Run, list[str], dict[str, Any]]:
    """(canonical run, unit labels, record for the manifest's ``training.canonical``).

    ``train_mags``: linear magnitudes (frames, bins) of training frames, for
    the activation statistics and the reconstruction check.  Raises
    ExportError when the rewritten model reconstructs differently (more than
    RECONSTRUCTION_ATOL of the output scale) — that would be a bug here.
    When the architecture has no layers this module understands, the units
    keep their order and signs and only get labels (the record says why).
    """
    a = run.encode(train_mags).astype(np.float64)
    lo, mean, hi = a.min(axis=0), a.mean(axis=0), a.max(axis=0)
    eff = measure(run, lo, mean, hi, sample_rate=sample_rate)
    bottleneck = run.recipe.get("bottleneck")
    kind = FLIPS.get(bottleneck)  # None: no exact flip for this activation
    if run.recipe.get("monotone"):
        kind = None  # a flip would make a non-negative decoder kernel negative
    inhibitory = eff.level_db < INHIBITORY_DB
    _, why = _layers(run)
    record: dict[str, Any] = {
        "method": (f"each unit swept min->max of its training activations ({SWEEP_POINTS} "
                   f"points), the others at their mean; effect = change of 1/3-octave band "
                   f"levels (dB), level = change of total power (dB), size = RMS over bands; "
                   f"labels from the min->mean sweep (the fader's range)"),
        "bottleneck": bottleneck, "applied": not why, "reason": why,
        "indices": "flipped, inhibitory_kept and order name units as trained; effect_db, "
                   "level_db, monotonic and labels are in the canonical order",
        "measured_level_db": [round(float(v), 3) for v in eff.level_db],
    }
    if why:
        flips = np.zeros(run.units, bool)
        order = np.arange(run.units)
    else:
        flips = inhibitory & (kind is not None)
        order = np.argsort(-eff.size_db, kind="stable")
    sign = np.where(flips, -1.0, 1.0)
    level = (eff.level_db * sign)[order]
    size = eff.size_db[order]
    monotonic = eff.monotonic[order]
    # The label names what the fader does: at the knob's default it plays a unit from its
    # minimum to its mean (device/sound/engine.py unit_values), and a part can change
    # above the mean (the 2026-11-30 default's eighth unit: one band at 1.2 kHz up to its
    # mean, the air bands only near its maximum; labelled "air2" from min->max, "mid2" now).
    fader = measure(run, lo, mean, mean, sample_rate=sample_rate)
    fader_band = (fader.band_db * sign[:, None])[order]
    fader_level = (fader.level_db * sign)[order]
    labels = unique_labels([label(fader_band[i], eff.centres_hz, fader_level[i])
                            for i in range(run.units)])
    out = run
    if not why:
        out = rewrite(run, flips, order, kind)
        check = train_mags[np.linspace(0, len(train_mags) - 1,
                                       min(CHECK_FRAMES, len(train_mags))).astype(int)]
        change, scale = _max_change(run, out, check)
        record["max_abs_change"] = change
        if change > RECONSTRUCTION_ATOL * max(1.0, scale):
            raise ExportError(f"canonical units changed the reconstruction by {change:.3g} "
                              f"(limit {RECONSTRUCTION_ATOL:g} x {max(1.0, scale):.3g})")
    record.update({
        "flipped": [int(j) for j in np.flatnonzero(flips)],
        "inhibitory_kept": [int(j) for j in np.flatnonzero(inhibitory & ~flips)],
        "order": [int(j) for j in order],
        "effect_db": [round(float(v), 3) for v in size],
        "level_db": [round(float(v), 3) for v in level],
        "monotonic": [bool(v) for v in monotonic],
        "labels": labels,
        "band_hz": [round(float(v), 1) for v in eff.centres_hz],
    })
    log.info("canonical units: flipped %s, kept inhibitory %s, order %s, labels %s",
             record["flipped"], record["inhibitory_kept"], record["order"], labels)
    return out, labels, record
