"""Live health: the status file `aesynth status` reads, and systemd's watchdog (cysystemd)
pinged only while the audio loop makes progress, against a real notification socket."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from device.sound.audio import AudioConfig, AudioLoop, SilentSource
from device.state.health import (Health, HealthPublisher, Notifier, hold_lock,
                                 player_running, process_start, read_status, write_status)

ROOT = Path(__file__).resolve().parents[2]
HOP = 256
RATE = 22050


class GatedEngine:
    """Copies input to output; ``gate`` cleared stalls process() (a hung engine or device)."""

    hop_length = HOP

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()

    def process(self, block, out):
        self.gate.wait()
        np.copyto(out, block)
        return out

    def apply(self, cmd):
        return False


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A real sd_notify socket (what systemd listens on); yields a function returning the
    datagrams received so far."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.01)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    got: list[str] = []

    def received() -> list[str]:
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                return got
    yield received
    sock.close()


def _loop(engine):
    cfg = AudioConfig(playback_device="null", pacing="clock", realtime=False)
    return AudioLoop(engine, SilentSource(), sample_rate=RATE, commands=queue.SimpleQueue(),
                     to_control=lambda cmd: None, config=cfg)


def test_status_file_is_rewritten_and_the_watchdog_stops_when_the_loop_stalls(
        tmp_path, notify_socket):
    engine = GatedEngine()
    loop = _loop(engine).start()
    status = tmp_path / "run" / "status.json"
    pub = HealthPublisher(loop, path=status, every_s=0.1, stall_s=0.5,
                          errors=lambda: ("no GPIO buttons: test", 1.0))
    try:
        pub.start()
        time.sleep(1.0)
        h = read_status(status)
        assert h.device == "playing" and h.hops > 0 and h.pid == os.getpid()
        assert h.last_error == "no GPIO buttons: test"
        msgs = notify_socket()
        assert "READY=1" in msgs and msgs.count("WATCHDOG=1") >= 5, msgs
        engine.gate.clear()  # the audio loop hangs inside a hop
        time.sleep(0.5 + 0.5)
        before = notify_socket().count("WATCHDOG=1")
        time.sleep(0.6)
        h = read_status(status)
        assert h.device == "stalled" and h.warning() == "audio stalled"
        assert notify_socket().count("WATCHDOG=1") == before  # systemd will restart us
        deadline = time.monotonic() + 10  # the file keeps being rewritten meanwhile
        while read_status(status).time == h.time and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_status(status).time > h.time
        engine.gate.set()
        deadline = time.monotonic() + 10
        while read_status(status).device != "playing" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_status(status).device == "playing"
        assert notify_socket().count("WATCHDOG=1") > before
    finally:
        engine.gate.set()
        loop.stop()
        pub.close()
    assert not status.exists()  # a stopped player leaves no status behind
    assert "STOPPING=1" in notify_socket()


def test_status_is_written_atomically(tmp_path):
    """A reader polling the file never sees half of one."""
    loop = _loop(GatedEngine()).start()
    status = tmp_path / "status.json"
    pub = HealthPublisher(loop, path=status, every_s=0.001, notifier=Notifier())
    bad = []
    try:
        pub.start()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                json.loads(status.read_text())
            except FileNotFoundError:
                pass
            except ValueError as e:
                bad.append(str(e))
    finally:
        loop.stop()
        pub.close()
    assert bad == []
    assert not list(tmp_path.glob(".status.json.*"))  # no temp files left


def test_aesynth_status_prints_the_health_and_calls_a_stale_file_hung(tmp_path):
    f = tmp_path / "status.json"
    me = os.getpid()  # a running writer: this process stands for the player
    h = Health(time=time.time(), pid=me, uptime_s=75, device="playing", hops=1000, xruns=3,
               underruns=2, overruns=1, reconnects=1, hop_p99_us=412.0, hop_max_us=900.0,
               midi_received=40, midi_dropped=2, last_error="audio device lost: x",
               last_error_time=time.time() - 300, pid_start=process_start(me))
    f.write_text(h.to_json())
    cmd = [sys.executable, "-m", "device.cli", "status", "--file", str(f)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    for text in (f"device      playing (pid {me}, up 75 s", "xruns       3 (2 under, 1 over), "
                 "1 reconnects", "hop cost    p99 412 us, max 900 us (1000 hops)",
                 "midi        40 received, 2 dropped",
                 "last error  audio device lost: x (5 min ago)"):
        assert text in p.stdout, p.stdout
    f.write_text(Health(**{**json.loads(h.to_json()), "time": time.time() - 600}).to_json())
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 1 and "s old (rewritten every 1 s)" in p.stdout and "hung" in p.stdout
    # --json: stdout is the record alone (a script parses it), the verdict on stderr
    p = subprocess.run([*cmd, "--json"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 1 and json.loads(p.stdout)["device"] == "playing"
    assert "hung" in p.stderr
    p = subprocess.run([*cmd[:-1], str(tmp_path / "none.json")], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 1 and "aesynth is not running: no status file at" in p.stdout
    (tmp_path / "junk.json").write_text("[1, 2]")
    p = subprocess.run([*cmd[:-1], str(tmp_path / "junk.json")], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 2 and "is not an aesynth status file" in p.stdout
    assert "Traceback" not in p.stderr
    # pid 0 would be this process group to os.kill, "running" whatever wrote the file
    f.write_text(Health(**{**json.loads(h.to_json()), "pid": 0}).to_json())
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 2 and "status pid must be an integer >= 1, got 0" in p.stdout


_PLAYER = (  # a process that publishes its health as `aesynth play` does, with a real loop
    "import sys, time\n"
    "from pathlib import Path\n"
    "from device.state.health import HealthPublisher, Notifier\n"
    "from tests.device.test_health import GatedEngine, _loop\n"
    "HealthPublisher(_loop(GatedEngine()).start(), path=Path(sys.argv[1]), every_s=0.1,\n"
    "                notifier=Notifier()).start()\n"
    "time.sleep(600)\n")


def test_a_killed_player_reads_stopped_at_once(tmp_path):
    """SIGKILL leaves the status file behind (nothing removes it): `aesynth status` must not
    call the player "playing" for the 5 s until the file is stale, since the process that
    wrote it is gone.  Read while the killed process is a zombie (its parent has not reaped
    it yet) and after.  (Failed on the old code: "playing", exit 0.)"""
    status = tmp_path / "status.json"
    player = subprocess.Popen([sys.executable, "-c", _PLAYER, str(status)], cwd=ROOT)
    cmd = [sys.executable, "-m", "device.cli", "status", "--file", str(status)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and player.poll() is None:
            if status.exists() and read_status(status).device == "playing":
                break
            time.sleep(0.05)
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"device      playing (pid {player.pid}," in p.stdout
        os.kill(player.pid, signal.SIGKILL)
        os.waitid(os.P_PID, player.pid, os.WEXITED | os.WNOWAIT)  # dead, left a zombie
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert p.returncode == 1, p.stdout + p.stderr
        assert f"device      stopped (pid {player.pid}," in p.stdout
        assert f"the player (pid {player.pid}) is not running" in p.stdout
        p = subprocess.run([*cmd, "--json"], capture_output=True, text=True, cwd=ROOT,
                           timeout=60)
        assert p.returncode == 1 and json.loads(p.stdout)["device"] == "stopped"
    finally:
        player.kill()
        player.wait()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 1 and f"device      stopped (pid {player.pid}," in p.stdout
    assert "Traceback" not in p.stderr


def test_a_live_pid_that_does_not_hold_the_lock_is_not_the_player(tmp_path):
    """The player holds a lock beside its status file while it runs: a record whose pid
    is alive (reused, or seen from another pid namespace) but whose lock nobody holds is
    not a running player, and one whose lock is held is, whatever its pid says."""
    status = tmp_path / "status.json"
    h = Health(time=time.time(), pid=os.getpid(), uptime_s=1, device="playing",
               pid_start=process_start(os.getpid()))
    write_status(status, h)
    fd = hold_lock(status)
    try:
        assert player_running(h, status)
        # a pid no process has (or one from another namespace): the lock decides
        assert player_running(Health(**{**json.loads(h.to_json()), "pid": 2 ** 22 + 1}), status)
        with pytest.raises(BlockingIOError):  # a second player cannot take it
            hold_lock(status)
    finally:
        os.close(fd)
    assert not player_running(h, status)  # our pid is alive, but the lock is free


def test_without_a_lock_file_the_pid_and_its_start_time_decide():
    """A record read with no lock beside it (a player that could not make one): the same
    pid given to another process after a reboot or a wrap-around is not the player."""
    me = process_start(os.getpid())
    assert me is not None and me == process_start(os.getpid())
    h = Health(time=time.time(), pid=os.getpid(), uptime_s=1, device="playing", pid_start=me)
    assert player_running(h)
    assert not player_running(Health(**{**json.loads(h.to_json()), "pid_start": me + 1}))
    assert player_running(Health(**{**json.loads(h.to_json()), "pid_start": None}))  # older
    assert process_start(2 ** 22 + 1) is None  # above Linux's pid_max: no such process


def test_without_systemd_notifications_are_off(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    n.watchdog()  # a no-op, not an error


def test_status_finds_the_card_s_service_file(tmp_path, monkeypatch):
    """Root or a login on the card runs `aesynth status` outside the service: it must find
    /run/aesynth/status.json (found in the booted card test: it looked in /tmp/aesynth-0)."""
    import device.state.health as health

    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    monkeypatch.setattr(health, "CARD_RUNTIME_DIR", tmp_path / "run-aesynth")
    assert health.find_status() == tmp_path / "xdg" / "aesynth" / "status.json"
    (tmp_path / "run-aesynth").mkdir()
    (tmp_path / "run-aesynth" / "status.json").write_text("{}")
    assert health.find_status() == tmp_path / "run-aesynth" / "status.json"


class Counters:
    """The counters a MIDI controller keeps (device.senses.midi.MidiController)."""

    received = 0
    garbage = 0
    errors = 0


def test_dropped_midi_is_counted_and_said_on_the_display(tmp_path):
    loop = _loop(GatedEngine()).start()
    midi = Counters()
    pub = HealthPublisher(loop, path=tmp_path / "status.json", midi=midi, every_s=60,
                          notifier=Notifier())
    try:
        pub.start()
        assert pub.display_warning(now_mono=100.0) is None
        midi.received, midi.garbage, midi.errors = 50, 2, 1
        h = pub.publish()
        assert (h.midi_received, h.midi_dropped) == (50, 3)
        assert read_status(tmp_path / "status.json").midi_dropped == 3
        assert pub.display_warning(now_mono=200.0) == "MIDI dropped 3"
        assert pub.display_warning(now_mono=202.0) == "MIDI dropped 3"
        assert pub.display_warning(now_mono=204.0) is None  # shown for a few seconds
    finally:
        loop.stop()
        pub.close()


def test_a_first_period_that_never_comes_is_a_stall(tmp_path):
    engine = GatedEngine()
    engine.gate.clear()  # hangs in the very first hop
    loop = _loop(engine).start()
    pub = HealthPublisher(loop, path=tmp_path / "status.json", every_s=60, stall_s=0.3,
                          notifier=Notifier())
    try:
        pub.start()
        assert pub.health.device == "starting"
        time.sleep(0.5)
        assert pub.publish().device == "stalled"
        pings = pub.pings
        pub.publish()
        assert pub.pings == pings  # no watchdog ping for a loop that never played
    finally:
        engine.gate.set()
        loop.stop()
        pub.close()
