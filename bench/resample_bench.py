"""Streaming resamplers for the audio thread: python-soxr's ResampleStream against our
stateful polyphase FIR (device.sound.resample.StreamResampler, scipy-designed), printed
as JSON (never part of the test run).

For 48 kHz → 22050 Hz (capture) and 22050 → 48 kHz (playback), one period at a time
(the card's period: 128 and 256 frames at 48 kHz; the hop, 64 and 128, at 22050):

* cost: µs per call, median and p99 over 20 s of real music, one thread;
* latency: samples in minus samples out at the end of the run, plus (ours) the filter
  delay inside the signal: what a player hears; soxr holds samples back (and trims
  its filter delay off the stream's start: its impulse comes out "on time", late);
* jitter: how many output samples one call gives (min..max; what the FIFO absorbs);
* first output: calls before the first non-empty output (soxr holds samples back);
* allocation: bytes above the start at the peak of 200 calls under tracemalloc
  (soxr's ``resample_chunk`` returns a new array each call);
* round trip error on the music (22050 → 48000 → 22050, aligned at its best integer lag
  and below 8 kHz), dB.

    .venv/bin/python bench/resample_bench.py [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from device.sound.audiofile import load_audio  # noqa: E402
from device.sound.resample import StreamResampler  # noqa: E402
from tests.music import track  # noqa: E402


class Ours:
    def __init__(self, a: int, b: int, block: int):
        self.rs = StreamResampler(a, b, max_in=block)
        self.out = np.zeros(self.rs.max_out, np.float32)
        self.name = "polyphase"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.out[:self.rs.process(x, self.out)]


class Soxr:
    def __init__(self, a: int, b: int, quality: str):
        import soxr

        self.rs = soxr.ResampleStream(a, b, 1, dtype="float32", quality=quality)
        self.name = f"soxr-{quality}"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.rs.resample_chunk(x)


def make(kind: str, a: int, b: int, block: int):
    return Ours(a, b, block) if kind == "polyphase" else Soxr(a, b, kind.split("-")[1])


def measure(kind: str, a: int, b: int, block: int, music: np.ndarray) -> dict:
    x = music if a == 22050 else _to(music, a)
    r = make(kind, a, b, block)
    costs, counts = [], []
    for i in range(0, len(x) - block, block):
        blk = np.ascontiguousarray(x[i:i + block])
        t0 = time.perf_counter_ns()
        y = r(blk)
        costs.append((time.perf_counter_ns() - t0) / 1000)
        counts.append(len(y))
    # Latency as a player hears it: inputs in minus outputs out, at the end (soxr holds
    # samples back and trims its filter delay from the stream's start; ours gives every
    # output at once, its filter delay inside the signal).
    n_calls = len(counts)
    held = n_calls * block * b / a - sum(counts)
    latency = (held + r.rs.delay_out) if kind == "polyphase" else held
    counts = np.array(counts[50:])
    # Delay: a unit impulse at input sample 1000.
    r = make(kind, a, b, block)
    imp = np.zeros(a // 2, np.float32)
    imp[1000] = 1.0
    out, first = [], None
    for k, i in enumerate(range(0, len(imp), block)):
        y = np.asarray(r(imp[i:i + block]))
        if first is None and len(y):
            first = k
        out.append(np.array(y))
    y = np.concatenate(out)
    delay = float(np.argmax(np.abs(y)) - 1000 * b / a)
    # Allocation per call.
    r = make(kind, a, b, block)
    blk = np.ascontiguousarray(x[:block])
    for _ in range(20):
        r(blk)
    tracemalloc.start()
    s0 = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    for _ in range(200):
        r(blk)
    peak = tracemalloc.get_traced_memory()[1] - s0
    tracemalloc.stop()
    c = np.array(costs[50:])
    return {"latency_out_samples": round(float(latency), 1),
            "latency_ms": round(1000 * float(latency) / b, 3),
            "cost_us_median": round(float(np.median(c)), 1),
            "cost_us_p99": round(float(np.percentile(c, 99)), 1),
            "impulse_peak_offset_out_samples": round(delay, 2),
            "stated_delay_out_samples": (round(r.rs.delay_out, 3) if kind == "polyphase"
                                         else None),
            "outputs_per_call": [int(counts.min()), int(counts.max())],
            "calls_before_first_output": first,
            "alloc_peak_bytes_200_calls": int(peak)}


def _to(x: np.ndarray, rate: int) -> np.ndarray:
    from device.sound.resample import resample_blocks

    return resample_blocks(x, 22050, rate)


def round_trip_db(kind: str, music: np.ndarray) -> float:
    from scipy.signal import butter, sosfiltfilt

    up, down = make(kind, 22050, 48000, 128), make(kind, 48000, 22050, 279)
    if kind == "polyphase":  # the audio thread's pair: a round trip of whole samples
        from device.sound.resample import design

        a0 = design(48000, 22050)[2]
        down.rs = StreamResampler(48000, 22050, max_in=279,
                                  half_length=a0 + (-(a0 + up.rs.half_length)) % 320)
        down.out = np.zeros(down.rs.max_out, np.float32)
    y = np.concatenate([np.array(up(music[i:i + 128])) for i in range(0, len(music), 128)])
    z = np.concatenate([np.array(down(y[i:i + 279])) for i in range(0, len(y), 279)])
    sos = butter(8, 8000, fs=22050, output="sos")
    a, b = sosfiltfilt(sos, music), sosfiltfilt(sos, z)
    best = None
    for lag in range(0, 400):
        n = min(len(a), len(b) - lag) - 4096
        e = np.sum((b[lag + 2048:lag + 2048 + n] - a[2048:2048 + n]) ** 2) / np.sum(
            a[2048:2048 + n] ** 2)
        best = e if best is None or e < best else best
    return round(float(10 * np.log10(best)), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the JSON here")
    a = ap.parse_args()
    import os

    music = load_audio(track("aztec"), 22050, start_s=20.0, seconds=20.0)
    kinds = ["polyphase", "soxr-QQ", "soxr-LQ", "soxr-MQ", "soxr-HQ", "soxr-VHQ"]
    result: dict = {"bench": "resample", "load_average": os.getloadavg(),
                    "note": "shared 2-core machine; ratios mean more than absolute µs",
                    "cases": {}}
    for a_rate, b_rate, block in ((48000, 22050, 128), (48000, 22050, 256),
                                  (22050, 48000, 64), (22050, 48000, 128)):
        key = f"{a_rate}->{b_rate} block {block}"
        result["cases"][key] = {k: measure(k, a_rate, b_rate, block, music) for k in kinds}
    result["round_trip_error_db_below_8khz"] = {k: round_trip_db(k, music) for k in kinds}
    return emit(result, a.out)


if __name__ == "__main__":
    sys.exit(main())
