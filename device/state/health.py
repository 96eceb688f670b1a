"""Live health of the running instrument: a snapshot each second, a status file, the watchdog.

While ``aesynth play`` runs, :class:`HealthPublisher` builds a :class:`Health`
once a second (xruns, engine cost per hop p99, MIDI received and dropped, the
audio device's state, the last error), rewrites it atomically (temp file +
rename) as JSON in the runtime directory (:func:`runtime_dir`), and, under
systemd with ``WatchdogSec=``, sends ``WATCHDOG=1`` only while the audio
thread is making progress: a stalled audio loop stops the pings and systemd
restarts the service instead of leaving it silent.  ``aesynth status`` reads
the file; a file older than :data:`STALE_S` means the app is hung.  A clean exit
removes the file; one left behind by a process that no longer runs (SIGKILL, a
crash) reads "stopped" at once: the writer holds an exclusive ``flock`` on a lock
file beside the status file for as long as it runs, and the kernel lets go of it
when the process ends, however it ends (:func:`player_running`).  A lock names no
pid, so it holds across pid and mount namespaces (the card's service read through
``nsenter``, where a pid check read a live player as gone) and through pid reuse.
Where there is no lock file (a player that could not make one), the record's pid
and start time are checked instead.

The audio thread itself only bumps counters (no I/O there, design.md): the
publisher thread does the reading, the writing and the notifying.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import logging
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATUS_NAME = "status.json"
PUBLISH_S = 1.0     # the status file is rewritten this often
STALE_S = 5.0       # `aesynth status` calls a file older than this stale
# The audio loop is "stalled" when its hop counter has not moved for this long while it
# claims to be playing; a reconnect loop (device lost) counts as progress.
STALL_S = 2.0
DROP_NOTICE_S = 3.0  # how long "MIDI dropped N" stays on the display after the count rises
DEVICE_STATES = ("starting", "playing", "lost", "stalled", "stopped")


@dataclass(frozen=True)
class Health:
    """One snapshot; times are wall-clock seconds (``time.time()``)."""

    time: float
    pid: int
    uptime_s: float
    device: str                 # one of DEVICE_STATES
    hops: int = 0
    xruns: int = 0
    underruns: int = 0
    overruns: int = 0
    reconnects: int = 0
    hop_p99_us: float = 0.0     # engine cost per hop over the whole run, 99th percentile
    hop_max_us: float = 0.0
    midi_received: int = 0
    midi_dropped: int = 0       # messages that did not become commands (garbage, errors, queue)
    last_error: str | None = None
    last_error_time: float | None = None
    pid_start: int | None = None  # the writer's start (process_start); None: no /proc

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Health:
        """Parse a status file; raises ValueError naming what is wrong."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"status must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in ("time", "pid", "uptime_s", "device") if n not in data)
        if missing:
            raise ValueError(f"status lacks {', '.join(missing)}")
        # the reader signals the pid (0 and negatives name process groups) and reads its /proc
        for name, low in (("pid", 1), ("pid_start", 0)):
            value = data.get(name)
            if (value is not None or name == "pid") and (
                    type(value) is not int or value < low):
                raise ValueError(f"status {name} must be an integer >= {low}, got {value!r}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def warning(self) -> str | None:
        """What the display must say about the instrument's health, or None when all is well."""
        if self.device == "stalled":
            return "audio stalled"
        if self.device == "lost":
            return "audio device lost: reopening"
        return None

    def lines(self, now: float | None = None) -> list[str]:
        """Human-readable, one fact a line (for ``aesynth status``)."""
        now = time.time() if now is None else now
        out = [f"device      {self.device} (pid {self.pid}, up {_duration(self.uptime_s)}, "
               f"status {now - self.time:.1f} s old)",
               f"xruns       {self.xruns} ({self.underruns} under, {self.overruns} over), "
               f"{self.reconnects} reconnects",
               f"hop cost    p99 {self.hop_p99_us:.0f} us, max {self.hop_max_us:.0f} us "
               f"({self.hops} hops)",
               f"midi        {self.midi_received} received, {self.midi_dropped} dropped"]
        if self.last_error:
            when = ("" if self.last_error_time is None
                    else f" ({_duration(now - self.last_error_time)} ago)")
            out.append(f"last error  {self.last_error}{when}")
        else:
            out.append("last error  none")
        return out


def _duration(s: float) -> str:
    s = max(0.0, s)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def runtime_dir() -> Path:
    """Where the status file lives: systemd's $RUNTIME_DIRECTORY (the unit's
    ``RuntimeDirectory=aesynth``: /run/aesynth), else $XDG_RUNTIME_DIR/aesynth, else
    /tmp/aesynth-UID.  All are in RAM on the box: rewriting each second wears no card."""
    rd = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if rd:
        return Path(rd)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "aesynth"
    return Path(f"/tmp/aesynth-{os.getuid()}")


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields from the third (the state) on; raises OSError."""
    # the name (field 2) may hold spaces and parentheses: count from the last ")"
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


_STARTTIME = 22 - 3  # field 22 of proc(5), in _stat's list


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (field 22 of /proc/PID/stat):
    with the pid, it names one process for as long as the machine runs.  None where there
    is no such process or no /proc."""
    try:
        return int(_stat(pid)[_STARTTIME])
    except OSError:
        return None


def lock_path(status: Path) -> Path:
    """The lock file beside the status file ``status``: ``status.json.lock``."""
    return status.with_name(status.name + ".lock")


def hold_lock(status: Path) -> int:
    """Take the exclusive lock beside ``status`` for as long as this process runs (or
    until the returned descriptor is closed); the file is made readable by all, so
    `aesynth status` run by root or a login can test it.  Raises OSError (no folder,
    no permission, or another live player holds it: BlockingIOError)."""
    fd = os.open(lock_path(status), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _lock_held(status: Path) -> bool | None:
    """Whether a live process holds the lock beside ``status``; None when there is no
    lock file to test (or it cannot be opened)."""
    try:
        fd = os.open(lock_path(status), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # e.g. a file system without locks
        return None
    finally:
        os.close(fd)  # also lets go of a shared lock taken just now
    return False


def player_running(health: Health, status: Path | None = None) -> bool:
    """Whether the process that wrote ``health`` (read from the file ``status``) still
    runs.  With a lock file beside ``status``: whether a live process holds it.  Else
    its pid is alive (not a zombie) and, where the record has its start time, started
    then (a pid is reused once its process is gone)."""
    if status is not None:
        held = _lock_held(status)
        if held is not None:
            return held
    try:
        os.kill(health.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process (the card's service, read by a login): it exists
    try:
        stat = _stat(health.pid)
    except OSError:  # no /proc (not Linux), or one that hides others' (hidepid)
        return True  # the pid's existence is all there is to go by
    if stat[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return False
    return health.pid_start is None or int(stat[_STARTTIME]) == health.pid_start


CARD_RUNTIME_DIR = Path("/run/aesynth")  # the card's unit: RuntimeDirectory=aesynth


def find_status() -> Path:
    """The status file a reader should look at: this process's own runtime directory's if it
    has one, else the card's service's (/run/aesynth, read by root or a login), else the
    per-user one; the first that exists, or the per-user path when none does."""
    mine = runtime_dir() / STATUS_NAME
    for candidate in (mine, CARD_RUNTIME_DIR / STATUS_NAME):
        if candidate.exists():
            return candidate
    return mine


def write_status(path: Path, health: Health) -> None:
    """Replace ``path`` with ``health`` atomically (temp file in the same folder, rename):
    a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(health.to_json(), encoding="utf-8")
    os.replace(tmp, path)


def read_status(path: Path) -> Health:
    """The status at ``path``; raises OSError (no file) or ValueError (not a status file)."""
    return Health.from_json(path.read_text(encoding="utf-8"))


class Notifier:
    """systemd's notification socket through cysystemd (sd_notify); a no-op without
    $NOTIFY_SOCKET (a desktop) or without cysystemd (logged once)."""

    def __init__(self) -> None:
        self._notify: Any = None
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        if not self.enabled:
            return
        try:
            from cysystemd.daemon import Notification, notify
        except ImportError as e:
            log.warning("systemd notifications off: cysystemd is missing (%s); "
                        "pip install cysystemd", e)
            self.enabled = False
            return
        self._notify, self._n = notify, Notification

    def ready(self) -> None:
        self._send("READY")

    def watchdog(self) -> None:
        self._send("WATCHDOG")

    def stopping(self) -> None:
        self._send("STOPPING")

    def status(self, text: str) -> None:
        if self.enabled:
            self._notify(self._n.STATUS, text)

    def _send(self, name: str) -> None:
        if self.enabled:
            self._notify(getattr(self._n, name))


class HealthPublisher:
    """Builds a :class:`Health` each ``every_s`` from ``loop`` (device.sound.audio.AudioLoop)
    and ``midi`` (anything with ``received`` and ``garbage``/``errors``/``dropped``), writes it
    to ``path`` and pings the systemd watchdog while the audio loop makes progress.

    ``errors()`` returns the app's last error as (text, wall time) or None.
    """

    def __init__(self, loop: Any, *, path: Path | None = None, midi: Any = None,
                 errors: Any = None, every_s: float = PUBLISH_S, stall_s: float = STALL_S,
                 notifier: Notifier | None = None):
        self.loop = loop
        self.midi = midi
        self.path = path if path is not None else runtime_dir() / STATUS_NAME
        self._errors = errors or (lambda: None)
        self.every_s = every_s
        self.stall_s = stall_s
        self.notifier = notifier or Notifier()
        self._started = time.time()
        self._pid_start = process_start(os.getpid())
        self._lock: int | None = None  # the lock beside the status file, while running
        self._progress = (-1, 0, 0.0)   # (hops, reconnects, monotonic time they last moved)
        self._last_error: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.health: Health | None = None
        self.write_error: str | None = None
        self.pings = 0
        self._drops = (0, -1e9)  # MIDI dropped so far, monotonic time the count last rose

    def start(self) -> HealthPublisher:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as e:
            self.write_error = f"cannot make {str(self.path.parent)!r}: {e.strerror or e}"
            log.warning("health: %s; `aesynth status` will not see this player", self.write_error)
        try:
            self._lock = hold_lock(self.path)
        except BlockingIOError:
            log.warning("health: another player holds %s; `aesynth status` reads that one's "
                        "liveness", lock_path(self.path))
        except OSError as e:
            log.warning("health: cannot lock %s: %s; `aesynth status` checks the pid instead",
                        lock_path(self.path), e.strerror or e)
        self.publish()
        self.notifier.ready()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.publish()
            except Exception:  # noqa: BLE001 -- the health thread must outlive a bad snapshot
                log.exception("health snapshot failed")

    def snapshot(self, now_mono: float | None = None) -> Health:
        """The health now; also decides whether the audio loop is stalled."""
        now = time.monotonic() if now_mono is None else now_mono
        loop, stats = self.loop, self.loop.stats
        hops, reconnects, since = self._progress
        moving = (stats.hops, stats.reconnects) != (hops, reconnects)
        if moving:
            self._progress = (stats.hops, stats.reconnects, now)
            since = now
        if not loop.running:
            device = "stopped"
        elif not stats.connected and stats.error:
            device = "lost"  # the audio thread is reopening it (a loop that runs: not stalled)
        elif now - since > self.stall_s:
            device = "stalled"  # also a first period that never comes
        elif getattr(loop, "first_period_at", None) is None:
            device = "starting"
        else:
            device = "playing"
        error = self._errors()
        if stats.error:
            error = (stats.error, time.time())
        if error is not None and (self._last_error is None or error[0] != self._last_error[0]):
            self._last_error = error
        pc = loop.hop_cost_percentiles((99,)) if stats.hops else {"p99": 0.0}
        m = self.midi
        dropped = 0 if m is None else (getattr(m, "dropped", 0) + getattr(m, "garbage", 0)
                                       + getattr(m, "errors", 0))
        return Health(time=time.time(), pid=os.getpid(), uptime_s=time.time() - self._started,
                      device=device, hops=stats.hops, xruns=stats.xruns,
                      underruns=stats.underruns, overruns=stats.overruns,
                      reconnects=stats.reconnects, hop_p99_us=pc["p99"],
                      hop_max_us=stats.max_hop_us,
                      midi_received=0 if m is None else int(getattr(m, "received", 0)),
                      midi_dropped=int(dropped),
                      last_error=self._last_error[0] if self._last_error else None,
                      last_error_time=self._last_error[1] if self._last_error else None,
                      pid_start=self._pid_start)

    def display_warning(self, now_mono: float | None = None) -> str | None:
        """What the display shows about health: a stalled or lost audio device while it lasts,
        else "MIDI dropped N" for DROP_NOTICE_S after the count rises; None when all is well."""
        h = self.health
        if h is None:
            return None
        now = time.monotonic() if now_mono is None else now_mono
        count, since = self._drops
        if h.midi_dropped > count:
            self._drops = count, since = h.midi_dropped, now
        return h.warning() or (f"MIDI dropped {count}" if now - since <= DROP_NOTICE_S
                               else None)

    def publish(self) -> Health:
        """Snapshot, write the status file, ping the watchdog if the audio loop lives."""
        h = self.health = self.snapshot()
        if h.device in ("starting", "playing", "lost"):  # not "stalled", not "stopped"
            self.notifier.watchdog()
            self.pings += 1
        try:
            write_status(self.path, h)
            self.write_error = None
        except OSError as e:
            if self.write_error is None:
                log.warning("health: cannot write %s: %s", self.path, e.strerror or e)
            self.write_error = str(e)
        return h

    def close(self) -> None:
        """Stop publishing and remove the status file (a stopped player has no status)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self.notifier.stopping()
        try:
            self.path.unlink()
        except OSError:
            pass
        if self._lock is not None:  # after the file: a reader never sees it unlocked first
            os.close(self._lock)
            self._lock = None

    def __repr__(self) -> str:
        state = self.health.device if self.health else "not started"
        return f"<HealthPublisher {str(self.path)!r} {state}>"


# -- aesynth status -----------------------------------------------------------------------------
def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "status", help="show the running player's health",
        description="Show the health of the running `aesynth play`: device state, xruns, "
                    "engine cost per hop (p99), MIDI received and dropped, the last error. "
                    "Reads the status file the player rewrites every second.",
        epilog="exit codes: 0 the player is running and its status is fresh, 1 no player "
               "(no status file, or the process that wrote it is gone: device reads "
               f"stopped) or a status older than {STALE_S:g} s (hung), 2 a bad file")
    p.add_argument("--file", metavar="PATH", help=f"status file (default: "
                                                  f"{runtime_dir() / STATUS_NAME}, else "
                                                  f"{CARD_RUNTIME_DIR / STATUS_NAME})")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else find_status()
    try:
        h = read_status(path)
    except FileNotFoundError:
        print(f"aesynth is not running: no status file at {path}")
        return 1
    except OSError as e:
        print(f"cannot read {path}: {e.strerror or e}")
        return 2
    except (ValueError, TypeError) as e:
        print(f"{path} is not an aesynth status file: {e}")
        return 2
    running = player_running(h, path)
    said = h.device
    if not running:  # killed or crashed: its last record must not say "playing"
        h = dataclasses.replace(h, device="stopped")
    if args.json:
        print(h.to_json(), end="")
    else:
        print("\n".join(h.lines()))
    if not running:
        print(f"the player (pid {h.pid}) is not running: it was killed or crashed "
              f"(its last status said {said})", file=sys.stderr if args.json else sys.stdout)
        return 1
    age = time.time() - h.time
    if age > STALE_S:
        # --json: stdout holds only the record, so a script can parse it whatever it says
        print(f"status is {age:.0f} s old (rewritten every {PUBLISH_S:g} s): the player is "
              f"hung or was killed", file=sys.stderr if args.json else sys.stdout)
        return 1
    return 0
