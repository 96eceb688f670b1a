"""Real-time scheduling and thread names (device/sound/scheduling.py), in child processes where
the scheduling would otherwise outlive the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from device.app import App
from device.sound.scheduling import name_thread
from tests.device.test_app import StandInEngine, app_config

ROOT = Path(__file__).resolve().parents[2]


def _in_child(code: str, *args: str) -> tuple[dict, str]:
    """Run ``code`` in a fresh interpreter at the repo root; its last stdout line as JSON,
    and its stderr.  Scheduling and mlockall changed there end with it."""
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def _comm(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().strip()


def test_realtime_request_reports_what_it_could_not_do():
    # In a child process: mlockall(MCL_FUTURE) must not stay on for the whole test run.
    code = (
        "import json, os, threading\n"
        "from device.sound.scheduling import enable_realtime\n"
        "out = {}\n"
        "def run():\n"
        "    out['warnings'] = enable_realtime(10)\n"
        "    out['policy'] = os.sched_getscheduler(0)\n"
        "t = threading.Thread(target=run); t.start(); t.join()\n"
        "out['main_policy'] = os.sched_getscheduler(0)\n"
        "print(json.dumps(out))\n")
    out, _ = _in_child(code)
    fifo_refused = any("SCHED_FIFO" in w for w in out["warnings"])
    assert fifo_refused or out["policy"] == os.SCHED_FIFO
    assert out["main_policy"] == os.SCHED_OTHER  # only the audio thread changes
    for w in out["warnings"]:
        assert ("SCHED_FIFO" in w and "priority 10" in w) or "mlockall" in w


def test_shared_realtime_reaches_later_threads_but_not_the_model_checker():
    """The app's other threads inherit SCHED_FIFO from the thread that asked for it; a
    model-validation child process drops it before it loads anything."""
    code = (
        "import json, os, subprocess, sys, threading\n"
        "from device.sound.scheduling import restore_scheduling, share_realtime\n"
        "out = {}\n"
        "def run():\n"
        "    before = share_realtime(5)\n"
        "    out['refused'] = before if isinstance(before, str) else None\n"
        "    seen = []\n"
        "    t = threading.Thread(target=lambda: seen.append((os.sched_getscheduler(0), "
        "os.sched_getparam(0).sched_priority)))\n"
        "    t.start(); t.join()\n"
        "    out['child_thread'] = seen[0]\n"
        "    check = ('from device.models.validate_child import _limit_self; _limit_self(1024, 30, 0); '\n"
        "             'import os; print(os.sched_getscheduler(0))')\n"
        "    out['checker'] = int(subprocess.run([sys.executable, '-c', check], "
        "capture_output=True, text=True, check=True).stdout)\n"
        "    if out['refused'] is None:\n"
        "        restore_scheduling(before)\n"
        "    out['restored'] = os.sched_getscheduler(0)\n"
        "t = threading.Thread(target=run); t.start(); t.join()\n"
        "print(json.dumps(out))\n")
    out, _ = _in_child(code)
    if out["refused"] is not None:
        assert "SCHED_FIFO priority 5" in out["refused"] and "GIL" in out["refused"]
        assert out["child_thread"][0] == os.SCHED_OTHER
    else:
        assert out["child_thread"] == [os.SCHED_FIFO, 5]
    assert out["checker"] == os.SCHED_OTHER
    assert out["restored"] == os.SCHED_OTHER


def test_a_thread_shows_its_name_to_the_kernel():
    seen = {}

    def run():
        name_thread()
        seen["default"] = _comm(threading.get_native_id())
        name_thread("a-name-longer-than-fifteen")
        seen["long"] = _comm(threading.get_native_id())

    t = threading.Thread(target=run, name="display")
    t.start()
    t.join()
    assert seen == {"default": "display", "long": "a-name-longer-t"}


def test_the_players_threads_are_named_for_top(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "in.wav", np.zeros(22050, dtype=np.float32), 22050, subtype="FLOAT")
    app = App(app_config(tmp_path, input=str(tmp_path / "in.wav")),
              engine_factory=StandInEngine).start()
    try:
        import time

        deadline = time.monotonic() + 20
        want = {"audio", "control", "ui", "last-state"}
        names: set[str] = set()
        while not want <= names and time.monotonic() < deadline:
            names = set()
            for tid in os.listdir("/proc/self/task"):
                try:
                    names.add(_comm(int(tid)))
                except FileNotFoundError:  # a thread that ended meanwhile
                    pass
            time.sleep(0.02)
    finally:
        app.close()
    assert want <= names, names


def test_the_app_runs_its_threads_real_time_and_gives_the_priority_back(tmp_path):
    """In a child process: realtime on means mlockall, which must not outlive the test."""
    code = (
        "import json, os, sys, threading, time\n"
        "from pathlib import Path\n"
        "from device.app import App\n"
        "from tests.device.test_app import StandInEngine, app_config\n"
        "tmp = Path(sys.argv[1])\n"
        "cfg = app_config(tmp, input='none').replace('audio', realtime=True, others_priority=7,"
        " priority=60)\n"
        "app = App(cfg, engine_factory=StandInEngine).start()\n"
        "seen = {}\n"
        "deadline = time.monotonic() + 20\n"
        "while len(seen) < 3 and time.monotonic() < deadline:\n"
        "    for t in threading.enumerate():\n"
        "        if t.name in ('audio', 'control', 'ui') and t.native_id:\n"
        "            seen[t.name] = [os.sched_getscheduler(t.native_id),\n"
        "                            os.sched_getparam(t.native_id).sched_priority]\n"
        "    time.sleep(0.05)\n"
        "time.sleep(0.3)\n"  # the audio thread raises itself once it runs
        "seen['audio'] = [os.sched_getscheduler(app.loop._thread.native_id),\n"
        "                 os.sched_getparam(app.loop._thread.native_id).sched_priority]\n"
        "during = os.sched_getscheduler(0)\n"
        "app.close()\n"
        "print(json.dumps({'seen': seen, 'during': during, 'after': os.sched_getscheduler(0),\n"
        "                  'warnings': app.loop.warnings}))\n")
    out, stderr = _in_child(code, str(tmp_path))
    refused = any("SCHED_FIFO" in w for w in out["warnings"])
    if refused:  # no rtprio here: everything stays at normal priority, with a warning
        assert "SCHED_FIFO priority 7 for the MIDI, display and control threads" in stderr
        assert out["during"] == os.SCHED_OTHER
    else:
        assert out["seen"]["audio"] == [os.SCHED_FIFO, 60]
        assert out["seen"]["control"] == [os.SCHED_FIFO, 7]
        assert out["seen"]["ui"] == [os.SCHED_FIFO, 7]
        assert out["during"] == os.SCHED_FIFO
    assert out["after"] == os.SCHED_OTHER
