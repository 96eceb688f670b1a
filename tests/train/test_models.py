"""Keras models: TensorFlow-side features agree with device.sound.features; recipe options work."""

from __future__ import annotations

import numpy as np
import pytest

from device.sound.features import LOW_LATENCY, Normaliser, magnitudes

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def mags() -> np.ndarray:
    rng = np.random.default_rng(7)
    t = np.arange(22050) / 22050
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))
    return magnitudes(x, config=LOW_LATENCY)[20:120]


@pytest.mark.parametrize("kind", ["max", "logmax", "standard"])
def test_tf_inverse_agrees_with_numpy_normaliser(kind, mags):
    from train.models import tf_inverse

    norm = Normaliser.fit(mags, kind=kind)
    feats = norm.forward(mags).astype(np.float32)
    # include wild decoder outputs: the clip before exp must match too
    feats[0, :10] = 50.0
    feats[1, :10] = -50.0
    want = norm.inverse(feats)
    got = tf_inverse(norm, feats).numpy()
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6 * want.max())


def test_paper_loss_is_mse_of_magnitudes_over_global_max(mags):
    import tensorflow as tf

    from train.models import PAPER_RECIPE, make_loss, recipe_with

    norm = Normaliser.fit(mags, kind="standard")
    g = float(mags.max())
    feats = norm.forward(mags).astype(np.float32)
    noisy = feats + np.random.default_rng(1).normal(0, 0.1, feats.shape).astype(np.float32)
    loss = make_loss(recipe_with(PAPER_RECIPE, loss="paper"), norm, g)
    got = float(tf.reduce_mean(loss(tf.constant(feats), tf.constant(noisy))))
    want = np.mean(((norm.inverse(noisy) - norm.inverse(feats)) / g) ** 2)
    assert got == pytest.approx(want, rel=1e-4)


def test_tied_decoder_uses_the_encoder_kernel():
    from train.models import PAPER_RECIPE, build, recipe_with

    auto, enc, dec = build(recipe_with(PAPER_RECIPE, hidden=[16, 4], tied=True), 33)
    k_enc = [w for w in enc.weights if "kernel" in w.path]
    dec_kernels = {id(w) for w in dec.trainable_weights if "kernel" in w.path}
    assert dec_kernels == {id(w) for w in k_enc}  # no kernels of its own
    assert len(auto.trainable_weights) == 2 * 2 + 2  # kernels once, four biases
    u = np.random.default_rng(0).uniform(size=(1, 4)).astype(np.float32)
    k2 = k_enc[1].numpy()
    k2[:] = 0.0
    k_enc[1].assign(k2)  # zero encoder kernel 2 -> decoder layer 2 sees no input
    bias = {w.path: w.numpy() for w in dec.weights if "bias" in w.path}
    h = 1 / (1 + np.exp(-bias["dec2/bias"]))
    np.testing.assert_allclose(dec(u).numpy()[0], h @ k_enc[0].numpy().T + bias["dec1/bias"],
                               rtol=1e-5, atol=1e-5)


def test_nonneg_decay_penalises_only_negative_weights():
    from train.models import _NonNegDecay

    reg = _NonNegDecay(0.5)
    w = np.array([[1.0, -2.0], [3.0, -1.0]], np.float32)
    assert float(reg(w)) == pytest.approx(0.5 * (4 + 1))
    assert float(reg(np.abs(w))) == 0.0


def test_unknown_recipe_key_is_refused():
    from train.models import PAPER_RECIPE, recipe_with

    with pytest.raises(KeyError, match="hiden"):
        recipe_with(PAPER_RECIPE, hiden=[8])


def _monotone_decoder(units: int = 4, bins: int = 33):
    import keras

    from train.models import PAPER_RECIPE, build, recipe_with

    recipe = recipe_with(PAPER_RECIPE, hidden=[16, units], activation="relu",
                         decoder_hidden=[12], monotone=True, optimizer="adam",
                         learning_rate=1e-2, epochs=2, batch_size=16)
    auto, enc, dec = build(recipe, bins)
    # train a little on signed data so the constraint has to act, not just the init
    rng = np.random.default_rng(3)
    x = rng.normal(size=(256, bins)).astype(np.float32)
    auto.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    auto.fit(x, x, epochs=2, batch_size=32, verbose=0)
    return dec


@pytest.fixture(scope="module")
def monotone_decoder():
    return _monotone_decoder()


