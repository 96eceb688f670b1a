"""Export a trained run to TFLite and write a bundle the box can play.

Encoder and decoder are converted separately (generate mode runs the decoder
alone), with batch size 1 and float32 input/output tensors in every
quantisation: ``float32``, ``float16`` (weights), ``dynamic`` (int8 weights,
float activations) and ``int8`` (int8 weights and activations, quantise and
dequantise ops at the edges, calibrated on training frames).

Compatibility: tflite-runtime 2.14 (the fallback interpreter on systems
where ai-edge-litert has no wheel) cannot load the per-channel dynamic-range
FULLY_CONNECTED (version 12) that TF 2.21 writes by default, so per-channel
quantisation is disabled; :func:`op_versions` reads the operator versions
back so a test can hold them to :data:`TFLITE_RUNTIME_214_MAX`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from device.models.bundle import UnitStats
from device.errors import ExportError
from device.sound.features import FrameConfig
from device.models.runtime import Model
from train import metrics as M
from train.bundle_writer import write_bundle
from train.fit import PREDICT_BATCH, Run
from train.models import build

log = logging.getLogger(__name__)

EXPORT_QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
CALIBRATION_FRAMES = 500
# Builtin operator versions that tflite-runtime 2.14 was seen to load and run
# (every quantisation of our 1025-8 and 1025-256-8 models, exported here and
# run in a throwaway numpy<2 venv); FULLY_CONNECTED 12, TF 2.21's per-channel
# dynamic-range default, was refused there.  An op not listed is unverified.
TFLITE_RUNTIME_214_MAX = {"FULLY_CONNECTED": 9, "LOGISTIC": 2, "QUANTIZE": 1,
                          "DEQUANTIZE": 3}


def export_models(run: Run) -> tuple[Any, Any]:
    """Batch-1 copies of the run's encoder and decoder (same weights, no noise layer)."""
    auto, enc, dec = build(run.recipe, run.n_bins, batch_size=1)
    auto.set_weights(run.autoencoder.get_weights())
    return enc, dec


