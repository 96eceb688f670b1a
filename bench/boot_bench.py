"""Boot to sound: boot a card image's root in nspawn and time it to the first audio period.

    sudo .venv/bin/python bench/boot_bench.py [--card cache/image/test-card.img] [--runs 3]

Prints JSON.  Marks, all from the same wall clock (the container shares the
host's): ``container_start`` (nspawn launched; stands in for the kernel
handing over to systemd), ``service_start`` (aesynth.service's ExecMainStart,
from systemd), ``first_period`` (the app's log line "first audio period
written at", which the app stamps when its first period went to ALSA).
Everything in the container runs under qemu-user on x86, several times
slower than a Pi 4: see docs/image.md for how the Pi 4 estimate is made.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.image.boot import boot_card  # noqa: E402

FIRST = re.compile(r"first audio period written at ([0-9.]+)")


def one_boot(card: Path, work: Path) -> dict:
    with boot_card(card, work, machine="aesynth-boot-bench") as boot:
        boot.wait_for_audio(min_bytes=1, timeout=600)
        deadline = time.monotonic() + 60
        first = None
        while first is None and time.monotonic() < deadline:
            journal = boot.run("journalctl", "-u", "aesynth.service", "-o", "cat",
                               "--no-pager").stdout
            m = FIRST.search(journal)
            first = float(m.group(1)) if m else None
            time.sleep(0.2)
        props = boot.run("systemctl", "show", "aesynth.service", "-p",
                         "ExecMainStartTimestamp", "--timestamp=unix").stdout
        m = re.search(r"ExecMainStartTimestamp=@([0-9.]+)", props)
        service_start = float(m.group(1)) if m else None
        t0 = boot.started_at
        return {
            "container_start_to_service_start_s": round(service_start - t0, 3)
            if service_start else None,
            "service_start_to_first_period_s": round(first - service_start, 3)
            if first and service_start else None,
            "container_start_to_first_period_s": round(first - t0, 3) if first else None,
            "container_start_to_first_bytes_s": round(boot.marks["first_bytes_wall"] - t0, 3),
        }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--card", type=Path, default=REPO / "cache/image/test-card.img")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    if not args.card.exists():
        print(f"no card image at {args.card}: build one (image/build.sh, or run "
              "tests/image/test_card.py)", file=sys.stderr)
        return 2
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="aesynth-bootbench-") as d:
            runs.append(one_boot(args.card, Path(d) / f"run{i}"))
    keys = runs[0].keys()
    median = {k: statistics.median([r[k] for r in runs if r[k] is not None] or [float("nan")])
              for k in keys}
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager",
         str(REPO / "image/rootfs/etc/systemd/system/aesynth.service")],
        capture_output=True, text=True).stdout
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security)
    print(json.dumps({
        "bench": "boot_to_sound",
        "card": str(args.card),
        "host": platform.machine(),
        "emulated": platform.machine() != "aarch64",
        "runs": runs,
        "median": median,
        "security_exposure": float(m.group(1)) if m else None,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
