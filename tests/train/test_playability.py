"""Playability: the measures on constructed signals and rows, and the sweep through
the real engine on a small bundle whose unit 3 is inhibitory by construction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device.models.bundle import UnitStats
from device.sound.features import LOW_LATENCY, Normaliser
from tests.music import track
from train import playability as P
from train.baselines import Clip

RATE = 22050


def test_participation_ratio_of_constructed_rows():
    rng = np.random.default_rng(0)
    row = rng.standard_normal(26)
    assert P.participation_ratio(np.tile(row, (8, 1))) == pytest.approx(1.0)
    # scaled copies (and a sign flip) are still one control
    assert P.participation_ratio(np.array([row, 3 * row, -row])) == pytest.approx(1.0)
    assert P.participation_ratio(np.eye(8, 26)) == pytest.approx(8.0)
    q, _ = np.linalg.qr(rng.standard_normal((26, 5)))
    assert P.participation_ratio(q.T) == pytest.approx(5.0)
    # two groups of four identical rows: two distinct controls
    two = np.array([row] * 4 + [np.roll(np.eye(1, 26)[0], 3)] * 4)
    two[4:] -= (two[4:] @ row / (row @ row))[:, None] * row  # orthogonal to the first group
    assert P.participation_ratio(two) == pytest.approx(2.0)
    # a unit with no effect adds nothing
    assert P.participation_ratio(np.vstack([np.eye(3, 26), np.zeros(26)])) == pytest.approx(3.0)


def test_correlation_of_mirrored_and_duplicate_rows():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(26), rng.standard_normal(26)
    r = P.correlation(np.array([a, 2 * a + 1, -a, b]))
    assert r[0, 1] == pytest.approx(1.0) and r[0, 2] == pytest.approx(-1.0)
    assert abs(r[0, 3]) < 0.6


def test_third_octave_bands_span_25_hz_to_8_khz():
    fc, lo, hi = P.third_octave_bands(RATE)
    assert fc[0] == pytest.approx(24.8, abs=0.1) and fc[-1] == pytest.approx(8000.0)
    assert np.all(hi <= RATE / 2) and np.allclose(hi / lo, 2 ** (1 / 3))
    assert len(fc) == 26


def test_measure_a_sine():
    t = np.arange(3 * RATE) / RATE
    y = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    m = P.measure(y, RATE)
    assert m.level_db == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    assert m.peak == pytest.approx(0.5, abs=1e-3) and m.clipped == 0.0
    assert m.centroid_hz == pytest.approx(1000.0, abs=5.0)
    fc, _, _ = P.third_octave_bands(RATE)
    assert fc[np.argmax(m.bands_db)] == pytest.approx(1000.0)
    # the band holding the sine has its power: 0.125 (a sine's mean square)
    assert np.max(m.bands_db) == pytest.approx(10 * np.log10(0.125), abs=0.1)
    # twice as loud: every band 6 dB up (the relative floor moves with it)
    m2 = P.measure(2.2 * y, RATE)
    assert P.band_lsd_db(m.bands_db, m2.bands_db) == pytest.approx(20 * np.log10(2.2), abs=0.01)
    # |1.1 sin| > 1 for a share 1 - (2/pi) asin(1/1.1) of the time
    assert m2.peak == pytest.approx(1.1, abs=1e-3)
    assert m2.clipped == pytest.approx(1 - 2 / np.pi * np.arcsin(1 / 1.1), abs=5e-3)


def test_measure_refuses_a_signal_shorter_than_the_settling_time():
    from device.errors import EvaluationError

    with pytest.raises(EvaluationError, match="must last at least settle_s"):
        P.measure(np.zeros(RATE // 2), RATE)


# -- through the engine, on a bundle with a known inhibitory unit ----------------------
UNITS = 4
INHIBITORY = 3
SCALE = 20.0  # the "max" normaliser: magnitude = feature x 20


def decoder_weights() -> tuple[np.ndarray, np.ndarray]:
    """(kernel units x bins, bias bins): a broad bias spectrum; units 0-2 each add a bump
    in its own band; unit 3 takes most of the bias away (up = quieter)."""
    n = LOW_LATENCY.n_bins
    k = np.arange(n)
    bias = np.where((k >= 5) & (k <= 700), 0.3, 0.0)
    kernel = np.zeros((UNITS, n))
    for u, centre in enumerate((20, 100, 600)):
        kernel[u] = 2.0 * np.exp(-0.5 * ((k - centre) / 15.0) ** 2)
    kernel[INHIBITORY] = -0.5 * (bias > 0)
    return kernel, bias


@pytest.fixture(scope="module")
def inhibitory_bundle(tmp_path_factory) -> Path:
    """Encoder: every unit 0.5 whatever the input (zero weights, sigmoid); decoder: linear,
    :func:`decoder_weights`.  Converted by TFLite, read by the device like any bundle."""
    import tensorflow as tf

    from train.bundle_writer import write_bundle

    n = LOW_LATENCY.n_bins
    enc = tf.keras.Sequential([tf.keras.Input((n,), batch_size=1),
                               tf.keras.layers.Dense(UNITS, activation="sigmoid")])
    enc.layers[0].set_weights([np.zeros((n, UNITS), np.float32), np.zeros(UNITS, np.float32)])
    dec = tf.keras.Sequential([tf.keras.Input((UNITS,), batch_size=1),
                               tf.keras.layers.Dense(n)])
    kernel, bias = decoder_weights()
    dec.layers[0].set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    blobs = [tf.lite.TFLiteConverter.from_keras_model(m).convert() for m in (enc, dec)]
    stats = UnitStats(min=np.zeros(UNITS), max=np.ones(UNITS), mean=np.full(UNITS, 0.5))
    return write_bundle(tmp_path_factory.mktemp("inh") / "inhibitory", encoder=blobs[0],
                        decoder=blobs[1], name="inhibitory", frame=LOW_LATENCY,
                        normaliser=Normaliser("max", "linear", 0.0, 0.0, SCALE), units=UNITS,
                        quantization="float32", unit_stats=stats,
                        training={"data": [], "recipe": {"note": "test: unit 3 inhibitory"}})


@pytest.fixture(scope="module")
def swept(inhibitory_bundle) -> dict:
    audio = [Clip(str(track("castle")), 20.0, 2.5)]
    return P.playability(inhibitory_bundle, audio, generate_seconds=2.5)


@pytest.mark.train
def test_the_inhibitory_unit_is_found_in_both_modes(swept):
    for mode in ("generate", "resynth"):
        units = swept["modes"][mode]["units"]
        assert units[INHIBITORY]["inhibitory"], mode
        assert not units[INHIBITORY]["louder_when_raised"], mode
        assert units[INHIBITORY]["level_change_db"] < -2.0, mode
        for u in range(3):
            assert units[u]["louder_when_raised"] and not units[u]["inhibitory"], (mode, u)
            assert units[u]["monotonic"], (mode, u)
    crit = swept["criteria"]
    assert crit["generate louder when raised"]["value"] == 3
    assert not crit["generate louder when raised"]["pass"]  # 4 of 4 needed


@pytest.mark.train
def test_each_unit_part_peaks_in_its_own_band(swept):
    """In resynth the output's magnitudes are the decoded ones (with the input's phase),
    so each part must sit where its decoder row is.  (Generate mode's invented phase
    turns this static spectrum into a few partials, so its parts are not checked here.)"""
    fc = np.array(swept["bands_hz"])
    bin_hz = RATE / LOW_LATENCY.n_fft
    r = swept["modes"]["resynth"]
    for u, centre in enumerate((100, 600)):
        part = np.array(r["units"][u + 1]["part_db"])
        assert 0.7 < fc[np.argmax(part)] / (centre * bin_hz) < 1.4, (u + 1, part)
    # unit 0's bump (215 Hz, sigma 160 Hz) raises every band up to 400 Hz, nothing above 1 kHz
    part0 = np.array(r["units"][0]["part_db"])
    assert np.all(part0[fc <= 400] > 10) and np.all(np.abs(part0[fc >= 1000]) < 1)
    assert all(u["audible"] for u in r["units"])
    # units 0-2 raise their own bands, unit 3 lowers them all: about 3-4 controls
    assert 3.0 < r["participation_ratio"] <= 4.0
    # the bump of unit 0 (215 Hz) pulls the centroid down, unit 2's (6.5 kHz) up
    assert r["units"][0]["centroid_shift_hz"] < 0 < r["units"][2]["centroid_shift_hz"]


@pytest.mark.train
def test_peaks_at_extremes_are_read_and_compared_with_full_scale(swept):
    for mode in ("generate", "resynth"):
        r = swept["modes"][mode]
        assert r["worst_peak"]["peak"] >= max(u["knob_peak"]["scale 2"] for u in r["units"])
        assert r["worst_peak"]["peak"] >= r["all_scale_2"]["peak"]
        assert r["peak_source"]
        assert (r["worst_peak"]["peak"] > 1.0) == bool(r["extremes_over_full_scale"])
    # in resynth the loudest extreme takes the inhibitory unit out: the whole bias
    # spectrum and every bump at once, well beyond full scale
    r = swept["modes"]["resynth"]
    assert r["worst_peak"]["setting"] == f"u{INHIBITORY} scale 0"
    assert r["worst_peak"]["peak"] > 1.5
    # ...and the engine's own limiter brings every extreme to its ceiling (-1 dBFS),
    # reducing the gain by at least what the pre-limiter peak is over it
    ceiling = 10 ** (-1 / 20)
    assert r["peak_source"] == "pre-limiter"
    o = r["worst_output_peak"]
    assert ceiling * 0.9 < o["output_peak"] <= ceiling + 1e-9
    assert r["worst_gain_reduction_db"] >= 20 * np.log10(r["worst_peak"]["peak"] / ceiling) - 0.01
    crit = swept["criteria"]["resynth extremes within full scale"]
    assert crit["pass"] and crit["value"] == pytest.approx(o["output_peak"], abs=1e-3)
    assert f"before the limiter {r['worst_peak']['peak']:.2f}" in crit["worst"]


def test_limited_brings_peaks_to_the_ceiling_and_leaves_quiet_signals_alone():
    from device.sound.level import Limiter

    frame = LOW_LATENCY
    rng = np.random.default_rng(3)
    x = rng.standard_normal(frame.hop_length * 40) * 0.8  # peaks near 3x full scale
    peak, reduction = P.limited(x, frame)
    lim = Limiter(frame)
    assert peak <= lim.ceiling + 1e-12
    assert reduction >= 20 * np.log10(np.max(np.abs(x)) / lim.ceiling) - 1e-6
    quiet, none = P.limited(x * 0.01, frame)
    assert none == 0.0 and quiet == pytest.approx(np.max(np.abs(x * 0.01)), rel=1e-9)


@pytest.mark.train
@pytest.mark.slow
def test_cli_playability_with_defaults(inhibitory_bundle, tmp_path, capsys):
    from train.cli import main

    report = tmp_path / "report"
    assert main(["playability", str(inhibitory_bundle), "--report", str(report)]) == 0
    res = json.loads((report / "playability.json").read_text())
    assert set(res["modes"]) == {"generate"} and res["generate_seconds"] == 10.0
    assert (report / "inhibitory.png").stat().st_size > 10_000
    md = (report / "playability.md").read_text()
    assert "| generate louder when raised | 3 | >= 4 | **FAIL** |" in md
    assert capsys.readouterr().out == md


@pytest.mark.train
def test_two_threads_give_the_same_figures(inhibitory_bundle, swept):
    """``threads=2`` (what ``aesynth-train new`` uses) sweeps the modes side by side on
    their own engines: every figure equals the one-thread sweep's."""
    audio = [Clip(str(track("castle")), 20.0, 2.5)]
    two = P.playability(inhibitory_bundle, audio, generate_seconds=2.5, threads=2)
    for mode in ("generate", "resynth"):
        a, b = swept["modes"][mode], two["modes"][mode]
        assert a["participation_ratio"] == pytest.approx(b["participation_ratio"], abs=1e-9)
        for ua, ub in zip(a["units"], b["units"], strict=True):
            assert ua["level_db"] == pytest.approx(ub["level_db"], abs=1e-9)
            assert ua["part_db"] == pytest.approx(ub["part_db"], abs=1e-9)
    assert swept["criteria"] == two["criteria"]


@pytest.mark.train
def test_limited_reads_what_the_engine_with_its_limiter_plays(inhibitory_bundle):
    """The offline limiter on a pre-limiter render gives the peak of the same render
    with the engine's limiter in place (the loudest extreme of the inhibitory model)."""
    from device.models.bundle import read_bundle
    from device.sound.engine import Engine
    from device.sound.render import render

    b = read_bundle(inhibitory_bundle)
    x = Clip(str(track("castle")), 20.0, 2.5).load(RATE)
    s = next(s for s in P.settings(b.units) if s.label == f"u{INHIBITORY} scale 0")
    pre, tap = P.render_setting(b, "resynth", x, s)
    assert tap == "pre-limiter" and np.max(np.abs(pre)) > 1.5
    engine = Engine(b, mode="resynth")
    try:
        out = render(engine, x, s.commands(b.units))
    finally:
        engine.close()
    peak, reduction = P.limited(pre, b.frame)
    assert peak == pytest.approx(float(np.max(np.abs(out))), rel=1e-6)
    assert reduction > 20 * np.log10(1.5 / engine.limiter.ceiling)
