"""Train autoencoders on a :class:`train.data.Dataset` and record every run.

A run directory holds ``run.json`` (recipe, seed, normaliser, data, curves,
metrics, wall time) and ``model.weights.h5`` (Keras weights; no pickles), so
``export`` can rebuild the model from its recipe and load the weights.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import ConfigError, FitError
from device.sound.features import LOG_FEATURE_FLOOR, Normaliser
from train import metrics as M
from train.data import Dataset
from train.models import PAPER_RECIPE, build, make_loss, make_optimizer, recipe_with

log = logging.getLogger(__name__)
PREDICT_BATCH = 2048


@dataclass
class Run:
    """A trained model with everything needed to reproduce, judge and export it."""

    recipe: dict[str, Any]
    seed: int
    normaliser: Normaliser
    global_max: float
    n_bins: int
    autoencoder: Any
    encoder: Any
    decoder: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def units(self) -> int:
        return int(self.recipe["hidden"][-1])

    def features(self, mags: np.ndarray) -> np.ndarray:
        return self.normaliser.forward(mags).astype(np.float32)

    def encode(self, mags: np.ndarray) -> np.ndarray:
        return self.encoder.predict(self.features(mags), batch_size=PREDICT_BATCH, verbose=0)

    def reconstruct(self, mags: np.ndarray) -> np.ndarray:
        """Linear magnitudes in, linear magnitudes out (normaliser applied both ways)."""
        y = self.autoencoder.predict(self.features(mags), batch_size=PREDICT_BATCH, verbose=0)
        return self.normaliser.inverse(y)

    def evaluate(self, mags: np.ndarray) -> dict[str, float]:
        return M.spectral_metrics(mags, self.reconstruct(mags), self.global_max)

    def record(self) -> dict[str, Any]:
        """The JSON-able training record (goes into run.json and bundle manifests)."""
        return {"recipe": self.recipe, "seed": self.seed, "global_max": self.global_max,
                "data": self.data, "history": self.history, "metrics": self.metrics,
                "seconds": round(self.seconds, 1)}


def set_threads(n: int = 2) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised: keep what is there
        pass


def data_record(ds: Dataset) -> dict[str, Any]:
    return {"counts": ds.manifest.get("counts"), "seed": ds.manifest.get("seed"),
            "frame": ds.manifest.get("frame"), "sources": ds.manifest.get("sources"),
            "tracks": {s: ds.tracks(s) for s in ("train", "valid", "test")},
            "paths": {s: [t["path"] for t in ds.manifest["tracks"] if t["split"] == s]
                      for s in ("train", "valid", "test")}}


def _fit_keras(model, x, y, xv, yv, recipe, loss, verbose: int,
               extra_callbacks=()) -> dict[str, list[float]]:
    import keras

    model.compile(optimizer=make_optimizer(recipe), loss=loss)
    # a non-finite batch loss ends the fit at once: nothing after it can be kept (fit())
    callbacks = [*extra_callbacks, keras.callbacks.TerminateOnNaN()]
    if recipe.get("patience"):
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=int(recipe["patience"]), restore_best_weights=True))
    h = model.fit(x, y, validation_data=(xv, yv), batch_size=int(recipe["batch_size"]),
                  epochs=int(recipe["epochs"]), shuffle=True, callbacks=callbacks,
                  verbose=verbose)
    return {k: [float(v) for v in vals] for k, vals in h.history.items()}


def fit(ds: Dataset, recipe: dict[str, Any], *, seed: int = 0, verbose: int = 0,
        start: Run | None = None, callbacks=()) -> Run:
    """Train ``recipe`` on ``ds``; greedy layer-wise when ``recipe['greedy']``.

    ``start``: fine-tune from that run's weights and keep its normaliser (its
    first and last layers expect those features; ``train.restore`` makes one
    from a bundle); when no epoch beats the start's validation loss the start's
    weights are kept (``metrics['kept_start']``).  ``callbacks``: extra Keras callbacks.
    """
    import keras

    set_threads()
    keras.utils.set_random_seed(seed)
    t0 = time.monotonic()
    global_max = float(ds.train.max())
    normaliser = (start.normaliser if start is not None
                  else Normaliser.fit(ds.train, kind=recipe["features"],
                                      floor=feature_floor(recipe, global_max)))
    n_bins = ds.frame.n_bins
    x = normaliser.forward(ds.train).astype(np.float32)
    xv = normaliser.forward(ds.valid).astype(np.float32)
    if recipe.get("augment_db"):
        x = np.concatenate([x, normaliser.forward(
            augment_levels(ds.train, recipe["augment_db"], seed=seed)).astype(np.float32)])
    auto, enc, dec = build(recipe, n_bins)
    if start is not None:
        auto.set_weights(start.autoencoder.get_weights())
    history: dict[str, list[float]] = {}
    extra: dict[str, Any] = {}
    if recipe.get("greedy") and len(recipe["hidden"]) == 2 and start is None:
        history, extra = _greedy_pretrain(auto, recipe, x, xv, normaliser, global_max, n_bins,
                                          verbose)
        extra["composed_valid"] = _quick(auto, ds.valid, normaliser, global_max)
    loss = make_loss(recipe, normaliser, global_max, decoder=dec, encoder=enc,
                     sample_rate=ds.frame.sample_rate)
    start_val = None
    if start is not None:  # the starting point's own validation loss, to beat
        auto.compile(optimizer=make_optimizer(recipe), loss=loss)
        start_val = float(auto.evaluate(xv, xv, batch_size=int(recipe["batch_size"]),
                                        verbose=0))
    h = _fit_keras(auto, x, x, xv, xv, recipe, loss, verbose, callbacks)
    # A diverged fit leaves NaN losses and weights; min() of NaNs is NaN and compares
    # False, which once kept a fine-tuning's NaN weights as if they had beaten the start.
    finite = [v for v in h.get("val_loss", []) if math.isfinite(v)]
    diverged = (len(finite) < len(h.get("loss", [])) or
                not all(np.all(np.isfinite(w)) for w in auto.get_weights()))
    if start_val is not None:
        extra["start_val_loss"] = start_val
        extra["kept_start"] = diverged or not finite or min(finite) >= start_val
        if extra["kept_start"]:  # no epoch beat where we started: keep the start
            log.info("fine-tuning %s the start's validation loss %.4g: kept it",
                     "diverged (non-finite loss) from" if diverged else "never beat",
                     start_val)
            auto.set_weights(start.autoencoder.get_weights())
    elif diverged:
        raise FitError(f"fit {recipe.get('name')!r} diverged: non-finite loss or weights after "
                       f"{len(h.get('loss', []))} epoch(s) at learning_rate "
                       f"{recipe.get('learning_rate')}; lower it (--set learning_rate=...)")
    history.update({("finetune_" + k if recipe.get("greedy") else k): v for k, v in h.items()})
    run = Run(recipe, seed, normaliser, global_max, n_bins, auto, enc, dec, history=history,
              data=data_record(ds))
    run.metrics = {"valid": run.evaluate(ds.valid), "test": run.evaluate(ds.test), **extra,
                   "epochs_run": len(h.get("loss", []))}
    run.seconds = time.monotonic() - t0
    log.info("fit %s: valid mse %.3g, test mse %.3g (%.0f s)", recipe.get("name"),
             run.metrics["valid"]["mse_paper"], run.metrics["test"]["mse_paper"], run.seconds)
    return run


def augment_levels(mags: np.ndarray, range_db, *, seed: int) -> np.ndarray:
    """A copy of ``mags`` (frames x bins), each frame at a random gain in ``range_db``.

    Gains are uniform in dB between the two bounds (e.g. ``[-24, 6]``): a
    player's line-in is rarely as hot as a mastered record, and an encoder
    that only saw mastered levels maps quiet input onto the wrong units.
    """
    lo, hi = (float(v) for v in range_db)
    if not lo <= hi:
        raise ValueError(f"augment_db must be [low, high] with low <= high, got {range_db!r}")
    rng = np.random.default_rng(seed + 7)
    gains = 10.0 ** (rng.uniform(lo, hi, size=(len(mags), 1)) / 20.0)
    return (mags * gains).astype(np.float32)


def _quick(auto, mags, normaliser, global_max) -> dict[str, float]:
    y = auto.predict(normaliser.forward(mags).astype(np.float32), batch_size=PREDICT_BATCH,
                     verbose=0)
    return M.spectral_metrics(mags, normaliser.inverse(y), global_max)


def _greedy_pretrain(auto, recipe, x, xv, normaliser, global_max, n_bins, verbose):
    """The paper's stacking: a shallow AE, then a second AE on its hidden layer.

    Stage 1 is ``hidden[0]`` units (sigmoid) with a linear output; stage 2
    maps those activations through ``hidden[1]`` units back to themselves,
    sigmoid on both sides.  Their layers are copied into ``auto`` (the
    composed deep model), which the caller then finetunes.
    """
    h1, h2 = (int(v) for v in recipe["hidden"])
    r1 = recipe_with(recipe, hidden=[h1], bottleneck=recipe["activation"])
    a1, e1, _ = build(r1, n_bins)
    curves = {}
    hist = _fit_keras(a1, x, x, xv, xv, r1, make_loss(r1, normaliser, global_max), verbose)
    curves.update({"stage1_" + k: v for k, v in hist.items()})
    act = e1.predict(x, batch_size=PREDICT_BATCH, verbose=0)
    actv = e1.predict(xv, batch_size=PREDICT_BATCH, verbose=0)
    # the second AE: sigmoid encoder and (unlike stage 1) sigmoid output
    r2 = recipe_with(recipe, hidden=[h2], noise=recipe.get("noise", 0.0))
    a2, _, _ = _build_second(r2, h1)
    hist = _fit_keras(a2, act, act, actv, actv, r2, "mse", verbose)
    curves.update({"stage2_" + k: v for k, v in hist.items()})
    stage2_mse = float(np.mean((a2.predict(actv, batch_size=PREDICT_BATCH, verbose=0)
                                - actv) ** 2))
    # copy into the composed model: enc1, enc2 | dec2, dec1
    by_name = {layer.name: layer for layer in _dense_layers(auto)}
    s1 = {layer.name: layer for layer in _dense_layers(a1)}
    s2 = {layer.name: layer for layer in _dense_layers(a2)}
    by_name["enc1"].set_weights(s1["enc1"].get_weights())
    by_name["dec1"].set_weights(s1["dec1"].get_weights())
    by_name["enc2"].set_weights(s2["enc1"].get_weights())
    by_name["dec2"].set_weights(s2["dec1"].get_weights())
    return curves, {"stage2_valid_mse": stage2_mse,
                    "stage2_valid_mse_adjusted": stage2_mse * n_bins / h1}


def _build_second(recipe, n_in):
    import keras

    x_in = keras.Input((n_in,))
    z = x_in
    if recipe.get("noise"):
        z = keras.layers.GaussianNoise(float(recipe["noise"]))(z)
    h = keras.layers.Dense(int(recipe["hidden"][0]), activation=recipe["bottleneck"],
                           name="enc1")(z)
    y = keras.layers.Dense(n_in, activation=recipe["activation"], name="dec1")(h)
    return keras.Model(x_in, y), None, None


def _dense_layers(model):
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            out.extend(_dense_layers(layer))
        elif layer.weights:
            out.append(layer)
    return out


# -- run directories ------------------------------------------------------------------
def save_run(run: Run, directory: str | os.PathLike) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    run.autoencoder.save_weights(d / "model.weights.h5")
    doc = run.record()
    doc["normaliser"] = run.normaliser.to_dict()
    doc["n_bins"] = run.n_bins
    (d / "run.json").write_text(json.dumps(doc, indent=1) + "\n")
    return d


def load_run(directory: str | os.PathLike) -> Run:
    d = Path(directory)
    doc = json.loads((d / "run.json").read_text())
    auto, enc, dec = build(doc["recipe"], int(doc["n_bins"]))
    auto.load_weights(d / "model.weights.h5")
    return Run(doc["recipe"], doc["seed"], Normaliser.from_dict(doc["normaliser"]),
               float(doc["global_max"]), int(doc["n_bins"]), auto, enc, dec,
               history=doc["history"], metrics=doc["metrics"], data=doc["data"],
               seconds=float(doc.get("seconds", 0.0)))


def feature_floor(recipe: dict[str, Any], global_max: float) -> float:
    """The log features' floor in magnitude units: ``recipe['log_floor']`` times the
    training maximum, or the normaliser's own (``LOG_FEATURE_FLOOR``) when the recipe
    leaves it out.  Raises ConfigError for a value outside (0, 1)."""
    rel = recipe.get("log_floor")
    if rel is None:
        return LOG_FEATURE_FLOOR
    if not (isinstance(rel, (int, float)) and 0 < float(rel) < 1):
        raise ConfigError(f"log_floor must be a number in (0, 1) (a fraction of the training "
                         f"maximum), got {rel!r}")
    return float(rel) * float(global_max)


# Recipes beyond the paper, named for the CLI.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": PAPER_RECIPE,
    "paper-deep": recipe_with(PAPER_RECIPE, name="paper-deep", hidden=[256, 8], greedy=True),
    "adam-max": recipe_with(PAPER_RECIPE, name="adam-max", optimizer="adam",
                            learning_rate=1e-3, epochs=60, patience=6, batch_size=64),
    "adam-log-paperloss": recipe_with(PAPER_RECIPE, name="adam-log-paperloss",
                                      features="standard", optimizer="adam",
                                      learning_rate=1e-3, epochs=60, patience=6,
                                      batch_size=64, loss="paper"),
    "deep-relu": recipe_with(PAPER_RECIPE, name="deep-relu", hidden=[256, 8],
                             activation="relu", optimizer="adam", learning_rate=1e-3,
                             epochs=60, patience=6, batch_size=64),
}
# The recipe models/default ships: among the 8-unit runs of docs/training.md it
# has nearly the lowest validation MSE in the paper's units (within 8% of the
# pure-MSE winner) and half the log-spectral distance, so quiet partials survive.
RECIPES["best"] = recipe_with(RECIPES["deep-relu"], name="best", features="standard",
                              loss="mixed", feature_weight=3e-5, epochs=100, patience=8)
# Parts-based: a deeper encoder, a monotone decoder (non-negative kernels,
# increasing activations: raising a unit never lowers a bin), parts pushed
# apart, and every frame also seen 24 dB quieter to 6 dB louder.
RECIPES["parts"] = recipe_with(RECIPES["best"], name="parts", hidden=[512, 256, 8],
                               decoder_hidden=[256], monotone=True, decorrelate=0.5,
                               augment_db=[-24.0, 6.0])
# The same encoder with a free (unconstrained) decoder: what monotonicity costs.
RECIPES["deep-free"] = recipe_with(RECIPES["best"], name="deep-free", hidden=[512, 256, 8],
                                   decoder_hidden=[256, 512], augment_db=[-24.0, 6.0])
# Level-free loss: per-frame spectral convergence plus the log-magnitude error.
# models/default (feature_weight 1.5, selected by the rule in docs/training.md);
# models/wide16 is this recipe with hidden=[512, 256, 16] and feature_weight 0.5.
RECIPES["parts-sc"] = recipe_with(RECIPES["parts"], name="parts-sc", loss="sc_log",
                                  feature_weight=1.5, decorrelate=3.0, batch_size=128,
                                  epochs=45, patience=5, clipnorm=1.0)
# parts-sc with the parts pushed apart in 1/3-octave bands (where "distinct controls" is
# measured) and the log-magnitude term weighted up (the LSD margin over PCA was the thin one).
RECIPES["parts-band"] = recipe_with(RECIPES["parts-sc"], name="parts-band", overlap_bands=True,
                                    feature_weight=2.0)
# parts-sc with the parts pushed apart where the report measures them: on the decoder's
# own sweeps (unit j at 0 vs its value, at random points), with a floor that keeps
# every unit audible (parts-band let one unit fall silent); no kernel penalty.
# models/default (2026-11-30) is this, then `fit --start` 25 epochs more with
# audible_db=8 and learning_rate=0.0005 (docs/training.md).
RECIPES["parts-sweep"] = recipe_with(RECIPES["parts-sc"], name="parts-sweep", decorrelate=0.0,
                                     sweep_parts=3.0, audible_db=4.0)
DEFAULT_RECIPE = "parts-sweep"  # fit's and `new --scratch`'s: models/default's first stage
RECIPES["free-sc"] = recipe_with(RECIPES["deep-free"], name="free-sc", loss="sc_log",
                                 feature_weight=0.5, batch_size=128, epochs=45, patience=5,
                                 clipnorm=1.0)