def test_monotone_decoder_kernels_stay_non_negative(monotone_decoder):
    kernels = [w.numpy() for w in monotone_decoder.weights if "kernel" in w.path]
    assert len(kernels) == 2
    assert all(k.min() >= 0.0 for k in kernels)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

_unit_vectors = arrays(np.float32, 4, elements=st.floats(0.0, 1.0, width=32))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(h=_unit_vectors, delta=_unit_vectors)
def test_raising_any_unit_never_lowers_any_bin(monotone_decoder, h, delta):
    """The parts-based decoder is monotone: decode(h + d) >= decode(h) for d >= 0."""
    low = monotone_decoder(h[None, :]).numpy()[0]
    high = monotone_decoder((h + delta)[None, :]).numpy()[0]
    assert np.all(high >= low - 1e-5 * (1 + np.abs(low)))


def test_parts_overlap_is_zero_for_disjoint_parts_and_one_for_equal_ones():
    import tensorflow as tf

    from train.models import parts_overlap

    disjoint = np.zeros((3, 12), np.float32)
    for j in range(3):
        disjoint[j, 4 * j: 4 * j + 4] = 1.0 + j
    assert float(parts_overlap([tf.constant(disjoint)])) == pytest.approx(0.0, abs=1e-6)
    same = np.tile(np.linspace(0.1, 1, 12, dtype=np.float32), (3, 1))
    assert float(parts_overlap([tf.constant(same)])) == pytest.approx(1.0, rel=1e-5)
    # through a product of kernels: units x h, h x bins
    a = np.eye(3, dtype=np.float32)
    assert float(parts_overlap([tf.constant(a), tf.constant(disjoint)])) == pytest.approx(
        0.0, abs=1e-6)


def test_band_pooled_overlap_sees_parts_the_bins_call_distinct_as_one_band():
    """Two parts on different bins of one 1/3-octave band are orthogonal per bin but the
    same control per band; parts in different bands stay distinct."""
    import tensorflow as tf

    from device.sound.features import Normaliser
    from train.models import band_pooling, parts_overlap

    n_bins = 1025  # n_fft 2048 at 22050 Hz: 10.77 Hz per bin
    norm = Normaliser("standard", "log", 1e-3, np.zeros(n_bins), np.full(n_bins, 2.0))
    pool = band_pooling(norm, n_bins, 22050.0)
    freqs = np.arange(n_bins) * 22050 / 2048
    assert pool.shape[0] == n_bins and 20 <= pool.shape[1] <= 24  # 40 Hz .. 8 kHz
    # each band averages its bins' scale (2.0): every column sums to 2, independently
    np.testing.assert_allclose(pool.sum(axis=0), 2.0, rtol=1e-5)
    assert np.all(pool[freqs >= 8980.0] == 0)  # above the top band's edge

    def part(hz: float) -> np.ndarray:
        p = np.zeros(n_bins, np.float32)
        p[int(round(hz / (22050 / 2048)))] = 1.0
        return p

    same_band = tf.constant(np.stack([part(1000.0), part(1050.0)]))  # 1 kHz band: 891..1122 Hz
    assert float(parts_overlap([same_band])) == pytest.approx(0.0, abs=1e-6)
    assert float(parts_overlap([same_band], pool)) == pytest.approx(1.0, rel=1e-5)
    other_bands = tf.constant(np.stack([part(1000.0), part(4000.0)]))
    assert float(parts_overlap([other_bands], pool)) == pytest.approx(0.0, abs=1e-6)


def test_level_augmentation_scales_whole_frames_within_the_range(mags):
    from train.fit import augment_levels

    out = augment_levels(mags, [-20.0, 0.0], seed=0)
    ratio = out.sum(axis=1) / mags.sum(axis=1)
    db = 20 * np.log10(ratio)
    assert db.min() >= -20.001 and db.max() <= 0.001
    assert db.std() > 3  # actually random, not one gain
    np.testing.assert_allclose(out / ratio[:, None], mags, rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="augment_db"):
        augment_levels(mags, [6.0, -6.0], seed=0)


