"""Keras autoencoders: the paper's shallow and stacked models and our variants.

A recipe (a plain dict, recorded in every run and bundle) says what to build:

* ``hidden``: layer sizes from the input inwards, e.g. ``[8]`` or ``[256, 8]``;
  the last is the innermost layer, the units the player exposes.
* ``activation`` (hidden layers) and ``bottleneck`` (innermost layer):
  ``sigmoid`` (the paper), ``relu``, ``elu``, ``tanh``...; the output is linear.
* ``tied``: decoder kernels are the encoder kernels transposed.
* ``nonneg``: penalise negative weights (asymmetric decay, Lemme et al. 2012),
  strength ``nonneg``; makes units add energy rather than take it away.
* ``noise``: standard deviation of Gaussian input corruption (denoising).
* ``decoder_hidden``: the decoder's hidden layer sizes from the innermost
  outwards (default: the encoder's, mirrored).
* ``monotone``: a parts-based decoder: every decoder kernel is constrained
  non-negative and every decoder activation is increasing, so with the
  non-negative (sigmoid) units raising any unit never lowers any bin of the
  decoded log-magnitude spectrum: each unit adds its part (the paper's future
  work, section 5: non-negative weights "more intuitive to play"; a monotone
  network after Sill 1998).
* ``decorrelate``: weight of a penalty on the overlap of the units' parts:
  the mean squared cosine between the columns of the decoder's kernel product
  (bins x units, the decoder's linearisation when its slopes are equal), so
  that units shape different regions of the spectrum instead of all moving
  the level.
* ``overlap_bands``: take that cosine on the parts in 1/3-octave bands of
  their log-magnitude effect (each bin's part times its feature scale,
  averaged per band) instead of on the 1025 linear-frequency bins, where the
  top octave holds half the bins: the playability report measures "distinct
  controls" in these bands (train/playability.py), so this is the penalty
  that aims at that figure.
* ``sweep_parts``: weight of a penalty measured on the decoder itself, as
  the playability report sweeps it: at random points of the unit space
  (uniform in [0, 1]), each unit's effect is the decoded log-magnitude
  spectrum minus the same with that unit at 0, averaged into 1/3-octave
  bands; the penalty is the mean squared cosine between those effects (the
  report's "distinct controls" are their participation ratio) plus, with
  ``audible_db`` > 0, a floor on each effect's RMS over bands (dB), so no
  unit may fall silent to keep out of the others' bands (the band penalty on
  the kernels alone let one do so).  ``sweep_on_data``: sweep from the
  encoder's activations on the batch instead (a unit the music only ever
  drives to 0.3 must be audible at 0.3, not at 1: the engine's default
  activation in generate mode is the unit's training mean); ``"mean"``:
  sweep at one point, the batch's mean activations, which is generate mode's
  default spectrum, each unit from 0 to its mean with the others at theirs
  (the playability report's generate sweep, on the decoder).
* ``unit_spread``: weight of a floor on each unit's spread over the batch:
  the mean of ``relu(1 - std_j / spread_std)^2`` over units of the encoder's
  activations.  Generate mode plays a unit from its training minimum (gain 0)
  to its training mean (gain 1), so a unit the encoder keeps near 0 is
  inaudible there however loud its part is at 1 (the eighth unit of the
  2026-11-30 default: mean 0.15, max 0.29, 1.6 dB in generate; issue 11).
* ``log_floor``: the floor of the log features, ``log(m + floor)``, as a fraction
  of the training maximum (None: 1e-3 in magnitude units, about -116 dB re the
  maximum of our data).  ``1e-5`` is the log-spectral distance's own floor
  (train/metrics.py), so the log term weighs quiet bins as that metric does.
* ``augment_db``: ``[low, high]``: each training frame is also seen at a
  random gain drawn uniformly in dB from that range, so quiet input
  is encoded as well as loud (train/fit.py).

The TensorFlow inverse normaliser here mirrors ``device.sound.features.Normaliser``
so a loss can be taken in the paper's linear units; a test proves they agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from device.sound.features import Normaliser

PAPER_RECIPE: dict[str, Any] = {
    "name": "paper", "features": "max", "hidden": [8], "activation": "sigmoid",
    "bottleneck": "sigmoid", "tied": False, "nonneg": 0.0, "noise": 0.0,
    "optimizer": "sgd", "learning_rate": 0.005, "momentum": 0.5, "batch_size": 100,
    "epochs": 20, "patience": 0, "loss": "features", "greedy": False,
    "decoder_hidden": None, "monotone": False, "decorrelate": 0.0, "augment_db": None,
    "clipnorm": None, "overlap_bands": False, "sweep_parts": 0.0, "audible_db": 0.0,
    "sweep_on_data": False, "unit_spread": 0.0, "spread_std": 0.2, "log_floor": None,
}


def recipe_with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``base`` with ``changes``; unknown keys are refused."""
    unknown = set(changes) - set(PAPER_RECIPE) - {"feature_weight"}
    if unknown:
        raise KeyError(f"unknown recipe keys {sorted(unknown)}; known: {sorted(PAPER_RECIPE)}")
    r = dict(base)
    r.update(changes)
    return r


