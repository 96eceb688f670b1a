"""Engine cost per hop with every mode interleaved hop by hop, as ratios to original (JSON).

On a shared machine the absolute figures of ``bench/engine_bench.py`` move
with the load (4-5x at load ~8 on 2 cores).  Here one engine per case
(original, resynth, generate; resynth and generate also with every fader at
0.7) processes the same hop of real music in turn, so a burst of load hits
every case alike; the ratio of each case's median and p99 CPU time per hop
(``thread_time_ns``) to original's is then comparable between runs, and
between commits: run it from another checkout with ``--repo``.

    .venv/bin/python bench/engine_interleaved.py [--repo DIR] [--seconds 10] [--json FILE]
        [BUNDLE ...]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="*", default=["models/default", "models/wide16"])
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]),
                    help="the checkout whose device/ is measured (default: this one)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    sys.path.insert(0, args.repo)
    os.chdir(args.repo)
    import numpy as np

    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's bench/
    from bench.report import emit
    from device.state import commands as c
    from device.models.bundle import read_bundle
    from device.sound.engine import Engine
    from tests.music import clip

    result = {"bench": "engine_interleaved", "repo": args.repo, "track": "pushover/space.ogg",
              "seconds": args.seconds, "load_average": os.getloadavg(), "bundles": {}}
    x = np.array(clip("space", start_s=30.0, seconds=args.seconds))
    for path in args.bundles:
        bundle = read_bundle(path)
        cases = {mode: Engine(bundle, mode=mode) for mode in ("original", "resynth", "generate")}
        for mode in ("resynth", "generate"):
            e = cases[f"{mode}_moved"] = Engine(bundle, mode=mode)
            for u in range(bundle.units):
                e.apply(c.SetGain(u, 0.7))
        R = bundle.frame.hop_length
        hops = len(x) // R
        blocks = np.ascontiguousarray(x[:hops * R].reshape(hops, R), dtype=np.float32)
        out = np.zeros(R, dtype=np.float32)
        for h in range(200):  # warm-up
            for e in cases.values():
                e.process(blocks[h], out)
        ns = {k: np.zeros(hops) for k in cases}
        clock = time.thread_time_ns
        gc.disable()
        try:
            for h in range(hops):
                for k, e in cases.items():
                    t0 = clock()
                    e.process(blocks[h], out)
                    ns[k][h] = clock() - t0
        finally:
            gc.enable()
        med0, p990 = np.median(ns["original"]), np.percentile(ns["original"], 99)
        hop_us = 1e6 * R / bundle.frame.sample_rate
        result["bundles"][path] = {k: {
            "median_us": round(float(np.median(v)) / 1000, 1),
            "p99_us": round(float(np.percentile(v, 99)) / 1000, 1),
            "p99_fraction_of_hop": round(float(np.percentile(v, 99)) / 1000 / hop_us, 4),
            "median_ratio_to_original": round(float(np.median(v) / med0), 2),
            "p99_ratio_to_original": round(float(np.percentile(v, 99) / p990), 2)}
            for k, v in ns.items()}
        for e in cases.values():
            e.close()
    return emit(result, args.json)


if __name__ == "__main__":
    sys.exit(main())
