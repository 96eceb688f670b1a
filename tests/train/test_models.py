"""Keras models: TensorFlow-side features agree with device.features; recipe options work."""

from __future__ import annotations

import numpy as np
import pytest

from device.features import LOW_LATENCY, Normaliser, magnitudes

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