def _keras():
    import keras

    return keras


def make_layers(recipe: dict[str, Any], n_bins: int):
    """Encoder and decoder layer lists (decoder from the innermost layer outwards)."""
    keras = _keras()
    hidden = list(recipe["hidden"])
    reg = _NonNegDecay(float(recipe["nonneg"])) if recipe.get("nonneg") else None
    enc = []
    for i, h in enumerate(hidden):
        act = recipe["bottleneck"] if i == len(hidden) - 1 else recipe["activation"]
        enc.append(keras.layers.Dense(h, activation=act, kernel_regularizer=reg,
                                      name=f"enc{i + 1}"))
    if recipe.get("decoder_hidden") is not None or recipe.get("monotone"):
        return enc, _free_decoder(recipe, n_bins, hidden, reg)
    outs = [n_bins] + hidden[:-1]  # decoder layer i maps hidden[i] -> outs[i]
    dec = []
    for i in reversed(range(len(hidden))):
        act = "linear" if i == 0 else recipe["activation"]
        if recipe.get("tied"):
            dec.append(TiedDense(enc[i], outs[i], activation=act, name=f"dec{i + 1}"))
        else:
            dec.append(keras.layers.Dense(outs[i], activation=act, kernel_regularizer=reg,
                                          name=f"dec{i + 1}"))
    return enc, dec


def _free_decoder(recipe: dict[str, Any], n_bins: int, hidden: list[int], reg):
    """Decoder layers of their own sizes (``decoder_hidden``), monotone when asked."""
    keras = _keras()
    sizes = list(hidden[-2::-1] if recipe.get("decoder_hidden") is None
                 else recipe["decoder_hidden"])
    if recipe.get("tied"):
        raise ValueError("tied weights need the mirrored decoder: drop decoder_hidden "
                         "and monotone")
    monotone = bool(recipe.get("monotone"))
    # Increasing activations only, so non-negative kernels make an increasing map.
    act = "sigmoid" if monotone else recipe["activation"]
    con = keras.constraints.NonNeg() if monotone else None
    fans = [int(hidden[-1])] + sizes + [n_bins]
    dec = []
    for i, size in enumerate(sizes + [n_bins]):
        # Monotone from the first step: the constraint acts only after an update.
        init = (keras.initializers.RandomUniform(0.0, float(np.sqrt(6.0 / (fans[i] + size))),
                                                 seed=i)
                if monotone else "glorot_uniform")
        last = i == len(sizes)
        # A non-negative kernel on sigmoid inputs (mean 1/2) adds about
        # fan_in * limit / 4 to every output: start the bias there with the
        # opposite sign, or the first epochs only learn to undo it.
        bias = ("zeros" if not monotone or i == 0 else keras.initializers.Constant(
            -fans[i] * float(np.sqrt(6.0 / (fans[i] + size))) / 4.0))
        dec.append(keras.layers.Dense(size, activation="linear" if last else act,
                                      kernel_constraint=con, kernel_initializer=init,
                                      bias_initializer=bias,
                                      kernel_regularizer=None if monotone else reg,
                                      name="dec_out" if last else f"dec_h{i + 1}"))
    return dec


