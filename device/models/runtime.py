"""The TFLite interpreter: ai_edge_litert first, tflite_runtime as the fallback.

``AESYNTH_RUNTIME`` picks one (``litert`` or ``tflite_runtime``); unset, the
first that imports wins and a fallback is logged.  A :class:`Model` owns one
interpreter with one input and one output tensor and runs it without
allocating: the engine calls :meth:`Model.run` every hop.
"""

from __future__ import annotations

import importlib
import logging
import os
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
_ENV = "AESYNTH_RUNTIME"


def load_runtime(name: str | None = None) -> tuple[str, Any]:
    """Import an interpreter module; return (runtime name, module).

    ``name`` (or $AESYNTH_RUNTIME) forces one; otherwise the first in
    :data:`RUNTIMES` that imports is used.
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
        try:
            module = importlib.import_module(RUNTIMES[cand])
        except ImportError as e:
            errors.append(f"{RUNTIMES[cand]}: {e}")
            continue
        if i > 0:
            log.warning("TFLite runtime %s unavailable (%s); using %s", candidates[0],
                        errors[0], cand)
        return cand, module
    raise RuntimeUnavailable(
        "no TFLite interpreter could be imported; install ai-edge-litert (or tflite-runtime "
        "with numpy<2): " + "; ".join(errors)
    )


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