def test_sc_log_loss_is_per_frame_spectral_convergence_plus_feature_mse(mags):
    """Against numpy: ||S - S'||² / ||S||² per frame + w · feature MSE."""
    import tensorflow as tf

    from train.models import PAPER_RECIPE, make_loss, recipe_with

    norm = Normaliser.fit(mags, kind="standard")
    feats = norm.forward(mags).astype(np.float32)
    noisy = feats + np.random.default_rng(2).normal(0, 0.1, feats.shape).astype(np.float32)
    loss = make_loss(recipe_with(PAPER_RECIPE, loss="sc_log", feature_weight=0.5), norm,
                     float(mags.max()))
    got = loss(tf.constant(feats), tf.constant(noisy)).numpy()
    true, pred = norm.inverse(feats), norm.inverse(noisy)
    from train.models import QUIET_FLOOR

    energy = np.sum(true ** 2, axis=1)
    want = (np.sum((pred - true) ** 2, axis=1) / (energy + QUIET_FLOOR * energy.mean())
            + 0.5 * np.mean((noisy - feats) ** 2, axis=1))
    np.testing.assert_allclose(got, want, rtol=1e-3)
    # level-free: a frame 40 dB quieter with the same relative error costs the same
    sc_only = make_loss(recipe_with(PAPER_RECIPE, loss="sc_log", feature_weight=0.0), norm,
                        float(mags.max()))
    loud = sc_only(tf.constant(feats), tf.constant(noisy)).numpy()
    quiet = sc_only(tf.constant(norm.forward(true * 0.01).astype(np.float32)),
                    tf.constant(norm.forward(pred * 0.01).astype(np.float32))).numpy()
    np.testing.assert_allclose(quiet, loud, rtol=2e-3)


def test_sweep_effects_of_a_linear_decoder_are_its_pooled_rows_at_the_mean_activation():
    """A linear decoder y = z K + b: unit j's effect (z vs z with z_j = 0) is z_j K_j, so
    its mean over uniform points is 0.5 K_j, pooled per band."""
    import keras

    from train.models import sweep_effects

    rng = np.random.default_rng(3)
    units, bins, bands = 4, 40, 5
    kernel = rng.uniform(0, 1, (units, bins)).astype(np.float32)
    pool = np.zeros((bins, bands), np.float32)
    for b in range(bands):
        pool[8 * b: 8 * b + 8, b] = 1.0 / 8
    dec = keras.Sequential([keras.Input((units,)), keras.layers.Dense(bins)])
    dec.layers[0].set_weights([kernel, rng.normal(size=bins).astype(np.float32)])
    got = np.asarray(sweep_effects(dec, units, pool, points=20000, seed=1))
    np.testing.assert_allclose(got, 0.5 * kernel @ pool, rtol=0.03, atol=1e-3)
    # from given activations (sweep_on_data: the encoder's on a batch): exactly mean(z_j) K_j
    z = rng.uniform(0, 0.3, (7, units)).astype(np.float32)
    got = np.asarray(sweep_effects(dec, units, pool, z=z))
    np.testing.assert_allclose(got, z.mean(axis=0)[:, None] * (kernel @ pool), rtol=1e-4,
                               atol=1e-6)


def test_sweep_penalty_is_zero_only_for_orthogonal_audible_effects():
    import tensorflow as tf

    from train.models import NEPER_DB, sweep_penalty

    loud = 6.0 / NEPER_DB  # 6 dB in every band of its own
    orth = np.zeros((3, 9), np.float32)
    for j in range(3):
        orth[j, 3 * j: 3 * j + 3] = loud * np.sqrt(3.0)  # RMS over 9 bands: 6 dB
    assert float(sweep_penalty(tf.constant(orth), audible_db=4.0)) == pytest.approx(
        0.0, abs=1e-6)
    same = np.tile(orth[:1], (3, 1))
    assert float(sweep_penalty(tf.constant(same))) == pytest.approx(1.0, rel=1e-5)
    quiet = orth.copy()
    quiet[2] *= 0.25  # 1.5 dB: under the 4 dB floor by (1 - 1.5/4) = 0.625
    assert float(sweep_penalty(tf.constant(quiet), audible_db=4.0)) == pytest.approx(
        0.625 ** 2 / 3, rel=1e-4)
    assert float(sweep_penalty(tf.constant(quiet))) == pytest.approx(0.0, abs=1e-6)


def test_spread_penalty_counts_only_units_that_spread_less_than_the_floor():
    import tensorflow as tf

    from train.models import spread_penalty

    rng = np.random.default_rng(0)
    h = np.empty((4000, 3), np.float32)
    h[:, 0] = rng.uniform(0, 1, 4000)        # std 0.29: over the 0.2 floor
    h[:, 1] = 0.15                           # constant: the whole floor missed
    h[:, 2] = rng.normal(0.1, 0.05, 4000)    # std 0.05: (1 - 0.05/0.2)^2 = 0.5625
    got = float(spread_penalty(tf.constant(h), 0.2))
    assert got == pytest.approx((0 + 1 + 0.5625) / 3, rel=0.02)
    assert float(spread_penalty(tf.constant(h[:, :1]), 0.2)) == 0.0


