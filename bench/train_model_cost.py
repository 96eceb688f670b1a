"""Per-frame cost of the shipped bundles' TFLite models (device.models.runtime, 1 thread).

Prints JSON: median and 99th-percentile microseconds per encoder and decoder
run, per bundle.  x86 numbers here; the Pi is several times slower.
Run: .venv/bin/python bench/train_model_cost.py [BUNDLE...]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from device.models.bundle import read_bundle
from device.models.runtime import Model

REPEATS = 2000


def cost(content: bytes, shape: tuple[int, ...]) -> dict[str, float]:
    with Model(content, num_threads=1) as m:
        x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
        out = np.empty(m.output_shape, np.float32)
        for _ in range(100):
            m.run(x, out=out)
        t = np.empty(REPEATS)
        for i in range(REPEATS):
            t0 = time.perf_counter()
            m.run(x, out=out)
            t[i] = time.perf_counter() - t0
    return {"median_us": float(np.median(t) * 1e6), "p99_us": float(np.percentile(t, 99) * 1e6)}


def main(paths: list[str]) -> None:
    root = Path(__file__).resolve().parents[1] / "models"
    paths = paths or [str(root / "default"), str(root / "wide16")]
    result = {}
    for p in paths:
        b = read_bundle(p)
        result[b.name] = {"units": b.units, "quantization": b.encoder.quantization,
                          "encoder": cost(b.encoder.content, b.encoder.input_shape),
                          "decoder": cost(b.decoder.content, b.decoder.input_shape),
                          "hop_ms": b.frame.hop_ms}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
