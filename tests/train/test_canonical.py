"""Export's canonical units: inhibitory units flipped, ordered by effect, labelled,
and the reconstruction unchanged (issue 11, deliverable 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from device.models.bundle import read_bundle
from device.errors import ExportError
from device.sound.features import LOW_LATENCY, Normaliser
from device.models.runtime import Model

pytestmark = pytest.mark.train

N_BINS = LOW_LATENCY.n_bins
HZ = np.arange(N_BINS) * LOW_LATENCY.sample_rate / LOW_LATENCY.n_fft


def bins(lo_hz: float, hi_hz: float) -> np.ndarray:
    return (HZ >= lo_hz) & (HZ < hi_hz)


def make_run(bottleneck: str = "sigmoid", tied: bool = False, designed: bool = True,
             seed: int = 0):
    """A 1025-3-1025 model with set weights, as a train.fit.Run.

    ``designed`` (untied only): unit 0 adds a little 1.1-2.1 kHz ("mid", the
    weakest), unit 1 takes 7.5-9.5 kHz away ("air", inhibitory: raising it
    lowers the output), unit 2 adds 100-200 Hz ("low", the strongest).
    Otherwise random weights.  Features are the paper's (mags / 10, linear).
    """
    from train.fit import Run
    from train.models import PAPER_RECIPE, build, recipe_with

    recipe = recipe_with(PAPER_RECIPE, name="canon-test", hidden=[3], bottleneck=bottleneck,
                         tied=tied)
    auto, enc, dec = build(recipe, N_BINS)
    rng = np.random.default_rng(seed)
    e = enc.get_layer("enc1")
    e.kernel.assign(rng.normal(0, 0.1, (N_BINS, 3)).astype(np.float32))
    e.bias.assign(rng.normal(0, 0.3, 3).astype(np.float32))
    d = dec.get_layer("dec1")
    if designed and not tied:
        w = np.zeros((3, N_BINS))
        b = np.full(N_BINS, 0.01)
        w[0, bins(1100, 2100)] = 0.02
        w[1, bins(7500, 9500)] = -0.9
        b[bins(7500, 9500)] = 1.0
        w[2, bins(100, 200)] = 1.0
        d.kernel.assign(w.astype(np.float32))
        d.bias.assign(b.astype(np.float32))
    else:
        if not tied:
            d.kernel.assign(rng.normal(0, 0.05, (3, N_BINS)).astype(np.float32))
        d.bias.assign(np.full(N_BINS, 0.2, np.float32))
    norm = Normaliser("max", "linear", 0.0, 0.0, 10.0)
    return Run(recipe, seed, norm, 10.0, N_BINS, auto, enc, dec)


def training_mags(n: int = 600, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 10, (n, N_BINS)) * rng.uniform(0, 1, (n, 1))


@pytest.fixture(scope="module")
def designed():
    from train.canonical import canonicalize

    run = make_run()
    mags = training_mags()
    canon, labels, record = canonicalize(run, mags, sample_rate=LOW_LATENCY.sample_rate)
    return run, mags, canon, labels, record


def test_the_designed_model_measures_as_designed(designed):
    from train.canonical import measure

    run, mags, *_ = designed
    a = run.encode(mags)
    eff = measure(run, a.min(0), a.mean(0), a.max(0), sample_rate=LOW_LATENCY.sample_rate)
    assert eff.level_db[1] < -3 and eff.level_db[0] > 0 and eff.level_db[2] > 0
    assert eff.size_db[2] > eff.size_db[1] > eff.size_db[0] > 0.5
    assert eff.monotonic.all()


def test_inhibitory_unit_is_flipped_ordered_and_labelled(designed):
    run, mags, canon, labels, record = designed
    assert record["applied"] and record["flipped"] == [1]
    assert record["inhibitory_kept"] == []
    assert record["order"] == [2, 1, 0]
    assert labels == ["low", "air", "mid"] == record["labels"]
    assert all(v > 0 for v in record["level_db"])  # every unit now adds energy
    assert record["effect_db"] == sorted(record["effect_db"], reverse=True)
    assert record["max_abs_change"] < 1e-5


def test_canonical_units_are_the_flipped_permuted_originals(designed):
    run, mags, canon, *_ = designed
    old, new = run.encode(mags), canon.encode(mags)
    np.testing.assert_allclose(new[:, 0], old[:, 2], atol=1e-6)
    np.testing.assert_allclose(new[:, 1], 1 - old[:, 1], atol=1e-6)  # sigmoid(-z) = 1 - s
    np.testing.assert_allclose(new[:, 2], old[:, 0], atol=1e-6)
    np.testing.assert_allclose(canon.reconstruct(mags), run.reconstruct(mags), atol=1e-5,
                               rtol=1e-5)
    # the original run is left as it was (export must not change the caller's model)
    np.testing.assert_allclose(run.encode(mags[:5]), old[:5])


def test_export_writes_labels_and_record_and_reconstructs_the_same(designed, tmp_path):
    from train.export import export_bundle

    run, mags, *_ = designed
    test = training_mags(200, seed=5)
    export_bundle(run, tmp_path / "b", name="canon", frame=LOW_LATENCY,
                  quantization="float32", train_mags=mags, test_mags=test)
    b = read_bundle(tmp_path / "b")
    assert b.unit_labels == ("low", "air", "mid")
    rec = b.manifest["training"]["canonical"]
    assert rec["flipped"] == [1] and rec["order"] == [2, 1, 0]
    json.dumps(rec)  # plain JSON
    # unit_stats are of the canonical units: unit 1 is 1 - the old unit 1
    old = run.encode(mags)
    np.testing.assert_allclose(b.unit_stats.max[1], 1 - old[:, 1].min(), atol=1e-5)
    np.testing.assert_allclose(b.unit_stats.min[0], old[:, 2].min(), atol=1e-5)
    # the bundle's encoder -> decoder equals the original Keras model's reconstruction
    want = run.reconstruct(test[:50])
    with Model(b.encoder.content) as enc, Model(b.decoder.content) as dec:
        got = np.array([b.normaliser.inverse(dec.run(enc.run(
            b.normaliser.forward(m).astype(np.float32)[None]))[0].astype(np.float64))
            for m in test[:50]])
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())


def test_no_canonical_keeps_the_trained_units(designed, tmp_path):
    from train.export import export_bundle

    run, mags, *_ = designed
    export_bundle(run, tmp_path / "b", name="raw", frame=LOW_LATENCY,
                  quantization="float32", train_mags=mags, test_mags=mags[:100],
                  canonical=False)
    b = read_bundle(tmp_path / "b")
    assert "unit_labels" not in b.manifest and b.unit_labels == ("1", "2", "3")
    assert "canonical" not in b.manifest["training"]
    np.testing.assert_allclose(b.unit_stats.max, run.encode(mags).max(0), atol=1e-6)


@pytest.mark.parametrize("bottleneck, tied", [("sigmoid", True), ("tanh", False),
                                              ("tanh", True), ("linear", False)])
def test_any_flippable_model_ends_excitatory_with_the_same_reconstruction(bottleneck, tied):
    from train.canonical import canonicalize, measure

    for seed in (0, 1, 2):
        run = make_run(bottleneck, tied, designed=False, seed=seed)
        mags = training_mags(300, seed=seed + 10)
        canon, labels, rec = canonicalize(run, mags, sample_rate=LOW_LATENCY.sample_rate)
        assert rec["applied"] and rec["inhibitory_kept"] == []
        np.testing.assert_allclose(canon.reconstruct(mags), run.reconstruct(mags),
                                   atol=1e-4, rtol=1e-4)
        a = canon.encode(mags)
        eff = measure(canon, a.min(0), a.mean(0), a.max(0), sample_rate=LOW_LATENCY.sample_rate)
        # measured afresh on the rewritten model: every unit adds energy, strongest first
        assert np.all(eff.level_db >= -1e-3), eff.level_db
        np.testing.assert_allclose(eff.size_db, rec["effect_db"], atol=0.01)
        assert len(set(labels)) == 3 and all(1 <= len(x) <= 5 for x in labels)


def test_relu_units_cannot_flip_and_say_so():
    from train.canonical import canonicalize

    run = make_run("relu", designed=True)
    mags = training_mags()
    canon, labels, rec = canonicalize(run, mags, sample_rate=LOW_LATENCY.sample_rate)
    assert rec["flipped"] == [] and rec["inhibitory_kept"] == [1]
    assert rec["level_db"][rec["order"].index(1)] < 0  # still inhibitory, recorded
    np.testing.assert_allclose(canon.reconstruct(mags), run.reconstruct(mags), atol=1e-5)
    old, new = run.encode(mags), canon.encode(mags)
    for k, j in enumerate(rec["order"]):  # a pure permutation
        np.testing.assert_allclose(new[:, k], old[:, j], atol=1e-6)


def test_a_rewrite_that_changes_the_reconstruction_is_refused(monkeypatch):
    """The check is not vacuous: a bias forgotten in the sigmoid flip is caught."""
    from train import canonical

    real = canonical.rewrite

    def wrong(run, flips, order, kind):
        return real(run, flips, order, "odd")  # negates the row, forgets b + W

    monkeypatch.setattr(canonical, "rewrite", wrong)
    with pytest.raises(ExportError, match="changed the reconstruction"):
        canonical.canonicalize(make_run(), training_mags(), sample_rate=22050)


def test_labels_from_band_changes():
    from train.canonical import label, third_octave_bands, unique_labels

    bands, centres = third_octave_bands(N_BINS, 22050)
    assert all(b > a for a, b in bands) and bands[0][0] == 0 and bands[-1][1] == N_BINS
    assert np.all(np.diff(centres) > 0) and 40 < centres[1] < 80 and centres[-1] > 9000

    def bump(hz: float, width_oct: float = 0.5, db: float = 10.0) -> np.ndarray:
        return db * np.exp(-0.5 * (np.log2(centres / hz) / width_oct) ** 2)

    for hz, name in ((35, "sub"), (120, "low"), (450, "body"), (1500, "mid"), (4000, "pres"),
                     (9000, "air")):
        assert label(bump(hz), centres, 5.0) == name, hz
        assert label(-bump(hz), centres, -5.0) == name  # an inhibitory unit's own part
    assert label(np.full(len(centres), 6.0) + np.linspace(-1, 1, len(centres)), centres,
                 6.0) == "level"
    uneven = np.where(np.arange(len(centres)) % 2 == 0, 8.0, 1.0)
    assert label(uneven, centres, 4.0) == "level"  # broad and one way: louder overall
    both_ways = np.where(np.arange(len(centres)) % 2 == 0, 5.0, -4.0)
    assert label(both_ways, centres, 0.5) == "noise"
    tilt = np.linspace(-6, 6, len(centres))  # darker below, brighter above
    assert label(tilt, centres, 1.0) == "air"
    assert label(np.full(len(centres), 3.0) + bump(120, db=6), centres, 4.0) == "low"
    assert label(np.full(len(centres), 0.1), centres, 0.1) == "weak"
    assert unique_labels(["low", "air", "low", "noise", "noise", "level", "level", "low"]) == [
        "low", "air", "low2", "noise", "nse2", "level", "lvl2", "low3"]
    many = unique_labels(["body"] * 12)
    assert many[1] == "body2" and many[9] == "bod10"
    assert all(len(x) <= 5 for x in many) and len(set(many)) == 12


def test_a_unit_is_labelled_by_what_its_fader_plays_min_to_mean():
    """Unit 0 adds 1.1-2.1 kHz all along, and 7.5-9.5 kHz only above its mean
    activation: the fader (min -> mean at the knob's default) plays "mid", and the
    full sweep to its maximum would have said "air"."""
    from train.canonical import canonicalize, label, measure

    run = make_run()
    mags = training_mags()
    a = run.encode(mags).astype(np.float64)
    lo, mean, hi = a.min(axis=0), a.mean(axis=0), a.max(axis=0)
    d = run.decoder.get_layer("dec1")
    w, b = d.kernel.numpy().copy(), d.bias.numpy().copy()
    air = bins(7500, 9500)
    w[1, air] = 0.0  # unit 1 leaves the air bands to unit 0 here
    w[0, air] = 1.0
    b[air] = -(mean[0] + 0.5 * (hi[0] - mean[0]))  # zero (clipped) until above the mean
    d.kernel.assign(w)
    d.bias.assign(b)
    full = measure(run, lo, mean, hi, sample_rate=LOW_LATENCY.sample_rate)
    assert label(full.band_db[0], full.centres_hz, full.level_db[0]) == "air"
    canon, labels, record = canonicalize(run, mags, sample_rate=LOW_LATENCY.sample_rate)
    assert labels[record["order"].index(0)] == "mid"
    assert "min->mean" in record["method"]
