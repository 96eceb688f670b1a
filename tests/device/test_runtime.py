"""The TFLite interpreter wrapper (device/models/runtime.py) with the real ai_edge_litert."""

import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.models.bundle import read_bundle
from device.errors import ModelError, RuntimeUnavailable
from device.models.runtime import Model, load_runtime
from tests.device.bundles import FIXTURE

ROOT = Path(__file__).resolve().parents[2]


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


def test_a_missing_runtime_is_named_with_the_fix(monkeypatch):
    import device.models.runtime as rt

    monkeypatch.setitem(rt.RUNTIMES, "tflite_runtime", "no_such_module.interpreter")
    monkeypatch.setattr(rt, "_tried", {})
    with pytest.raises(RuntimeUnavailable, match=r"no_such_module.interpreter cannot be imported "
                                                 r".*pip install tflite-runtime 'numpy<2'"):
        load_runtime("tflite_runtime")


def test_each_runtime_is_probed_once_per_process(monkeypatch):
    import device.models.runtime as rt

    calls = []
    real = rt._import_and_probe
    monkeypatch.setattr(rt, "_tried", {})
    monkeypatch.setattr(rt, "_import_and_probe", lambda name: calls.append(name) or real(name))
    for _ in range(3):
        assert load_runtime("litert")[0] == "litert"
    assert calls == ["litert"]


# tflite-runtime 2.14 (the last release) was built against numpy 1; pip installs it beside
# numpy 2 all the same (the dev extra does, where its wheels exist), and then every model fails
# with "SystemError: ... returned a result with an exception set".
TFLITE_PAIR = sys.version_info < (3, 12) and platform.machine() == "x86_64"


def _aesynth(*args, runtime):
    env = {**os.environ, "AESYNTH_RUNTIME": runtime}
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)


@pytest.mark.skipif(not TFLITE_PAIR, reason="tflite-runtime 2.14 has wheels for x86_64 "
                                            "cp38..cp311 only (the dev extra installs it there)")
def test_tflite_runtime_with_numpy_2_is_one_line_naming_runtime_numpy_and_fix(tmp_path):
    assert importlib.util.find_spec("tflite_runtime") is not None, \
        "the dev extra installs tflite-runtime here: pip install -e '.[dev]'"
    if int(np.__version__.split(".")[0]) < 2:
        pytest.fail(f"this test is about numpy 2; the venv has numpy {np.__version__}")
    p = _aesynth("check", str(FIXTURE), runtime="tflite_runtime")
    assert p.returncode == 1
    assert "Traceback" not in p.stdout + p.stderr and "SystemError:" not in p.stderr
    line = p.stdout.strip()
    assert len(line.splitlines()) == 1, p.stdout
    assert f"{FIXTURE}: cannot test the models: TFLite runtime tflite-runtime 2.14.0 cannot run " \
           f"a model with numpy {np.__version__}" in line
    assert "pip install ai-edge-litert" in line and "'numpy<2'" in line
    # aesynth import must not blame a valid bundle for the machine's runtime.
    p = _aesynth("import", str(FIXTURE), "--models-dir", str(tmp_path / "models"),
                 runtime="tflite_runtime")
    out = p.stdout + p.stderr
    assert p.returncode == 1 and "Traceback" not in out
    assert "runtime: TFLite runtime tflite-runtime 2.14.0 cannot run a model with numpy" in out
    assert "model: loading or running" not in out


def test_close_is_idempotent_and_repr_shows_state(tiny):
    m = Model(tiny.decoder.content, name="decoder")
    assert "(1, 8)->(1, 1025)" in repr(m)
    m.close()
    m.close()
    assert "closed" in repr(m)
