"""Benchmark of a USB import, printed as JSON (never part of the test run).

import: `import_bundles` of one ~1 MB bundle (a 1025-128-1025 float32
    autoencoder, made once with TensorFlow in a subprocess and cached in
    cache/bench/) into an empty models directory, N times: the static check,
    the copy with fsync, the child-process validation (loading both models
    and running a test frame under time and memory limits) and the rename.
    Reports median and worst seconds, per stage, against the 2 s target, with
    the checker at its default niceness (10) and not niced: on a machine
    saturated by other work the niced checker waits its turn.
recorder: cost of `Recorder.push` per 128-sample hop while recording.

    .venv/bin/python bench/import_bench.py [--runs 10] [--bundle PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device.models.library import ImportProgress, import_bundles  # noqa: E402
from device.sound.recorder import Recorder  # noqa: E402
from device.models.validate_child import DEFAULT_NICE  # noqa: E402

CACHE = ROOT / "cache" / "bench" / "bundle-1mb"
TARGET_S = 2.0

_MAKE = """
import sys
import numpy as np
import tensorflow as tf
from device.models.bundle import UnitStats
from device.sound.features import LOW_LATENCY, Normaliser
from train.bundle_writer import write_bundle
tf.keras.utils.set_random_seed(2)
n, units = LOW_LATENCY.n_bins, 128
enc = tf.keras.Sequential([tf.keras.Input((n,), batch_size=1),
                           tf.keras.layers.Dense(units, activation="sigmoid")])
dec = tf.keras.Sequential([tf.keras.Input((units,), batch_size=1), tf.keras.layers.Dense(n)])
blobs = [tf.lite.TFLiteConverter.from_keras_model(m).convert() for m in (enc, dec)]
stats = UnitStats(min=np.zeros(units), max=np.ones(units), mean=np.full(units, 0.5))
write_bundle(sys.argv[1], encoder=blobs[0], decoder=blobs[1], name="bench1mb",
             frame=LOW_LATENCY, normaliser=Normaliser("logmax", "log", 1e-3, -6.9, 12.0),
             units=units, quantization="float32", unit_stats=stats,
             training={"data": [], "recipe": {"note": "untrained benchmark bundle"}})
"""


def bench_bundle() -> Path:
    if not (CACHE / "manifest.json").exists():
        subprocess.run([sys.executable, "-c", _MAKE, str(CACHE)], cwd=ROOT, check=True,
                       capture_output=True)
    return CACHE


def bundle_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def time_imports(bundle: Path, runs: int, nice: int) -> dict:
    totals: list[float] = []
    stages: dict[str, list[float]] = {}
    for _ in range(runs):
        marks: list[tuple[str, float]] = []

        def progress(p: ImportProgress, marks=marks) -> None:
            marks.append((f"{p.stage} {p.detail}".strip(), time.perf_counter()))

        with tempfile.TemporaryDirectory(prefix="aesynth-bench-", dir=ROOT / "cache") as tmp:
            t0 = time.perf_counter()
            report = import_bundles(bundle, Path(tmp) / "models", progress=progress,
                                    nice=nice)
            t1 = time.perf_counter()
        if not report.ok:
            raise SystemExit(f"the benchmark bundle was rejected: {report.lines()}")
        totals.append(t1 - t0)
        # the time of each stage runs from its mark to the next one
        for (stage, t), (_, t_next) in zip(marks, marks[1:], strict=False):
            stages.setdefault(stage, []).append(t_next - t)
    return {
        "bundle": str(bundle),
        "bundle_bytes": bundle_bytes(bundle),
        "runs": runs,
        "checker_nice": nice,
        "total_s": {"median": round(statistics.median(totals), 3),
                    "max": round(max(totals), 3)},
        "stage_median_s": {k: round(statistics.median(v), 3) for k, v in stages.items() if v},
        "target_s": TARGET_S,
        "within_target": max(totals) <= TARGET_S,
    }


def time_recorder_push(hops: int = 20000) -> dict:
    import numpy as np

    block = np.random.default_rng(0).uniform(-0.5, 0.5, 128).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="aesynth-bench-", dir=ROOT / "cache") as tmp:
        # a ring that holds the whole run: this measures the copy, not the drop path
        rec = Recorder(tmp, 22050, buffer_s=hops * 128 / 22050 + 1)
        rec.start()
        costs = []
        for _ in range(hops):
            t = time.perf_counter_ns()
            rec.push(block)
            costs.append(time.perf_counter_ns() - t)
            if len(costs) % 64 == 0:
                time.sleep(0.0005)  # let the writer in now and then
        rec.stop()
    costs.sort()
    return {"hops": hops, "push_us": {"p50": round(costs[len(costs) // 2] / 1000, 2),
                                      "p99": round(costs[int(len(costs) * 0.99)] / 1000, 2),
                                      "max": round(costs[-1] / 1000, 2)},
            "dropped_samples": rec.dropped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--bundle", type=Path, default=None,
                        help="bundle to import (default: a generated ~1 MB one)")
    args = parser.parse_args()
    (ROOT / "cache").mkdir(exist_ok=True)
    bundle = args.bundle or bench_bundle()
    result = {"load_average_1min": round(os.getloadavg()[0], 2),
              "cpus": os.cpu_count(),
              "import": time_imports(bundle, args.runs, DEFAULT_NICE),
              "import_not_niced": time_imports(bundle, args.runs, 0),
              "recorder": time_recorder_push()}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