def convert(model, quantization: str, calibration: np.ndarray | None = None) -> bytes:
    """One Keras model as a .tflite flatbuffer with float32 input and output tensors."""
    if quantization not in EXPORT_QUANTIZATIONS:
        raise ExportError(f"quantization must be one of {', '.join(EXPORT_QUANTIZATIONS)}, "
                          f"got {quantization!r}")
    if quantization == "int8" and calibration is None:
        raise ExportError("int8 export needs calibration frames (a (frames, bins) array), "
                          "got None")
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv._experimental_disable_per_channel = True
    elif quantization == "int8":
        cal = np.asarray(calibration, np.float32)

        def frames():
            for row in cal:
                yield [row[None, :]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = frames
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.float32
        conv.inference_output_type = tf.float32
        conv._experimental_disable_per_channel = True
    return bytes(conv.convert())


def op_versions(content: bytes) -> dict[str, int]:
    """Builtin operator name -> highest version used in a .tflite flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(content, 0)
    out: dict[str, int] = {}
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = names.get(code, str(code))
        out[name] = max(out.get(name, 0), oc.Version())
    return out


def run_tflite(content: bytes, x: np.ndarray) -> np.ndarray:
    """Run a batch-1 model frame by frame through the device's runtime."""
    with Model(content, name="export") as m:
        out = np.empty((len(x), m.output_shape[-1]), np.float32)
        for i, row in enumerate(np.asarray(x, np.float32)):
            out[i] = m.run(row[None, :])[0]
    return out


def parity(keras_out: np.ndarray, tflite_out: np.ndarray) -> dict[str, float]:
    return {"max_abs_error": float(np.max(np.abs(keras_out - tflite_out))),
            "snr_db": M.snr_db(keras_out, tflite_out)}


def unit_stats(run: Run, mags: np.ndarray) -> UnitStats:
    """Per-unit min, max and mean of the encoder's activations on ``mags``."""
    a = run.encode(mags)
    return UnitStats(min=a.min(axis=0), max=a.max(axis=0), mean=a.mean(axis=0))


def export_pair(run: Run, quantization: str, calibration_mags: np.ndarray) -> tuple[bytes,
                                                                                   bytes]:
    """(encoder, decoder) .tflite bytes; ``calibration_mags`` are used by int8 only."""
    enc, dec = export_models(run)
    if quantization != "int8":
        return convert(enc, quantization), convert(dec, quantization)
    cal_x = run.features(calibration_mags[:CALIBRATION_FRAMES])
    cal_u = enc.predict(cal_x, batch_size=PREDICT_BATCH, verbose=0)
    return convert(enc, quantization, cal_x), convert(dec, quantization, cal_u)


def tflite_reconstruct(run: Run, enc: bytes, dec: bytes, mags: np.ndarray) -> np.ndarray:
    u = run_tflite(enc, run.features(mags))
    return run.normaliser.inverse(run_tflite(dec, u))


def export_bundle(run: Run, directory: str | os.PathLike, *, name: str, frame: FrameConfig,
                  quantization: str, train_mags: np.ndarray, test_mags: np.ndarray,
                  description: str = "", parity_frames: int = 200,
                  extra_training: dict | None = None,
                  canonical: bool = True) -> dict[str, Any]:
    """Convert, check parity, measure, and write a bundle; return the export report.

    The report (also stored in the manifest's training record) holds parity
    against Keras for the chosen quantisation, the test metrics of float32 and
    of the chosen quantisation through TFLite, and the spectral-convergence
    loss between them.  With ``canonical`` (the default) the units are first
    sign-flipped, ordered and labelled by :func:`train.canonical.canonicalize`
    (reconstruction unchanged); the manifest gets ``unit_labels`` and
    ``training.canonical``, and everything below measures the canonical model.
    """
    if frame.n_bins != run.n_bins:
        raise ExportError(f"frame must have the model's {run.n_bins} bins, got "
                          f"{frame.n_bins}")
    labels = None
    canon = None
    if canonical:
        from train.canonical import canonicalize

        run, labels, canon = canonicalize(run, train_mags, sample_rate=frame.sample_rate)
    report: dict[str, Any] = {"quantization": quantization}
    blobs = {q: export_pair(run, q, train_mags) for q in dict.fromkeys(("float32",
                                                                         quantization))}
    px = test_mags[:parity_frames]
    keras_u = run.encode(px)
    keras_y = run.decoder.predict(keras_u, batch_size=PREDICT_BATCH, verbose=0)
    enc_b, dec_b = blobs[quantization]
    report["parity"] = {"encoder": parity(keras_u, run_tflite(enc_b, run.features(px))),
                        "decoder": parity(keras_y, run_tflite(dec_b, keras_u))}
    report["op_versions"] = {"encoder": op_versions(enc_b), "decoder": op_versions(dec_b)}
    report["bytes"] = {"encoder": len(enc_b), "decoder": len(dec_b)}
    for q, (e, d) in blobs.items():
        report[f"test_{q}"] = M.spectral_metrics(test_mags, tflite_reconstruct(run, e, d,
                                                                               test_mags),
                                                 run.global_max)
    report["quantization_sc_loss_db"] = (report[f"test_{quantization}"]["sc_db"]
                                         - report["test_float32"]["sc_db"])
    stats = unit_stats(run, train_mags)
    training = run.record()
    training["export"] = report
    if canon is not None:
        training["canonical"] = canon
    if extra_training:
        training.update(extra_training)
    shipped = report[f"test_{quantization}"]
    # flat figures first: `aesynth check` shows the first four
    training["metrics"] = {"test_mse_paper": shipped["mse_paper"],
                           "test_sc_db": shipped["sc_db"], "test_lsd_db": shipped["lsd_db"],
                           "quantization_sc_loss_db": report["quantization_sc_loss_db"],
                           "tflite_test": shipped, "keras": run.metrics}
    write_bundle(directory, encoder=enc_b, decoder=dec_b, name=name, frame=frame,
                 normaliser=run.normaliser, units=run.units, quantization=quantization,
                 unit_stats=stats, training=training, description=description,
                 unit_labels=labels)
    # write_bundle(check=True) has run the device's own validator, models loaded and run
    log.info("wrote %s (%s): test sc %.2f dB, quantisation loss %.3f dB", directory,
             quantization, report[f"test_{quantization}"]["sc_db"],
             report["quantization_sc_loss_db"])
    return report


def compare_quantizations(run: Run, train_mags: np.ndarray, test_mags: np.ndarray,
                          quantizations: tuple[str, ...] = EXPORT_QUANTIZATIONS
                          ) -> dict[str, dict[str, Any]]:
    """Test metrics through TFLite, sizes and SC loss vs float32 for each quantisation."""
    out: dict[str, dict[str, Any]] = {}
    for q in quantizations:
        enc, dec = export_pair(run, q, train_mags)
        m = M.spectral_metrics(test_mags, tflite_reconstruct(run, enc, dec, test_mags),
                               run.global_max)
        out[q] = {**m, "bytes": len(enc) + len(dec),
                  "op_versions": {"encoder": op_versions(enc), "decoder": op_versions(dec)}}
    if "float32" in out:
        for q in out:
            out[q]["sc_loss_db"] = out[q]["sc_db"] - out["float32"]["sc_db"]
    return out
