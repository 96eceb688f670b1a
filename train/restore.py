"""Trainable weights from a bundle: read the dense layers back out of its TFLite models.

A bundle ships no Keras checkpoint, only ``encoder.tflite`` and
``decoder.tflite`` (float32, float16, dynamic-range int8 or full int8) and a
manifest recording the recipe.  Every model our export writes is a chain of
FULLY_CONNECTED operators (plus activations); each one's weights and bias
are constant tensors, stored as float32, as float16 behind a DEQUANTIZE
operator (``float16`` export), or as int8 with a scale and zero point
(``dynamic``, ``int8``).  :func:`dense_layers` reads them straight from the
flatbuffer with TensorFlow's generated schema reader (the same one
:func:`train.export.op_versions` uses), dequantises them, and
:func:`restore_run` loads them into a Keras model built from the manifest's
recipe.  The restored model is then run beside the bundle's own TFLite
models on test frames (:func:`parity`): a wrong mapping cannot pass silently.

What is lost: float16 and int8 storage rounded the trained weights (float16:
about 3 significant digits), so fine-tuning starts from the shipped model,
not from the float32 run it was exported from; the optimiser's state is not
in a bundle either, so Adam starts fresh.  The normaliser is the bundle's:
its first and last layers expect those features.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.errors import ExportError
from device.models.bundle import Bundle, read_bundle
from device.sound.features import Normaliser

log = logging.getLogger(__name__)

PARITY_FRAMES = 64
PARITY_MIN_SNR_DB = 30.0  # restored Keras vs the bundle's TFLite, on its units and output


@dataclass(frozen=True)
class Dense:
    """One FULLY_CONNECTED layer: ``kernel`` (inputs, outputs) as Keras holds it."""

    name: str
    kernel: np.ndarray
    bias: np.ndarray


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


def _tensor_array(model, graph, index: int, producers: dict[int, Any]) -> np.ndarray:
    """The constant value of tensor ``index`` as float32, following a DEQUANTIZE."""
    schema = _schema()
    t = graph.Tensors(index)
    buf = model.Buffers(t.Buffer())
    shape = tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    if buf is None or buf.DataLength() == 0:
        op = producers.get(index)
        if op is None:
            raise ExportError(f"tensor {t.Name().decode()!r} is neither a constant nor "
                              f"computed by DEQUANTIZE; cannot read its weights")
        return _tensor_array(model, graph, op.Inputs(0), producers)
    raw = buf.DataAsNumpy().tobytes()
    types = schema.TensorType
    if t.Type() == types.FLOAT32:
        a = np.frombuffer(raw, np.float32)
    elif t.Type() == types.FLOAT16:
        a = np.frombuffer(raw, np.float16).astype(np.float32)
    elif t.Type() in (types.INT8, types.INT32):
        q = np.frombuffer(raw, np.int8 if t.Type() == types.INT8 else np.int32)
        qp = t.Quantization()
        if qp is None or qp.ScaleLength() == 0:
            raise ExportError(f"tensor {t.Name().decode()!r} is integer without a scale")
        scale = qp.ScaleAsNumpy().astype(np.float32)
        zero = qp.ZeroPointAsNumpy().astype(np.float32) if qp.ZeroPointLength() else 0.0
        q = q.astype(np.float32).reshape(shape)
        if scale.size > 1:  # per-channel: along the quantised dimension
            axis = qp.QuantizedDimension()
            bshape = [1] * len(shape)
            bshape[axis] = -1
            scale = scale.reshape(bshape)
            zero = np.reshape(zero, bshape) if np.size(zero) > 1 else zero
        return ((q - zero) * scale).astype(np.float32)
    else:
        raise ExportError(f"tensor {t.Name().decode()!r} has TFLite type {t.Type()}, "
                          f"not float32, float16, int8 or int32")
    return a.reshape(shape).astype(np.float32)


def dense_layers(content: bytes) -> list[Dense]:
    """The FULLY_CONNECTED layers of a .tflite model in execution order.

    Raises :class:`ExportError` for a model with another shape of graph
    (more than one subgraph, a weight that is not a constant).
    """
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(content, 0)
    if model.SubgraphsLength() != 1:
        raise ExportError(f"expected one subgraph, found {model.SubgraphsLength()}")
    g = model.Subgraphs(0)
    ops = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        oc = model.OperatorCodes(op.OpcodeIndex())
        ops.append((names.get(max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()), "?"), op))
    producers = {op.Outputs(0): op for name, op in ops if name == "DEQUANTIZE"}
    layers = []
    for name, op in ops:
        if name != "FULLY_CONNECTED":
            continue
        w = _tensor_array(model, g, op.Inputs(1), producers)  # (outputs, inputs)
        if op.InputsLength() > 2 and op.Inputs(2) >= 0:
            b = _tensor_array(model, g, op.Inputs(2), producers)
        else:
            b = np.zeros(w.shape[0], np.float32)
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise ExportError(f"FULLY_CONNECTED weights {w.shape} and bias {b.shape} do not "
                              f"make a dense layer")
        layers.append(Dense(g.Tensors(op.Inputs(1)).Name().decode(), w.T.copy(), b.copy()))
    if not layers:
        raise ExportError("no FULLY_CONNECTED layer found: not a model aesynth exported")
    return layers


def _keras_dense(model) -> list[Any]:
    from train.fit import _dense_layers

    return [layer for layer in _dense_layers(model) if len(layer.get_weights()) == 2]


def restore_run(bundle_path: str | os.PathLike, *, frames: np.ndarray | None = None):
    """(Run, recipe) rebuilt from a bundle's manifest recipe and its TFLite weights.

    ``frames`` (linear magnitudes, (n, bins)) are used to check the restored
    Keras model against the bundle's TFLite models (:func:`parity`); test
    frames of the bundle's own size are made up when None.  Raises
    :class:`ExportError` when the bundle records no recipe, its layers do not
    match the recipe's model, or the restored model disagrees with the bundle.
    """
    from train.fit import Run
    from train.models import build

    bundle = read_bundle(bundle_path)
    training = bundle.manifest.get("training") or {}
    recipe = training.get("recipe")
    if not isinstance(recipe, dict) or "hidden" not in recipe:
        raise ExportError(f"bundle {os.fspath(bundle_path)!r} records no training recipe "
                          f"(manifest training.recipe); cannot rebuild a trainable model")
    auto, enc, dec = build(recipe, bundle.n_bins)
    for part, content, keras_model in (("encoder", bundle.encoder.content, enc),
                                       ("decoder", bundle.decoder.content, dec)):
        found = dense_layers(content)
        wanted = _keras_dense(keras_model)
        if len(found) != len(wanted):
            raise ExportError(f"bundle {bundle.name!r} {part} has {len(found)} dense layers, "
                              f"its recipe builds {len(wanted)}")
        for layer, d in zip(wanted, found, strict=True):
            k, b = layer.get_weights()
            if k.shape != d.kernel.shape or b.shape != d.bias.shape:
                raise ExportError(f"bundle {bundle.name!r} {part} layer {layer.name}: "
                                  f"recipe wants {k.shape}, the model holds {d.kernel.shape}")
            layer.set_weights([d.kernel, d.bias])
    g = training.get("global_max")
    run = Run(dict(recipe), int(training.get("seed", 0)), bundle.normaliser,
              float(g) if isinstance(g, (int, float)) and g > 0 else 1.0,
              bundle.n_bins, auto, enc, dec)
    check = parity(run, bundle, frames)
    if min(check["encoder_snr_db"], check["decoder_snr_db"]) < PARITY_MIN_SNR_DB:
        raise ExportError(f"weights restored from bundle {bundle.name!r} disagree with its "
                          f"TFLite models: encoder {check['encoder_snr_db']:.1f} dB, decoder "
                          f"{check['decoder_snr_db']:.1f} dB SNR, need >= "
                          f"{PARITY_MIN_SNR_DB:g} dB")
    log.info("restored %s from %s: parity %s", recipe.get("name"), bundle_path, check)
    return run, bundle, check


def parity(run, bundle: Bundle, frames: np.ndarray | None) -> dict[str, float]:
    """SNR (dB) of the restored Keras encoder and decoder against the bundle's TFLite."""
    from train import metrics as M
    from train.export import run_tflite
    from train.fit import PREDICT_BATCH

    if frames is None or len(frames) == 0:
        rng = np.random.default_rng(0)
        frames = np.exp(rng.normal(-2.0, 2.0, (PARITY_FRAMES, bundle.n_bins)))
    x = run.features(np.asarray(frames[:PARITY_FRAMES], np.float32))
    u_keras = run.encoder.predict(x, batch_size=PREDICT_BATCH, verbose=0)
    u_tfl = run_tflite(bundle.encoder.content, x)
    y_keras = run.decoder.predict(u_tfl, batch_size=PREDICT_BATCH, verbose=0)
    y_tfl = run_tflite(bundle.decoder.content, u_tfl)
    return {"encoder_snr_db": M.snr_db(u_tfl, u_keras), "decoder_snr_db": M.snr_db(y_tfl, y_keras),
            "frames": int(len(x))}


__all__ = ["Dense", "dense_layers", "restore_run", "parity", "Normaliser"]
