"""Benchmarks of `aesynth play`, printed as JSON (never part of the test run).

first-period: time from process start to the first audio period written by
    `aesynth play` with the default model (median and worst of N runs), with
    no arguments (no sound card here: ALSA null, clock-paced) and through
    JACK's dummy driver.
paced: `aesynth play` through JACK's dummy driver for N minutes (default 10)
    with a nanoKONTROL2 MIDI storm (>= 500 CC/s, over JACK MIDI) and the unit
    table redrawn continuously; reports xruns, per-hop engine cost
    percentiles (from the app's own whole-run histogram), the longest gap
    between two periods handed to ALSA (GIL and CPU waits included; past the
    buffered cushion the card runs dry, unless the device was late too), the app's garbage
    collections, and the machine's own stalls as a SCHED_FIFO sleeper in
    another process sees them (to tell the VM's hiccups from the app's).

latency: the round trip measured end to end through `aesynth play --mode
    original --in line`: jack_iodelay (jackd2) sends its test signal into the
    app's capture port and measures it at the app's playback port, to a
    thousandth of a frame; beside it the round trip the app logs.  N starts,
    each with its own jack_iodelay.  ``--rate 48000`` runs the card at 48 kHz
    (the app resamples); ``--profile low`` is [audio] profile = "low".

    .venv/bin/python bench/play_bench.py first-period --runs 5
    .venv/bin/python bench/play_bench.py paced --minutes 10 --profile low
    .venv/bin/python bench/play_bench.py paced --minutes 10 --profile low --process thread
    .venv/bin/python bench/play_bench.py latency --starts 5 --profile low --rate 48000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.device.audio_rig import JackServer, alsa_config  # noqa: E402

AESYNTH = ([str(ROOT / ".venv" / "bin" / "aesynth")] if (ROOT / ".venv").exists()
           else [sys.executable, "-m", "device.cli"])  # a worktree without its own venv
EXPECTED = re.compile(r"expected round trip ([0-9.]+) ms = ([0-9]+) frames")
IODELAY = re.compile(r"([0-9.]+) frames\s+([0-9.]+) ms total roundtrip")
FIRST = re.compile(r"first audio period written at ([0-9.]+)")
GAP = re.compile(r"longest gap between periods ([0-9.]+) ms \(buffered cushion ([0-9.]+) ms\)")
COLLECTOR = re.compile(r"collector: (\d+) garbage collections \((\d+) full, (\d+) over "
                       r"[0-9.]+ ms\), longest ([0-9.]+) ms")
SENSES = re.compile(r"midi received (\d+) messages \((\d+) errors\); display drew (\d+) frames")
STOPPED = re.compile(r"audio stopped: (\d+) hops, (\d+) xruns \((\d+) under, (\d+) over\), "
                     r"(\d+) reconnects; engine per hop p50 (\d+) us, p99 (\d+) us, "
                     r"p99.9 (\d+) us, max (\d+) us")


def default_model() -> Path:
    d = ROOT / "models" / "default"
    return d if d.exists() else ROOT / "tests" / "fixtures" / "tiny_bundle"


def hop_of(model: Path, profile: str = "safe") -> tuple[int, int]:
    from device.models.bundle import read_bundle
    from device.sound.profiles import frame_for

    f = frame_for(read_bundle(model, check_models=False).frame, profile)
    return f.sample_rate, f.hop_length


def profile_config(tmp: str, profile: str, extra: str = "") -> str:
    path = Path(tmp) / "profile.toml"
    path.write_text(f'[audio]\nprofile = "{profile}"\n{extra}')
    return str(path)


def time_to_first_period(args: list[str], env: dict[str, str], timeout: float = 30) -> float:
    """Seconds from just before exec to the first period the app wrote."""
    t0 = time.time()
    p = subprocess.Popen([*AESYNTH, "-v", "play", *args], cwd=ROOT, env={**os.environ, **env},
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found = None
    deadline = time.monotonic() + timeout
    for line in p.stderr:
        m = FIRST.search(line)
        if m:
            found = float(m.group(1)) - t0
            break
        if time.monotonic() > deadline:
            break
    p.terminate()
    p.communicate(timeout=30)
    if found is None:
        raise RuntimeError(f"no first period from aesynth play {' '.join(args)}")
    return found


def bench_first_period(runs: int, process: str = "auto") -> dict:
    model = default_model()
    rate, hop = hop_of(model)
    out: dict = {"model": str(model.relative_to(ROOT)), "runs": runs, "process": process}
    with tempfile.TemporaryDirectory(prefix="aesynth-bench-") as tmp:
        env = {"ALSA_CONFIG_PATH": str(alsa_config(Path(tmp)))}
        cfg = ([] if process == "auto"
               else ["--config", profile_config(tmp, "safe", f'process = "{process}"\n')])
        # The README's command: no arguments (this machine has no sound card).
        plain = [time_to_first_period([*cfg, "--duration", "5"], env) for _ in range(runs)]
        with JackServer(rate=rate, period=hop, log_dir=Path(tmp)) as jack:
            jenv = {**env, **jack.env}
            jk = [*cfg, "--output-device", "plug:jk", "--capture-device", "plug:jk",
                  "--no-midi", "--display", "none", "--duration", "5"]
            paced = [time_to_first_period(jk, jenv) for _ in range(runs)]
    for name, xs in (("no_arguments_null_device", plain), ("jack_dummy", paced)):
        out[name] = {"median_s": round(statistics.median(xs), 3), "max_s": round(max(xs), 3),
                     "all_s": [round(x, 3) for x in xs]}
    return out


def midi_storm(stop: threading.Event, rate_cc: int, sent: list[int]) -> None:
    """A virtual nanoKONTROL2 on JACK: faders and knobs at ``rate_cc`` CC/s, with a page
    change and a mute toggle now and then."""
    import random

    import mido

    rng = random.Random(1)
    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
    with backend.open_output("nanoKONTROL2", virtual=True) as port:
        time.sleep(2.0)  # let the app find and open the port
        batch = max(1, rate_cc // 100)
        t = time.monotonic()
        n = 0
        while not stop.is_set():
            for _ in range(batch):
                cc = rng.choice(range(0, 8)) if rng.random() < 0.5 else rng.choice(range(16, 24))
                port.send(mido.Message("control_change", control=cc, value=rng.randrange(128)))
                n += 1
            if n % 2000 < batch:  # every ~3 s: next page; and a mute pressed and released
                port.send(mido.Message("control_change", control=59, value=127))
                port.send(mido.Message("control_change", control=59, value=0))
                port.send(mido.Message("control_change", control=48, value=127))
                port.send(mido.Message("control_change", control=48, value=0))
                n += 4
            t += 0.01
            time.sleep(max(0.0, t - time.monotonic()))
    sent.append(n)


# A SCHED_FIFO sleeper in its own process, with no GIL to share: how late the machine
# itself (hypervisor, kernel) wakes a real-time thread, to tell those stalls from ours.
STALL_WATCH = r"""
import json, os, sys, time
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(80))
    rt = True
