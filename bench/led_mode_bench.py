"""The nanoKONTROL2's LED-mode exchange over many starts in a row, printed as JSON.

Each start is a fresh MidiController finding a stand-in nanoKONTROL2 (python-rtmidi
on a private JACK dummy server) and putting it into external LED mode, then
closing (which gives the controller its own mode back).  Counts the starts that
ended in external mode and how many requests each took; ``--lose`` makes the
stand-in ignore the first n SysEx messages of every start (a request lost while
the ports were still connecting), ``--hog`` runs a thread that holds the GIL in
slices while the controller starts (as the app's own start-up does).  Not timed:
the result is a count.

    .venv/bin/python bench/led_mode_bench.py [--starts 50] [--lose 1] [--hog]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=50)
    ap.add_argument("--lose", type=int, default=0, help="SysEx messages ignored per start")
    ap.add_argument("--hog", action="store_true", help="a GIL-holding thread during starts")
    args = ap.parse_args(argv)

    from tests.jack import JackServer

    with JackServer() as jack:
        os.environ.update(jack.env)
        from device.senses.midi import MidiController
        from tests.device.fake_nanokontrol2 import FakeNanoKontrol2
        from tests.device.test_midi import Box

        stop = threading.Event()

        def hog() -> None:
            while not stop.is_set():
                sum(i * i for i in range(200_000))  # ~10-20 ms with the GIL held in bytecode

        hogger = threading.Thread(target=hog, daemon=True) if args.hog else None
        if hogger is not None:
            hogger.start()
        external, tries, connect_s = 0, collections.Counter(), []
        fake = FakeNanoKontrol2()
        try:
            for _ in range(args.starts):
                fake.deaf_to = len(fake.sysex_in) + args.lose  # unanswered this start
                box = Box()
                t0 = time.monotonic()
                ctl = MidiController(box.post, box.current, scan_interval=0.05).start()
                ok = ctl.wait_connected(30.0)
                connect_s.append(time.monotonic() - t0)
                external += ok and ctl.led_mode == "external"
                tries[getattr(ctl, "sysex_tries", 0)] += 1  # 0: code without retries
                ctl.close()
        finally:
            stop.set()
            fake.close()
    print(json.dumps({"starts": args.starts, "external": external, "lose": args.lose,
                      "hog": args.hog, "requests_per_exchange": dict(sorted(tries.items())),
                      "connect_s_max": round(max(connect_s), 3)}, indent=1))
    return 0 if external == args.starts else 1


if __name__ == "__main__":
    sys.exit(main())
