"""The TFLite interpreter: ai_edge_litert first, tflite_runtime as the fallback.

``AESYNTH_RUNTIME`` picks one (``litert`` or ``tflite_runtime``); unset, the
first that imports *and runs* wins and a fallback is logged.  A runtime that
imports can still be unusable (tflite-runtime 2.14 was built against numpy 1:
with numpy 2 every model fails with a SystemError), so each is tried once per
process on a shipped probe model (``probe.tflite``: y = 2x + 1 on a (1, 4)
float32 tensor) and the answer is kept.  A :class:`Model` owns one
interpreter with one input and one output tensor and runs it without
allocating: the engine calls :meth:`Model.run` every hop.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from device.console import quiet_native_stderr
from device.errors import ModelError, RuntimeUnavailable

log = logging.getLogger(__name__)

# name -> module holding an ``Interpreter`` class
RUNTIMES = {
    "litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
}
# name -> the pip distribution that provides it (for messages)
DISTRIBUTIONS = {"litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}
_ENV = "AESYNTH_RUNTIME"
PROBE_MODEL = Path(__file__).with_name("probe.tflite")
# runtime name -> (module, None) when usable, (None, why not) when not: tried once per process
_tried: dict[str, tuple[Any, str | None]] = {}
_tried_lock = threading.Lock()


def load_runtime(name: str | None = None) -> tuple[str, Any]:
    """Import an interpreter module that works; return (runtime name, module).

    ``name`` (or $AESYNTH_RUNTIME) forces one; otherwise the first in
    :data:`RUNTIMES` that imports and runs the probe model is used (a fallback
    is logged).  Raises RuntimeUnavailable naming each runtime tried, why it
    is unusable (with numpy's version) and the fix.
    """
    name = name or os.environ.get(_ENV) or None
    if name is not None and name not in RUNTIMES:
        raise RuntimeUnavailable(
            f"runtime must be one of {', '.join(RUNTIMES)}, got {name!r} (from ${_ENV} "
            f"or the config)"
        )
    candidates = [name] if name else list(RUNTIMES)
    errors = []
    for i, cand in enumerate(candidates):
        module, why = _try_runtime(cand)
        if module is None:
            errors.append(why)
            continue
        if i > 0:
            log.warning("TFLite runtime %s unusable (%s); using %s", candidates[0],
                        errors[0], cand)
        return cand, module
    if len(errors) == 1:
        raise RuntimeUnavailable(errors[0])
    raise RuntimeUnavailable(
        "no usable TFLite interpreter; install ai-edge-litert (pip install ai-edge-litert): "
        + "; ".join(errors)
    )


def _try_runtime(name: str) -> tuple[Any, str | None]:
    """(module, None) when runtime ``name`` imports and runs the probe; else (None, why)."""
    with _tried_lock:
        if name not in _tried:
            _tried[name] = _import_and_probe(name)
        return _tried[name]


def _import_and_probe(name: str) -> tuple[Any, str | None]:
    dist = DISTRIBUTIONS[name]
    try:
        module = importlib.import_module(RUNTIMES[name])
    except ImportError as e:
        return None, (f"{RUNTIMES[name]} cannot be imported ({e}): pip install {dist}"
                      + (" 'numpy<2'" if name == "tflite_runtime" else ""))
    why = _probe(module)
    if why is None:
        return module, None
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "(version unknown)"
    if name == "tflite_runtime" and int(np.__version__.split(".")[0]) >= 2:
        fix = (f"tflite-runtime was built for numpy 1: install ai-edge-litert (pip install "
               f"ai-edge-litert), or pip install 'numpy<2' for {dist}")
    else:
        fix = f"reinstall it (pip install --force-reinstall {dist}) or install ai-edge-litert"
    return None, (f"TFLite runtime {dist} {version} cannot run a model with numpy "
                  f"{np.__version__} ({why}); {fix}")


def _probe(module: Any) -> str | None:
    """None when ``module``'s Interpreter runs the probe model right; else why not, one line."""
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    # numpy writes a page of advice and a stack to sys.stderr when a module built for numpy 1
    # asks for its C API: the message below says the same in one line.
    noise = io.StringIO()
    try:
        # quiet_native_stderr: the interpreter's own "INFO: Created ... XNNPACK delegate"
        # goes to fd 2 from C++, past redirect_stderr (test_console caught it after the merge)
        with quiet_native_stderr(), contextlib.redirect_stderr(noise):
            interp = module.Interpreter(model_content=PROBE_MODEL.read_bytes(), num_threads=1)
            interp.allocate_tensors()
            interp.set_tensor(interp.get_input_details()[0]["index"], x)
            interp.invoke()
            y = np.array(interp.get_tensor(interp.get_output_details()[0]["index"]))
    except Exception as e:  # SystemError, AttributeError, RuntimeError: the runtime is broken
        first = (str(e).strip().splitlines() or [""])[0]
        return f"{type(e).__name__}: {first[:200]}"
    if y.shape != x.shape or not np.allclose(y, 2.0 * x + 1.0):
        return f"the probe model computed {y.ravel().tolist()}, expected [1, 3, 5, 7]"
    return None


class Model:
    """One TFLite model with a single float input and a single float output.

    ``content`` is the .tflite flatbuffer (bytes, read and checked by the
    bundle code).  ``num_threads`` defaults to 1: on the Pi more threads only
    add jitter to a 1-frame inference.
    """

    def __init__(self, content: bytes, *, name: str = "model", num_threads: int = 1,
                 runtime: str | None = None):
        self.name = name
        self.runtime, module = load_runtime(runtime)
        try:
            with quiet_native_stderr():  # LiteRT's "INFO: Created ... XNNPACK delegate"
                self._interp = module.Interpreter(model_content=bytes(content),
                                                  num_threads=num_threads)
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{name}: TFLite could not load the model: {e}") from None
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelError(f"{name}: must have exactly 1 input and 1 output tensor, "
                             f"has {len(ins)} and {len(outs)}")
        self._in, self._out = ins[0], outs[0]
        for role, det in (("input", self._in), ("output", self._out)):
            if det["dtype"] != np.float32:
                raise ModelError(f"{name}: {role} tensor must be float32 (quantise inside "
                                 f"the model), got {np.dtype(det['dtype']).name}")
        self.input_shape = tuple(int(v) for v in self._in["shape"])
        self.output_shape = tuple(int(v) for v in self._out["shape"])
        self._in_view = self._interp.tensor(self._in["index"])
        self._out_view = self._interp.tensor(self._out["index"])
        self._closed = False

    def run(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Run one inference; ``x`` and ``out`` have the model's tensor shapes.

        Real-time safe: copies into and out of the interpreter's own buffers.
        The views are fetched fresh each call because the interpreter refuses
        to invoke while a numpy view into it is alive.
        """
        self._in_view()[...] = x
        self._interp.invoke()
        if out is None:
            return self._out_view().copy()
        out[...] = self._out_view()
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._in_view = self._out_view = None
            self._interp = None

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.input_shape}->{self.output_shape}"
        return f"<Model {self.name!r} {state} on {self.runtime}>"
