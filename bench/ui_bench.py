"""Cost of the box's senses, printed as JSON (never part of the test run).

render: ``device.senses.display.render`` of a full page, per frame (ms), and the
    whole OLED path through the real ssd1306 driver to a recording serial
    interface (render + luma's page packing, what the display thread spends).
midi: a storm of control changes from a stand-in nanoKONTROL2 over
    python-rtmidi on a private JACK dummy server, at ``--rate`` CC/s for
    ``--seconds``: messages received vs sent (lost), and the latency from send
    to the command being posted, p50/p99/max (ms).  JACK's dummy driver moves
    MIDI once per period (512 frames at 22050 Hz = 23 ms), so latency here is
    dominated by the period, not by our code.

    .venv/bin/python bench/ui_bench.py [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] if xs else float("nan")


def bench_render(frames: int) -> dict:
    from luma.oled.device import ssd1306

    from device.senses.display import render
    from tests.device.test_display import RecordingSerial, paper_figure3, varied_states

    state = paper_figure3()
    t = []
    for _ in range(frames):
        t0 = time.perf_counter()
        render(state)
        t.append((time.perf_counter() - t0) * 1e3)
    dev = ssd1306(serial_interface=RecordingSerial())
    full = []
    for s in varied_states(frames):
        t0 = time.perf_counter()
        dev.display(render(s))
        full.append((time.perf_counter() - t0) * 1e3)
    return {"frames": frames,
            "render_ms_p50": round(statistics.median(t), 3),
            "render_ms_p99": round(percentile(t, 99), 3),
            "render_plus_ssd1306_ms_p50": round(statistics.median(full), 3),
            "render_plus_ssd1306_ms_p99": round(percentile(full, 99), 3),
            "cpu_share_at_30fps": round(statistics.median(full) * 30 / 1e3, 4)}


def bench_midi(rate: float, seconds: float) -> dict:
    from tests.jack import MIDI_BACKEND, JackServer

    with JackServer() as jack:
        os.environ["JACK_DEFAULT_SERVER"] = jack.name
        os.environ["MIDO_BACKEND"] = MIDI_BACKEND
        from device.state.controls import UnitControls
        from device.senses.midi import MidiController
        from tests.device.fake_nanokontrol2 import FakeNanoKontrol2

        controls = UnitControls(8)
        sent_at: dict[int, float] = {}
        latency: list[float] = []

        def post(cmd: object) -> None:
            # every storm message posts exactly one SetGain, in order: the i-th post
            # answers the i-th message sent
            latency.append(time.perf_counter())

        fake = FakeNanoKontrol2()
        ctl = MidiController(post, controls.snapshot, scan_interval=0.2).start()
        try:
            if not ctl.wait_connected(15):
                return {"error": "controller did not connect"}
            # soft takeover: park every fader on its unit's value (1.0) first
            for cc in range(8):
                fake.cc(cc, 127)
            time.sleep(0.5)
            latency.clear()
            base = ctl.received
            n = int(rate * seconds)
            t0 = time.perf_counter()
            for i in range(n):
                sent_at[i] = time.perf_counter()
                fake.cc(i % 8, 64 + (i % 64))  # always far from the pickup window: engaged
                delay = t0 + (i + 1) / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            deadline = time.monotonic() + 30
            while ctl.received - base < n and time.monotonic() < deadline:
                time.sleep(0.01)
            received = ctl.received - base
            lat = [(latency[i] - sent_at[i]) * 1e3 for i in range(min(len(latency), n))]
            return {"rate_cc_per_s": rate, "seconds": seconds, "sent": n,
                    "received": received, "lost": n - received, "errors": ctl.errors,
                    "latency_ms_p50": round(statistics.median(lat), 2) if lat else None,
                    "latency_ms_p99": round(percentile(lat, 99), 2) if lat else None,
                    "latency_ms_max": round(max(lat), 2) if lat else None,
                    "jack_period_ms": round(jack.period / jack.sample_rate * 1e3, 2)}
        finally:
            ctl.close()
            fake.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="CC messages per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--frames", type=int, default=300)
    args = ap.parse_args()
    out = {"machine": platform.machine(), "python": platform.python_version(),
           "load_avg_1m": os.getloadavg()[0],
           "render": bench_render(args.frames),
           "midi": bench_midi(args.rate, args.seconds)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