def band_pooling(normaliser: Normaliser, n_bins: int, sample_rate: float) -> np.ndarray:
    """(bins x bands) float32: per-bin feature scale (natural-log units of magnitude per
    feature unit; 1 where the features have no per-bin scale) averaged into the
    1/3-octave bands of train/playability.third_octave_bands from 40 Hz (bands
    with no bin dropped).  Rows: bins at k * sample_rate / (2 (n_bins - 1)) Hz."""
    from train.playability import third_octave_bands

    scale = np.broadcast_to(np.asarray(normaliser.scale, np.float64), (n_bins,))
    freqs = np.arange(n_bins) * sample_rate / (2.0 * (n_bins - 1))
    _, lo, hi = third_octave_bands(int(sample_rate), lowest_hz=40.0)
    cols = []
    for a, b in zip(lo, hi):
        inside = (freqs >= a) & (freqs < b)
        if inside.any():
            cols.append(np.where(inside, scale, 0.0) / inside.sum())
    return np.stack(cols, axis=1).astype(np.float32)


def parts_overlap(kernels, pool=None) -> Any:
    """Mean squared cosine between the units' parts (TensorFlow; for the loss).

    ``kernels``: the decoder's kernels from the units outwards, shapes
    (units, h1), (h1, h2), ..., (hk, bins).  Their product (units x bins) is
    the decoder's linearisation up to the activations' slopes; row j is unit
    j's part.  0 when the parts are orthogonal, 1 when they are identical.
    ``pool`` (bins x bands, :func:`band_pooling`): compare the parts per band.
    """
    import tensorflow as tf

    p = kernels[0]
    for k in kernels[1:]:
        p = tf.matmul(p, k)
    if pool is not None:
        p = tf.matmul(p, tf.constant(pool))
    return mean_squared_cosine(p)


def mean_squared_cosine(rows) -> Any:
    """Mean over pairs i != j of the squared cosine between rows i and j (TensorFlow):
    0 when the rows are orthogonal, 1 when they are parallel."""
    import tensorflow as tf

    n = tf.math.l2_normalize(rows, axis=1)
    g = tf.matmul(n, n, transpose_b=True)
    units = tf.cast(tf.shape(g)[0], g.dtype)
    off = tf.reduce_sum(tf.square(g)) - tf.reduce_sum(tf.square(tf.linalg.diag_part(g)))
    return off / tf.maximum(units * (units - 1.0), 1.0)


NEPER_DB = 20.0 / np.log(10.0)  # dB per natural-log unit of magnitude
SWEEP_POINTS = 16  # random points of the unit space per training step


def sweep_effects(decoder, units: int, pool, points: int = SWEEP_POINTS, seed=None,
                  z=None):
    """(units x bands) TensorFlow: each unit's mean effect on the decoded spectrum.

    At ``points`` random activations ``z`` (uniform in [0, 1]^units), or at the
    given ``z`` (points x units: the encoder's activations on a batch, where
    the player meets them), unit j's effect is ``decoder(z) - decoder(z with
    z_j = 0)`` in features, pooled by ``pool`` (bins x bands,
    :func:`band_pooling`: natural-log magnitude per band), averaged over the
    points: the decoder-side analogue of the playability report's gain 0 -> 1
    sweep (train/playability.py).
    """
    import tensorflow as tf

    if z is None:
        z = tf.random.uniform((points, units), seed=seed)
    points = tf.shape(z)[0]
    off = 1.0 - tf.eye(units)  # row j zeroes unit j
    zoff = tf.reshape(z[:, None, :] * off[None, :, :], (points * units, units))
    y = decoder(tf.concat([z, zoff], axis=0), training=True)
    y0, y1 = y[:points], tf.reshape(y[points:], (points, units, tf.shape(y)[-1]))
    effect = tf.reduce_mean(y0[:, None, :] - y1, axis=0)  # units x bins
    return tf.matmul(effect, tf.constant(pool))


def sweep_penalty(effects, audible_db: float = 0.0):
    """Mean squared off-diagonal cosine of the effect rows (units x bands), plus
    with ``audible_db`` > 0 the mean of ``relu(1 - rms_j / audible)^2`` where rms_j
    is unit j's effect RMS over bands in dB: 0 when every unit is audible and the
    effects are orthogonal."""
    import tensorflow as tf

    out = mean_squared_cosine(effects)
    if audible_db > 0:
        rms = NEPER_DB * tf.sqrt(tf.reduce_mean(tf.square(effects), axis=1) + 1e-12)
        out = out + tf.reduce_mean(tf.square(tf.nn.relu(1.0 - rms / audible_db)))
    return out


