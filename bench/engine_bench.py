"""Engine cost per hop, side by side: frame configuration × model (quantisation) × mode.

Each case runs :meth:`device.sound.engine.Engine.process` hop by hop over real music
(pushover/space.ogg from 30 s, mono, 22050 Hz) on one thread, times every
call with ``perf_counter_ns`` after a warm-up, and reports the median, p99,
p99.9 and max as µs and as a fraction of the hop's duration (the real-time
budget), with the frame's algorithmic latency; resynth and generate also
with every fader moved to 0.7 (resynth then decodes twice per hop).
Models: every bundle given (default: models/default, dynamic-range int8 weights; models/wide16 if
present; the float32 tiny test fixture); each is also run with the paper's
frame by swapping the frame configuration of the in-memory bundle (the
weights do not depend on it; only the cost is measured).  Runtime: whichever
TFLite interpreter device.models.runtime picks (named in the output).

    .venv/bin/python bench/engine_bench.py [--seconds 20] [--json FILE] [--motion] [BUNDLE ...]

``--motion``: an LFO on every unit (rates 0.3.. Hz, depth 0.8, the shapes in
turn) and a note held (67: +7 semitones, so generate mode transposes).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.report import emit  # noqa: E402
from device.state import commands as c  # noqa: E402
from device.models.bundle import read_bundle  # noqa: E402
from device.sound.engine import Engine  # noqa: E402
from device.sound.features import LOW_LATENCY, PAPER  # noqa: E402
from tests.music import clip  # noqa: E402

DEFAULT_BUNDLES = ["models/default", "models/wide16", "tests/fixtures/tiny_bundle"]
WARMUP_HOPS = 200


def time_hops(engine: Engine, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-hop cost in µs: (wall clock, this thread's CPU time).  On a loaded
    machine the wall figures include time other processes held the core; the
    CPU figures are the engine's own work."""
    R = engine.hop_length
    out = np.zeros(R, dtype=np.float32)
    hops = len(x) // R
    blocks = np.ascontiguousarray(x[: hops * R].reshape(hops, R), dtype=np.float32)
    for h in range(WARMUP_HOPS):
        engine.process(blocks[h % hops], out)
    costs = np.zeros(hops, dtype=np.int64)
    cpu = np.zeros(hops, dtype=np.int64)
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    gc.disable()  # the audio thread's hops allocate nothing; the GC would only add our noise
    try:
        for h in range(hops):
            c0, t0 = cpu_clock(), clock()
            engine.process(blocks[h], out)
            costs[h] = clock() - t0
            cpu[h] = cpu_clock() - c0
    finally:
        gc.enable()
    return costs / 1000.0, cpu / 1000.0


def summary(costs_us: np.ndarray, hop_us: float) -> dict:
    p = {"median": float(np.median(costs_us)), "p99": float(np.percentile(costs_us, 99)),
         "p99.9": float(np.percentile(costs_us, 99.9)), "max": float(costs_us.max())}
    return {"us": {k: round(v, 1) for k, v in p.items()},
            "fraction_of_hop": {k: round(v / hop_us, 4) for k, v in p.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="*", help="bundle paths (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--phase", default="rtpghi")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--motion", action="store_true",
                    help="LFOs on every unit and a note held (see above)")
    args = ap.parse_args()
    paths = args.bundles or [p for p in DEFAULT_BUNDLES if (ROOT / p).exists()]
    x = np.array(clip("space", start_s=30.0, seconds=args.seconds))
    cases = []
    for path in paths:
        bundle = read_bundle(ROOT / path if not os.path.isabs(path) else path)
        for frame_name, frame in (("low_latency", LOW_LATENCY), ("paper", PAPER)):
            b = dataclasses.replace(bundle, frame=frame)
            engine = Engine(b, phase=args.phase, mode="original")
            if args.motion:
                for u in range(b.units):
                    engine.apply(c.SetLfoRate(u, min(0.3 + 0.37 * u, 20.0)))
                    engine.apply(c.SetLfoDepth(u, 0.8))
                    engine.apply(c.SetLfoShape(u, c.LFO_SHAPES[u % len(c.LFO_SHAPES)]))
                engine.apply(c.NoteOn(67))
            hop_us = 1e6 * frame.hop_length / frame.sample_rate
            for mode, moved in (("original", False), ("resynth", False), ("resynth", True),
                                ("generate", False), ("generate", True)):
                engine.apply(c.SetMode(mode))
                # moved: every fader at 0.7; resynth then decodes twice per hop (the
                # make-up's reference at default controls, device.sound.level.ResynthMakeUp)
                for u in range(bundle.units):
                    engine.apply(c.SetGain(u, 0.7 if moved else 1.0))
                costs, cpu = time_hops(engine, x)
                cases.append({
                    "bundle": path, "quantization": bundle.encoder.quantization,
                    "units": bundle.units, "frame": frame_name, "mode": mode,
                    "motion": args.motion,
                    "controls": "moved" if moved else "default",
                    "phase": args.phase if mode == "generate" else None,
                    "runtime": engine.model.encoder.runtime, "hop_ms": round(hop_us / 1000, 3),
                    "latency_ms": round(frame.latency_ms, 2), "hops": len(costs),
                    "wall": summary(costs, hop_us), "cpu": summary(cpu, hop_us)})
                w, u = cases[-1]["wall"], cases[-1]["cpu"]
                print(f"{path} {frame_name} {mode} {cases[-1]['controls']}: "
                      f"p99 wall {w['us']['p99']} us = "
                      f"{w['fraction_of_hop']['p99']:.1%} of the hop, cpu {u['us']['p99']} us "
                      f"= {u['fraction_of_hop']['p99']:.1%}", file=sys.stderr)
            engine.close()
    result = {"bench": "engine", "track": "pushover/space.ogg", "seconds": args.seconds,
              "threads": 1, "machine": platform.machine(), "python": platform.python_version(),
              "load_average": os.getloadavg(), "cases": cases}
    return emit(result, args.json)


if __name__ == "__main__":
    sys.exit(main())