except OSError:
    rt = False
end = time.monotonic() + float(sys.argv[1])
last, gaps = time.monotonic(), []
while last < end:
    time.sleep(0.001)
    now = time.monotonic()
    if now - last > 0.004:
        gaps.append(round((now - last) * 1e3, 1))
    last = now
print(json.dumps({"sched_fifo": rt, "count": len(gaps), "longest_ms": max(gaps, default=0.0),
                  "longest_five_ms": sorted(gaps)[-5:]}))
"""


def bench_paced(minutes: float, rate_cc: int, display: str, config: str | None,
                profile: str = "safe", line_in: bool = False, process: str = "auto") -> dict:
    model = default_model()
    rate, hop = hop_of(model, profile)
    from tests.music import track

    with tempfile.TemporaryDirectory(prefix="aesynth-bench-") as tmp:
        env = {"ALSA_CONFIG_PATH": str(alsa_config(Path(tmp))),
               "MIDO_BACKEND": "mido.backends.rtmidi/UNIX_JACK"}
        if config is None and (profile != "safe" or process != "auto"):
            config = profile_config(tmp, profile, f'process = "{process}"\n')
        elif process != "auto":
            raise SystemExit("--process with --config: put [audio] process in the file")
        with JackServer(rate=rate, period=hop, log_dir=Path(tmp)) as jack:
            env.update(jack.env)
            os.environ.update(jack.env)  # the storm's JACK client, in this process
            source = (["--in", "line", "--capture-device", "jk"] if line_in
                      else ["--in", str(track("aztec"))])
            args = ["-v", "play", "--model", str(model), *source,
                    "--output-device", "jk", "--display", display,
                    "--duration", str(minutes * 60)]
            if config:
                args[2:2] = ["--config", config]  # after "play"
            stop, sent = threading.Event(), []
            if rate_cc <= 0:  # no storm: the app runs without MIDI (to compare)
                args.append("--no-midi")
            storm = threading.Thread(target=midi_storm, args=(stop, rate_cc, sent),
                                     daemon=True)  # an error must not leave it running
            p = subprocess.Popen([*AESYNTH, *args], cwd=ROOT, env={**os.environ, **env},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            watch = subprocess.Popen([sys.executable, "-c", STALL_WATCH, str(minutes * 60)],
                                     stdout=subprocess.PIPE, text=True)
            if rate_cc > 0:
                storm.start()
            t0 = time.monotonic()
            _, err = p.communicate(timeout=minutes * 60 + 120)
            if p.returncode != 0 or time.monotonic() - t0 < minutes * 60 - 5:
                watch.kill()  # the app ended early: its log says why
                watch.communicate()
                stop.set()
                raise RuntimeError(f"aesynth play ended after {time.monotonic() - t0:.0f} s "
                                   f"(exit {p.returncode}); jackd log tail:\n"
                                   f"{_tail(jack)}\napp log tail:\n{err[-4000:]}")
            watched, _ = watch.communicate(timeout=60)  # it ends on its own, with its report
            stop.set()
            if rate_cc > 0:
                storm.join()
            elapsed = time.monotonic() - t0
    m = STOPPED.search(err)
    if not m or p.returncode != 0:
        raise RuntimeError(f"aesynth play exited {p.returncode}:\n{err[-4000:]}")
    hops, xruns, under, over, reconnects, p50, p99, p999, mx = map(int, m.groups())
    gap, collector = GAP.search(err), COLLECTOR.search(err)
    senses = SENSES.search(err)
    received, midi_errors, frames = map(int, senses.groups()) if senses else (0, 0, 0)
    return {"model": str(model.relative_to(ROOT)), "sample_rate": rate, "hop": hop,
            "profile": profile, "input": "line" if line_in else "file",
            "audio_seconds": round(hops * hop / rate, 1), "wall_seconds": round(elapsed, 1),
            "hop_ms": round(1000 * hop / rate, 2), "minutes": minutes, "display": display,
            "config": config, "process": process,
            "hop_cost_p99_share_of_hop": round(p99 / (1e6 * hop / rate), 3),
            "midi_cc_sent": sent[0] if sent else 0,
            "midi_cc_per_s": round((sent[0] if sent else 0) / max(elapsed, 1e-9), 1),
            "hops": hops, "xruns": xruns, "underruns": under, "overruns": over,
            "reconnects": reconnects, "hop_cost_us": {"p50": p50, "p99": p99, "p99.9": p999,
                                                       "max": mx},
            "longest_gap_between_periods_ms": float(gap.group(1)) if gap else None,
            "buffered_cushion_ms": float(gap.group(2)) if gap else None,
            "garbage_collections": ({"count": int(collector.group(1)),
                                     "full": int(collector.group(2)),
                                     "slow": int(collector.group(3)),
                                     "longest_ms": float(collector.group(4))}
                                    if collector else None),
            "machine_stalls_over_4ms": json.loads(watched) if watched.strip() else None,
            "midi_cc_received_by_app": received, "midi_errors": midi_errors,
            "display_frames": frames, "display_fps": round(frames / max(elapsed, 1e-9), 1),
            "warnings": re.findall(r"WARNING .*", err)[:10]}


def _tail(jack: JackServer) -> str:
    try:
        return Path(jack._log.name).read_text()[-1500:]
    except OSError as e:
        return str(e)


LOOPBACK = """</usr/share/alsa/alsa.conf>
pcm.lb { type jack playback_ports { 0 jack_delay:in } capture_ports { 0 jack_delay:out } }
"""


def bench_latency(starts: int, rate: int, period: int | None, profile: str,
                  seconds: float, process: str = "auto") -> dict:
    """Round trip through `aesynth play --mode original --in line`, N starts."""
    from collections import Counter

    model = default_model()
    model_rate, hop = hop_of(model, profile)
    period = period or round(hop * rate / model_rate)
    runs = []
    with tempfile.TemporaryDirectory(prefix="aesynth-bench-") as tmp:
        conf = Path(tmp) / "asound.conf"
        conf.write_text(LOOPBACK)
        cfg = profile_config(tmp, profile, f'process = "{process}"\n')
        env = {"ALSA_CONFIG_PATH": str(conf)}
        with JackServer(rate=rate, period=period, log_dir=Path(tmp)) as jack:
            env.update(jack.env)
            for _ in range(starts):
                probe = subprocess.Popen(["stdbuf", "-oL", "jack_iodelay"], text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         env={**os.environ, **env})
                time.sleep(0.3)
                p = subprocess.run(
                    [*AESYNTH, "-v", "play", "--config", cfg, "--model", str(model),
                     "--mode", "original", "--in", "line", "--output-device", "lb",
                     "--capture-device", "lb", "--no-midi", "--display", "none",
                     "--duration", str(seconds)],
                    cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                    timeout=seconds + 60)
                probe.terminate()
                text = probe.communicate(timeout=10)[0]
                exp = EXPECTED.search(p.stderr)
                stopped = STOPPED.search(p.stderr)
                measured = [float(m.group(1)) for m in IODELAY.finditer(text)]
                if p.returncode != 0 or not exp or not measured:
                    raise RuntimeError(f"aesynth play exited {p.returncode}:\n"
                                       f"{p.stderr[-3000:]}\n{text[-1000:]}")
                settled = Counter(round(v) for v in measured[1:] or measured).most_common(1)
                runs.append({"expected_frames": int(exp.group(2)),
                             "expected_ms": float(exp.group(1)),
                             "measured_frames": settled[0][0],
                             "measured_ms": round(1000 * settled[0][0] / rate, 2),
                             "readings": len(measured),
                             "readings_off_by_more_than_1": sum(
                                 abs(v - int(exp.group(2))) > 1 for v in measured[1:]),
                             "xruns": int(stopped.group(2)) if stopped else None})
    worst = max(r["measured_ms"] for r in runs)
    return {"model": str(model.relative_to(ROOT)), "profile": profile, "process": process,
            "card_rate": rate,
            "jack_period": period, "model_rate": model_rate, "hop": hop, "starts": runs,
            "worst_measured_ms": worst,
            "all_equal_expected_within_1_frame": all(
                abs(r["measured_frames"] - r["expected_frames"]) <= 1 for r in runs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    fp = sub.add_parser("first-period")
    fp.add_argument("--runs", type=int, default=5)
    fp.add_argument("--process", default="auto", choices=("auto", "thread", "own"))
    pc = sub.add_parser("paced")
    pc.add_argument("--minutes", type=float, default=10.0)
    pc.add_argument("--cc-rate", type=int, default=600,
                    help="MIDI CC messages per second (0: no MIDI at all)")
    pc.add_argument("--display", default="dummy", help="dummy: luma renders every frame")
    pc.add_argument("--config", help="an aesynth.toml for the app (e.g. [audio] others_priority)")
    pc.add_argument("--profile", default="safe", choices=("safe", "low"))
    pc.add_argument("--line-in", action="store_true", help="capture from JACK, not a file")
    pc.add_argument("--process", default="auto", choices=("auto", "thread", "own"),
                    help="[audio] process: the engine in a thread of the app or its own process")
    lt = sub.add_parser("latency")
    lt.add_argument("--starts", type=int, default=5)
    lt.add_argument("--rate", type=int, default=22050, help="the card's (JACK's) rate")
    lt.add_argument("--period", type=int, default=0, help="JACK's period; 0: one hop")
    lt.add_argument("--profile", default="safe", choices=("safe", "low"))
    lt.add_argument("--seconds", type=float, default=3.0, help="each start plays this long")
    lt.add_argument("--process", default="auto", choices=("auto", "thread", "own"),
                    help="[audio] process: the engine in a thread of the app or its own process")
    a = ap.parse_args()
    if a.what == "first-period":
        result = bench_first_period(a.runs, a.process)
    elif a.what == "latency":
        result = bench_latency(a.starts, a.rate, a.period or None, a.profile, a.seconds,
                               a.process)
    else:
        result = bench_paced(a.minutes, a.cc_rate, a.display, a.config, a.profile,
                             a.line_in, a.process)
    print(json.dumps({"bench": f"play_{a.what}", **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