def spread_penalty(h, spread_std: float):
    """Mean over units of ``relu(1 - std_j / spread_std)^2``, std_j the standard deviation
    of unit j's activations ``h`` (batch x units) over the batch: 0 when every unit
    spreads at least ``spread_std``, 1 when every unit is constant."""
    import tensorflow as tf

    std = tf.math.reduce_std(h, axis=0)
    return tf.reduce_mean(tf.square(tf.nn.relu(1.0 - std / spread_std)))


def build(recipe: dict[str, Any], n_bins: int, *, batch_size: int | None = None):
    """(autoencoder, encoder, decoder) Keras models sharing their layers."""
    keras = _keras()
    enc_layers, dec_layers = make_layers(recipe, n_bins)
    units = int(recipe["hidden"][-1])
    x_in = keras.Input((n_bins,), batch_size=batch_size, name="features")
    h = x_in
    for layer in enc_layers:
        h = layer(h)
    encoder = keras.Model(x_in, h, name="encoder")
    u_in = keras.Input((units,), batch_size=batch_size, name="units")
    y = u_in
    for layer in dec_layers:
        y = layer(y)
    decoder = keras.Model(u_in, y, name="decoder")
    a_in = keras.Input((n_bins,), batch_size=batch_size, name="features")
    z = a_in
    if recipe.get("noise"):
        z = keras.layers.GaussianNoise(float(recipe["noise"]), name="corrupt")(z)
    auto = keras.Model(a_in, decoder(encoder(z)), name="autoencoder")
    return auto, encoder, decoder


