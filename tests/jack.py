"""A private JACK server on the dummy driver, for paced audio and MIDI tests.

Each server gets a unique name (``jackd -n``) so that several test runs on
one machine never share or kill each other's server; clients find it through
``JACK_DEFAULT_SERVER``, which libjack reads when a client opens.  The daemon
is started and stopped by its PID.

    from tests.jack import jack_server          # a pytest fixture (module scope)

    def test_x(jack_server):                    # JACK_DEFAULT_SERVER is set for the test
        ...

or, outside pytest (bench scripts)::

    with JackServer(sample_rate=22050, period=512) as jack:
        env = jack.env                          # for subprocesses
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

MIDI_BACKEND = "mido.backends.rtmidi/UNIX_JACK"
_PR_SET_PDEATHSIG = 1


# JACK2's server registry (/dev/shm/jack-shm-registry): 8 server slots, each starting with
# the owning jackd's PID.  A jackd that dies without cleaning up (SIGKILL, a crash) keeps its
# slot, and once all 8 are taken no jackd starts on this machine ("Too many servers already
# active").  Measured layout of JACK 1.9.21: a 24-byte header, then 264 bytes per server.
_REGISTRY = "/dev/shm/jack-shm-registry"
_REGISTRY_HEADER, _REGISTRY_ENTRY, _REGISTRY_SERVERS = 24, 264, 8


def free_dead_server_slots(path: str = _REGISTRY) -> int:
    """Zero the registry slots of jackd processes that no longer exist; returns how many.
    Leaves a registry of another layout (too short) alone."""
    import mmap
    import struct

    freed = 0
    try:
        with open(path, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _REGISTRY_HEADER + _REGISTRY_ENTRY * _REGISTRY_SERVERS:
                return 0
            with mmap.mmap(f.fileno(), 0) as m:
                for i in range(_REGISTRY_SERVERS):
                    off = _REGISTRY_HEADER + _REGISTRY_ENTRY * i
                    pid = struct.unpack_from("<i", m, off)[0]
                    if pid > 0 and not os.path.exists(f"/proc/{pid}"):
                        struct.pack_into("<i", m, off, 0)
                        freed += 1
    except OSError:
        return 0
    return freed


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, so that a killed pytest run
    (a CI timeout) leaves no jackd behind.  Linux only; elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class JackServer:
    """``jackd --no-realtime -d dummy`` under a unique name; a context manager."""

    def __init__(self, *, sample_rate: int = 22050, period: int = 512,
                 name: str | None = None, start_timeout: float = 15.0):
        self.sample_rate = sample_rate
        self.period = period
        self.name = name or f"aesynth-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="aesynth-jackd-", suffix=".log",
                                                delete=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def env(self) -> dict[str, str]:
        """Environment for a client process: this server, mido on JACK."""
        return {**os.environ, "JACK_DEFAULT_SERVER": self.name, "MIDO_BACKEND": MIDI_BACKEND}

    @property
    def log_path(self) -> str:
        return self._log.name

    def log_text(self) -> str:
        with open(self._log.name, errors="replace") as f:
            return f.read()

    def start(self) -> JackServer:
        if shutil.which("jackd") is None:
            raise RuntimeError("jackd not found: install jackd2 (deploy/setup.sh dev does)")
        free_dead_server_slots()  # a killed earlier run must not keep every later jackd out
        cmd = ["jackd", "-n", self.name, "--no-realtime", "-d", "dummy",
               "-r", str(self.sample_rate), "-p", str(self.period)]
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jackd exited with {self.process.returncode}:\n"
                                   f"{self.log_text()}")
            ready = subprocess.run(["jack_wait", "-s", self.name, "-c"],
                                   capture_output=True, text=True, timeout=10)
            if ready.stdout.strip() == "running":
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"jackd {self.name} not ready in {self.start_timeout} s:\n"
                           f"{self.log_text()}")

    def stop(self) -> None:
        """Stop the daemon by its PID (SIGTERM, then SIGKILL).  Idempotent."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
        if os.environ.get("AESYNTH_KEEP_JACK_LOG"):
            return  # for debugging a run: the path is in repr()/log_path
        try:
            os.unlink(self._log.name)
        except OSError:
            pass

    def __enter__(self) -> JackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"<JackServer {self.name} pid={self.pid} "
                f"{self.sample_rate} Hz period={self.period}>")


@pytest.fixture(scope="module")
def jack_server() -> Iterator[JackServer]:
    """A running JACK dummy server for the module; JACK_DEFAULT_SERVER and MIDO_BACKEND set."""
    mp = pytest.MonkeyPatch()
    with JackServer() as server:
        mp.setenv("JACK_DEFAULT_SERVER", server.name)
        mp.setenv("MIDO_BACKEND", MIDI_BACKEND)
        try:
            yield server
        finally:
            mp.undo()
