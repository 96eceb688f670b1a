"""`aesynth play --in FILE` on a long file: peak memory and time to first sound, printed as
JSON (never part of the test run).

Writes a WAV of ``--minutes`` (default 60) of 44.1 kHz stereo 16-bit noise and tones
under cache/ (635 MB for an hour), then runs `aesynth play` (original mode, ALSA's null
device paced by the clock, no MIDI, no display) for ``--seconds`` with that file and
with ``--in none``, several times each, and reports each child's peak RSS
(``ru_maxrss``) and the difference.  First sound: seconds from the command's start to
the first period the app wrote (its own log line), and, inside the process, from
opening the file to the decoder's first hop in the ring (device.sound.audiofile).

    .venv/bin/python bench/file_stream_bench.py [--minutes 60] [--runs 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402

AESYNTH = ([str(ROOT / ".venv" / "bin" / "aesynth")] if (ROOT / ".venv").exists()
           else [sys.executable, "-m", "device.cli"])
FIRST = re.compile(r"first audio period written at ([0-9.]+)")
CHILD = r"""
import resource, subprocess, sys, json, time
t0 = time.time()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": p.returncode, "t0": t0, "maxrss_kb":
      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "stderr": p.stderr[-6000:]}))
"""


def long_wav(minutes: float) -> Path:
    import soundfile as sf

    path = ROOT / "cache" / f"long_{minutes:g}min_44k_stereo.wav"
    frames = int(minutes * 60 * 44100)
    if path.exists() and sf.info(str(path)).frames == frames:
        return path
    path.parent.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    block = 44100 * 10
    t = np.arange(block) / 44100
    with sf.SoundFile(str(path), "w", 44100, 2, subtype="PCM_16") as f:
        for i in range(0, frames, block):
            n = min(block, frames - i)
            tone = 0.2 * np.sin(2 * np.pi * (220 + (i // block) % 50 * 10) * t[:n])
            x = tone + 0.05 * rng.standard_normal(n)
            f.write(np.stack([x, 0.8 * x], axis=1))
    return path


def run_play(source: str, seconds: float) -> dict:
    cmd = [*AESYNTH, "-v", "play", "--mode", "original", "--in", source,
           "--output-device", "null", "--no-midi", "--display", "none",
           "--duration", str(seconds)]
    p = subprocess.run([sys.executable, "-c", CHILD, *cmd], cwd=ROOT, capture_output=True,
                       text=True, timeout=seconds + 120)
    r = json.loads(p.stdout)
    if r["rc"] != 0:
        raise RuntimeError(f"aesynth play exited {r['rc']}: {r['stderr']}")
    m = FIRST.search(r["stderr"])
    return {"maxrss_mb": r["maxrss_kb"] / 1024,
            "first_period_s": float(m.group(1)) - r["t0"] if m else None}


def decoder_first_hop(path: Path, runs: int) -> list[float]:
    from device.sound.audiofile import FileStream

    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fs = FileStream(path, 22050)
        while fs.ring.readable() < 64:
            time.sleep(0.0005)
        out.append(time.perf_counter() - t0)
        fs.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    path = long_wav(a.minutes)
    with_file = [run_play(str(path), a.seconds) for _ in range(a.runs)]
    without = [run_play("none", a.seconds) for _ in range(a.runs)]
    med = {k: statistics.median(r["maxrss_mb"] for r in rs)
           for k, rs in (("file", with_file), ("none", without))}
    first = decoder_first_hop(path, 5)
    return emit({
        "bench": "file_stream", "file": path.name, "file_mb": round(path.stat().st_size / 2**20),
        "minutes": a.minutes, "played_seconds": a.seconds, "runs": a.runs,
        "load_average": os.getloadavg(),
        "note": "shared 2-core machine",
        "peak_rss_mb": {"with_file": [round(r["maxrss_mb"], 1) for r in with_file],
                        "no_input": [round(r["maxrss_mb"], 1) for r in without]},
        "peak_rss_added_by_the_file_mb": round(med["file"] - med["none"], 1),
        "first_period_s": {"with_file": [round(r["first_period_s"], 3) for r in with_file],
                           "no_input": [round(r["first_period_s"], 3) for r in without]},
        "decoder_open_to_first_hop_ms": [round(1000 * t, 2) for t in first],
    }, a.out)


if __name__ == "__main__":
    sys.exit(main())