def test_unit_spread_reaches_the_encoder():
    """The spread term's gradient reaches the encoder (it is not stopped): the encoder's
    gradient differs from the same loss without it; and it needs the encoder."""
    import tensorflow as tf

    from train.fit import RECIPES, recipe_with
    from train.models import build, make_loss

    base = recipe_with(RECIPES["parts-sc"], hidden=[8, 4], decoder_hidden=[8])
    n_bins = 16
    auto, enc, dec = build(base, n_bins)
    norm = Normaliser("standard", "log", 1e-3, np.zeros(n_bins), np.ones(n_bins))
    x = tf.constant(np.random.default_rng(1).normal(size=(32, n_bins)).astype(np.float32))

    def grads(recipe):
        loss = make_loss(recipe, norm, 1.0, decoder=dec, encoder=enc)
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(loss(x, auto(x, training=True)))
        return [g.numpy() for g in tape.gradient(value, enc.trainable_variables)]

    spread = recipe_with(base, unit_spread=1.0, spread_std=5.0)  # every unit under it
    with_it, without = grads(spread), grads(base)
    assert any(not np.allclose(a, b) for a, b in zip(with_it, without, strict=True))
    with pytest.raises(ValueError, match="unit_spread needs the encoder"):
        make_loss(spread, norm, 1.0, decoder=dec)


def test_sweep_at_the_mean_is_generate_modes_default_spectrum():
    """sweep_on_data="mean": the sweep penalty at one point, the batch's mean activations
    (generate mode's default spectrum); it equals the penalty of sweep_effects there, differs
    from the per-frame sweep, and anything but true/false/"mean" is refused."""
    import tensorflow as tf

    from train.fit import RECIPES, recipe_with
    from train.models import band_pooling, build, make_loss, sweep_effects, sweep_penalty

    base = recipe_with(RECIPES["parts-sc"], hidden=[8, 4], decoder_hidden=[8],
                       loss="sc_log", feature_weight=0.0, decorrelate=0.0,
                       sweep_parts=1.0, audible_db=3.0)
    n_bins = 1025
    auto, enc, dec = build(base, n_bins)
    norm = Normaliser("standard", "log", 1e-3, np.zeros(n_bins), np.ones(n_bins))
    x = tf.constant(np.random.default_rng(1).normal(size=(32, n_bins)).astype(np.float32))
    y = auto(x, training=False)

    def value(recipe):
        return float(tf.reduce_mean(make_loss(recipe, norm, 1.0, decoder=dec, encoder=enc)(
            x, y)))

    plain = value(recipe_with(base, sweep_parts=0.0))
    at_mean = value(recipe_with(base, sweep_on_data="mean"))
    z = tf.reduce_mean(enc(x, training=False), axis=0, keepdims=True)
    pool = band_pooling(norm, n_bins, 22050)
    penalty = float(sweep_penalty(sweep_effects(dec, 4, pool, z=z), 3.0))
    assert at_mean == pytest.approx(plain * (1.0 + penalty), rel=1e-4)
    assert at_mean != pytest.approx(value(recipe_with(base, sweep_on_data=True)), rel=1e-6)
    with pytest.raises(ValueError, match='sweep_on_data must be true, false or "mean", '
                                         "got 'median'"):
        make_loss(recipe_with(base, sweep_on_data="median"), norm, 1.0, decoder=dec,
                  encoder=enc)


def test_log_floor_sets_the_features_floor_as_a_fraction_of_the_training_maximum(mags):
    from device.errors import ConfigError
    from train.fit import RECIPES, feature_floor
    from train.models import recipe_with

    base = RECIPES["parts-sc"]
    assert feature_floor(base, 639.0) == 1e-3  # the normaliser's own, for earlier runs
    r = recipe_with(base, log_floor=1e-5)
    g = float(np.max(mags))
    floor = feature_floor(r, g)
    assert floor == pytest.approx(1e-5 * g)
    n = Normaliser.fit(mags, kind="standard", floor=floor)
    # a bin 100 dB under the maximum sits at the floor: its feature is log(2 * floor), scaled
    np.testing.assert_allclose(n.forward(np.full((1, mags.shape[1]), floor))[0],
                               (np.log(2 * floor) - n.offset) / n.scale, rtol=1e-5)
    for bad in (0, 1.5, "1e-5"):
        with pytest.raises(ConfigError, match="log_floor must be a number in"):
            feature_floor(recipe_with(base, log_floor=bad), g)
