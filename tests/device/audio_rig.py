"""ALSA plugin devices and a JACK dummy server for audio tests (harness.md).

Unpaced, byte-exact devices use ALSA's ``file`` plugin over ``null``; paced
ones go through JACK's dummy driver (``pcm.jk``), with the ``file`` plugin on
top to keep byte-exact copies of what the app wrote and to feed capture from a
file.  Everything lives under a test's tmp directory; the JACK server has a
unique name so parallel test runs never share one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np


def alsa_config(directory: Path, *, infile: Path | None = None) -> Path:
    """Write an ALSA config with the test devices; point ALSA_CONFIG_PATH at it.

    cap_file / play_file: unpaced capture from ``infile`` and playback into
    ``out.raw``.  jk: the JACK dummy server.  jk_in: capture paced by JACK, data
    from ``infile``.  jk_out: playback paced by JACK, copied into ``jk_out.raw``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    infile = infile or directory / "in.raw"
    text = f"""</usr/share/alsa/alsa.conf>
pcm.cap_file {{ type file slave.pcm "null" file "/dev/null" infile "{infile}" format "raw" }}
pcm.play_file {{ type file slave.pcm "null" file "{directory}/out.raw" format "raw" }}
pcm.jk {{ type jack
  playback_ports {{ 0 system:playback_1 }}
  capture_ports {{ 0 system:capture_1 }} }}
pcm.jk_in {{ type file slave.pcm "plug:jk" file "/dev/null" infile "{infile}" format "raw" }}
pcm.jk_out {{ type file slave.pcm "plug:jk" file "{directory}/jk_out.raw" format "raw" }}
"""
    path = directory / "asound.conf"
    path.write_text(text)
    return path


class JackServer:
    """``jackd --no-realtime -d dummy`` under a unique server name; stop() kills it by PID."""

    def __init__(self, *, rate: int = 22050, period: int = 128, log_dir: Path | None = None,
                 name: str | None = None):
        if shutil.which("jackd") is None:
            raise FileNotFoundError("jackd is missing: install jackd2 (deploy/setup.sh dev does)")
        # name: restart a stopped server under the same name (its clients find it again)
        self.name = name or f"aesynth-test-{uuid.uuid4().hex[:8]}"
        self.rate, self.period = rate, period
        self.env = {"JACK_DEFAULT_SERVER": self.name, "JACK_NO_AUDIO_RESERVATION": "1"}
        log_path = (log_dir or Path("/tmp")) / f"{self.name}-{uuid.uuid4().hex[:4]}.log"
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["jackd", "--no-realtime", "-n", self.name, "-d", "dummy", "-r", str(rate),
             "-p", str(period)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        self._wait_ready(log_path)

    def _wait_ready(self, log_path: Path) -> None:
        env = {**os.environ, **self.env}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jackd exited: {log_path.read_text()[-2000:]}")
            r = subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True)
            if "system:playback_1" in r.stdout:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"jackd did not come up in 20 s: {log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> JackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_raw(path: Path, samples: np.ndarray, dtype: str = "<f4") -> None:
    np.asarray(samples).astype(dtype).tofile(path)


def read_raw(path: Path, dtype: str = "<f4") -> np.ndarray:
    return np.fromfile(path, dtype=dtype)
