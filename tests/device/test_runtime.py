"""The TFLite interpreter wrapper (device/models/runtime.py) with the real ai_edge_litert."""

import importlib.util

import numpy as np
import pytest

from device.models.bundle import read_bundle
from device.errors import ModelError, RuntimeUnavailable
from device.models.runtime import Model, load_runtime
from tests.device.bundles import FIXTURE


@pytest.fixture(scope="module")
def tiny():
    return read_bundle(FIXTURE, check_models=False)


def test_runs_the_encoder_into_a_preallocated_buffer(tiny):
    with Model(tiny.encoder.content, name="encoder") as m:
        assert m.runtime == "litert"
        assert m.input_shape == (1, 1025) and m.output_shape == (1, 8)
        x = np.random.default_rng(0).uniform(size=(1, 1025)).astype(np.float32)
        out = np.zeros((1, 8), np.float32)
        assert m.run(x, out=out) is out
        assert np.all((out > 0) & (out < 1))  # sigmoid units
        np.testing.assert_array_equal(m.run(x), out)  # deterministic


def test_encoder_matches_its_own_weights_in_numpy(tiny):
    """Round trip through the decoder equals the composition of both models."""
    x = np.random.default_rng(1).uniform(size=(1, 1025)).astype(np.float32)
    with Model(tiny.encoder.content) as enc, Model(tiny.decoder.content) as dec:
        h = enc.run(x)
        y = dec.run(h)
        y2 = dec.run(enc.run(x))
    np.testing.assert_array_equal(y, y2)
    assert y.shape == (1, 1025) and np.all(np.isfinite(y))


def test_garbage_is_a_model_error():
    with pytest.raises(ModelError, match="junk: TFLite could not load the model"):
        Model(b"\x00" * 64, name="junk")


def test_unknown_runtime_names_the_choices():
    with pytest.raises(RuntimeUnavailable, match="runtime must be one of litert, tflite_runtime, "
                                                 "got 'onnx'"):
        load_runtime("onnx")


def test_runtime_from_environment(monkeypatch):
    monkeypatch.setenv("AESYNTH_RUNTIME", "litert")
    assert load_runtime()[0] == "litert"


def test_tflite_runtime_fallback_is_reported_honestly():
    """tflite_runtime needs numpy<2, so it is absent here; where it exists it must load."""
    if importlib.util.find_spec("tflite_runtime") is None:
        with pytest.raises(RuntimeUnavailable, match="tflite_runtime.interpreter"):
            load_runtime("tflite_runtime")
    else:  # pragma: no cover - only on a box with tflite-runtime installed
        assert load_runtime("tflite_runtime")[0] == "tflite_runtime"


def test_close_is_idempotent_and_repr_shows_state(tiny):
    m = Model(tiny.decoder.content, name="decoder")
    assert "(1, 8)->(1, 1025)" in repr(m)
    m.close()
    m.close()
    assert "closed" in repr(m)