def TiedDense(source, units: int, *, activation: str = "linear", name: str | None = None):
    """A dense layer whose kernel is ``source``'s kernel transposed (own bias)."""
    keras = _keras()
    from keras import ops

    class _Tied(keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.source = source
            self.units = units
            self.activation = keras.activations.get(activation)

        def build(self, input_shape):
            self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

        def call(self, x):
            return self.activation(ops.matmul(x, ops.transpose(self.source.kernel)) + self.bias)

    return _Tied(name=name)


def _nonneg_decay_class():
    keras = _keras()
    from keras import ops

    class NonNegDecay(keras.regularizers.Regularizer):
        """Asymmetric weight decay: ``strength * sum(min(w, 0)^2)`` (Lemme et al.)."""

        def __init__(self, strength: float):
            self.strength = strength

        def __call__(self, w):
            return self.strength * ops.sum(ops.square(ops.minimum(w, 0.0)))

        def get_config(self):
            return {"strength": self.strength}

    return NonNegDecay


def _NonNegDecay(strength: float):
    return _nonneg_decay_class()(strength)


# -- losses ---------------------------------------------------------------------
def tf_inverse(normaliser: Normaliser, y):
    """``Normaliser.inverse`` in TensorFlow ops (float32): features -> magnitudes."""
    import tensorflow as tf

    scale = tf.constant(np.asarray(normaliser.scale, np.float32))
    offset = tf.constant(np.asarray(normaliser.offset, np.float32))
    m = y * scale + offset
    if normaliser.amplitude == "log":
        m = tf.exp(tf.minimum(m, 30.0)) - normaliser.floor
    return tf.maximum(m, 0.0)


QUIET_FLOOR = 0.05  # sc_log: frames below -13 dB of the batch mean weigh less


def make_loss(recipe: dict[str, Any], normaliser: Normaliser, global_max: float,
              decoder=None, *, sample_rate: float = 22050.0, encoder=None):
    """The training loss named by ``recipe['loss']``.

    ``features``: MSE on the model's (normalised) features — the paper's loss
    when the features are the paper's max-scaled magnitudes.  ``paper``: MSE
    of the magnitudes divided by the training set's global maximum (the
    paper's units) whatever the features are.  ``mixed``: ``paper`` plus
    ``feature_weight`` times ``features``, which keeps quiet bins from being
    ignored entirely.  ``sc_log``: per frame, the squared spectral
    convergence ``||S - S'||² / ||S||²`` of the linear magnitudes (so a quiet
    frame counts as much as a loud one: the metric is level-free, the paper's
    MSE is not), plus ``feature_weight`` times the feature (log-magnitude) MSE.
    """
    import tensorflow as tf

    kind = recipe.get("loss", "features")
    if kind == "features":
        return "mse"
    g = float(global_max)
    w = float(recipe.get("feature_weight", 0.0)) if kind in ("mixed", "sc_log") else 0.0
    if kind not in ("paper", "mixed", "sc_log"):
        raise ValueError(f"loss must be 'features', 'paper', 'mixed' or 'sc_log', "
                         f"got {kind!r}")

    lam = float(recipe.get("decorrelate") or 0.0)
    kernels = []
    if lam:
        if decoder is None:
            raise ValueError("decorrelate needs the decoder model to read its kernels")
        kernels = [layer.kernel for layer in decoder.layers if hasattr(layer, "kernel")]
    pool = None
    if lam and recipe.get("overlap_bands"):
        n_bins = int(decoder.layers[-1].kernel.shape[-1])
        pool = band_pooling(normaliser, n_bins, sample_rate)
    mu = float(recipe.get("sweep_parts") or 0.0)
    audible = float(recipe.get("audible_db") or 0.0)
    if mu:
        if decoder is None:
            raise ValueError("sweep_parts needs the decoder model to sweep it")
        n_bins = int(decoder.outputs[0].shape[-1])
        sweep_pool = band_pooling(normaliser, n_bins, sample_rate)
        n_units = int(decoder.inputs[0].shape[-1])
    on_data = recipe.get("sweep_on_data") or False
    if on_data not in (True, False, "mean"):
        raise ValueError(f"sweep_on_data must be true, false or \"mean\", got {on_data!r}")
    if mu and on_data and encoder is None:
        raise ValueError("sweep_on_data needs the encoder model to encode the batch")
    nu = float(recipe.get("unit_spread") or 0.0)
    spread_std = float(recipe.get("spread_std") or 0.2)
    if nu and encoder is None:
        raise ValueError("unit_spread needs the encoder model to encode the batch")

    def loss(y_true, y_pred):
        t = tf_inverse(normaliser, y_true)
        d = (tf_inverse(normaliser, y_pred) - t) / g
        if kind == "sc_log":
            # per frame ||S - S'||² / ||S||²: every frame weighs the same, loud or quiet
            energy = tf.reduce_sum(tf.square(t / g), axis=-1)
            # ...down to QUIET_FLOOR of the batch's mean frame energy: below that a
            # near-silent frame's relative error would swamp the batch (and did: the
            # loss diverged within 5 epochs without the floor)
            floor = QUIET_FLOOR * tf.stop_gradient(tf.reduce_mean(energy))
            out = tf.reduce_sum(tf.square(d), axis=-1) / (energy + floor + 1e-12)
        else:
            out = tf.reduce_mean(tf.square(d), axis=-1)
        if w:
            out = out + w * tf.reduce_mean(tf.square(y_pred - y_true), axis=-1)
        if lam:
            # in the paper-unit scale of the batch's error, so lam is relative
            out = out + lam * tf.stop_gradient(tf.reduce_mean(out)) * parts_overlap(
                [tf.convert_to_tensor(k) for k in kernels], pool)
        if mu:
            z = None
            if on_data == "mean":  # generate mode's default: every unit at its mean
                z = tf.stop_gradient(tf.reduce_mean(encoder(y_true, training=False), axis=0,
                                                    keepdims=True))
            elif on_data:  # where the player meets the units: the batch's own activations
                z = tf.stop_gradient(encoder(y_true[:SWEEP_POINTS], training=False))
            out = out + mu * tf.stop_gradient(tf.reduce_mean(out)) * sweep_penalty(
                sweep_effects(decoder, n_units, sweep_pool, z=z), audible)
        if nu:  # the batch's own activations, with their gradient: the encoder learns it
            out = out + nu * tf.stop_gradient(tf.reduce_mean(out)) * spread_penalty(
                encoder(y_true, training=True), spread_std)
        return out

    return loss


def make_optimizer(recipe: dict[str, Any]):
    keras = _keras()
    if recipe["optimizer"] == "sgd":
        return keras.optimizers.SGD(learning_rate=recipe["learning_rate"],
                                    momentum=recipe.get("momentum", 0.0))
    if recipe["optimizer"] == "adam":
        # clipnorm: a few outlier batches must not throw the weights far (sc_log)
        return keras.optimizers.Adam(learning_rate=recipe["learning_rate"],
                                     clipnorm=recipe.get("clipnorm"))
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {recipe['optimizer']!r}")
