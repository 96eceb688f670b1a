"""The app's side of the audio process (``[audio] process = "own"``).

:class:`AudioProcess` starts ``python -m device.sound.audio_child`` and talks
to it over two pipes (device/sound/wire.py).  It offers the rest of the app
what it reads of an in-process engine and loop: ``.engine``
(:class:`RemoteEngine`: the published snapshot, ``apply``) and ``.loop``
(:class:`RemoteLoop`: statistics, latency, ``failure``, ``stop``), so the
control, feedback and health code does not know which it has.  A *forward*
thread carries the app's command queue into the pipe; a *reader* thread takes
the child's snapshots, statistics and hand-overs (to the control thread's
inbox).  The child dying is a loop failure the app reports and exits 1 on,
as an audio thread dying is in one process.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device.errors import AudioFileError, DeviceError, ModelError
from device.sound.wire import (WireError, command_message, command_of, encode,
                               read_messages, snapshot_of, write_all)

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0   # imports and a model load on a Pi from a cold card
REPLY_TIMEOUT_S = 10.0   # opening a card, starting a recording
_ROOT = Path(__file__).resolve().parents[2]


class AudioProcess:
    """The child process and the proxies that stand for its engine and loop.

    ``to_control`` receives, on the reader thread, the commands the audio thread
    hands over (StepModel, presets, recording, Shutdown, Rejected reports).
    """

    def __init__(self, *, to_control: Callable[[object], None],
                 say: Callable[[str], None] | None = None, verbosity: int = 0):
        self._to_control = to_control
        self._say = say or (lambda text: None)
        self._verbosity = verbosity
        self._proc: subprocess.Popen | None = None
        self._write_lock = threading.Lock()
        self._replies: queue.SimpleQueue = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._forward: threading.Thread | None = None
        self._stopping = threading.Event()
        self.engine: RemoteEngine | None = None
        self.loop: RemoteLoop | None = None
        self.exit_code: int | None = None

    # -- start --------------------------------------------------------------------------
    def start(self, spec: dict) -> RemoteEngine:
        """Start the child and its engine: ``spec`` holds ``model`` (a bundle path),
        ``profile``, ``phase``, ``num_threads``, ``mode``, ``note_gate`` (reference, attack
        s, release s), ``switch_interval_ms``, ``others_priority``.  Raises ModelError
        with the child's line when the model cannot be played, DeviceError when the
        child does not start within START_TIMEOUT_S."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "device.sound.audio_child", str(self._verbosity)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=str(_ROOT),
            bufsize=0, close_fds=True)
        self._reader = threading.Thread(target=self._read, name="audio-reader", daemon=True)
        self._reader.start()
        self._send({"t": "start", **spec})
        reply = self._reply(START_TIMEOUT_S, "start")
        if reply["t"] == "error":
            self.stop()
            raise ModelError(reply.get("message", "the audio process could not load the model"))
        self.engine = RemoteEngine(self, reply)
        return self.engine

    def open(self, config: Any, source: str, *, commands: queue.SimpleQueue) -> RemoteLoop:
        """Open the card in the child (``config`` an AudioConfig, ``source`` "line", "none"
        or a file path) and start forwarding ``commands``.  Raises what the child's
        AudioLoop.start raised, with its message: DeviceError (``pcm_kind`` set) or
        AudioFileError."""
        import dataclasses

        self._send({"t": "open", "config": dataclasses.asdict(config), "source": source})
        reply = self._reply(REPLY_TIMEOUT_S, "open")
        if reply["t"] == "open_failed":
            if reply.get("error") == "AudioFileError":
                raise AudioFileError(reply["message"])
            err = DeviceError(reply["message"])
            err.pcm_kind = reply.get("pcm_kind", "")
            raise err
        self.loop = RemoteLoop(self, reply, config, sample_rate=self.engine.sample_rate,
                               hop=self.engine.hop_length, needs_capture=source == "line")
        if self._forward is None:
            self._forward = threading.Thread(target=self._forward_commands, args=(commands,),
                                             name="audio-forward", daemon=True)
            self._forward.start()
        return self.loop

    # -- to the child -------------------------------------------------------------------
    def _send(self, message: dict) -> None:
        self._write(encode(message))

    def _write(self, data: bytes) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with self._write_lock:
            try:
                write_all(proc.stdin.fileno(), data)
            except (BrokenPipeError, OSError, ValueError):
                pass  # the child is gone: the reader reports it

    def send_command(self, cmd: object) -> None:
        """One command to the child (any thread); a command that cannot cross the wire is
        refused through the control inbox, like any command the engine refuses."""
        try:
            data = encode(command_message(cmd))
        except WireError as e:
            from device.sound.audio import Rejected

            self._to_control(Rejected(cmd, str(e)))
            return
        self._write(data)

    def _forward_commands(self, commands: queue.SimpleQueue) -> None:
        """The app's command queue into the pipe, in order, a burst per write."""
        from device.sound.audio import Rejected
        from device.sound.scheduling import name_thread

        name_thread()

        while not self._stopping.is_set():
            try:
                cmd = commands.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = []
            while True:
                try:
                    batch.append(encode(command_message(cmd)))
                except WireError as e:
                    self._to_control(Rejected(cmd, str(e)))
                if len(batch) >= 256 or commands.empty():
                    break
                cmd = commands.get_nowait()
            self._write(b"".join(batch))

    def record(self, folder: str) -> dict:
        """Start or stop a recording in the child; its reply (path, recording, error)."""
        self._send({"t": "record", "folder": str(folder)})
        return self._reply(REPLY_TIMEOUT_S, "record")

    # -- from the child -----------------------------------------------------------------
    _ANSWERS = {"start": ("ready", "error"), "open": ("opened", "open_failed"),
                "record": ("recorded",)}

    def _reply(self, timeout: float, what: str) -> dict:
        """The child's answer to ``what``; an answer to an earlier request that timed out
        is dropped, not taken for this one."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = self._replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise DeviceError(f"the audio process did not answer {what} within "
                                  f"{timeout:g} s") from None
            if reply["t"] == "exited":
                self._replies.put(reply)  # every later request fails the same way
                raise DeviceError(f"the audio process exited with code {reply['code']} "
                                  f"during {what} (its log is above)")
            if reply["t"] in self._ANSWERS[what]:
                return reply
            log.debug("audio process: a late %s answer dropped", reply["t"])

    def _read(self) -> None:
        from device.sound.scheduling import name_thread

        name_thread()
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        try:
            for message in read_messages(proc.stdout.fileno()):
                self._on_message(message)
        except WireError as e:
            log.error("audio process: %s", e)
        except Exception:  # the reader must report the end whatever it was
            log.exception("audio process: reading its messages failed")
        code = proc.wait()
        self.exit_code = code
        if self.loop is not None and not self._stopping.is_set():
            log.error("the audio process exited with code %d (its log is above)", code)
            self.loop._failed(f"the audio process exited with code {code}")
        self._replies.put({"t": "exited", "code": code})

    def _on_message(self, message: dict) -> None:
        kind = message["t"]
        if kind == "snapshot":
            if self.engine is not None:
                self.engine._update(message)
        elif kind == "stats":
            if self.engine is not None:
                self.engine.gain_reduction_db = float(message["gain_reduction_db"])
                self.engine.nonfinite_inputs = int(message["nonfinite_inputs"])
            if self.loop is not None:
                self.loop._update(message)
        elif kind == "control":
            try:
                self._to_control(command_of(message["cmd"]))
            except WireError as e:
                log.error("audio process: %s", e)
        elif kind == "say":
            self._say(str(message.get("text", "")))
        elif kind == "failure":
            if self.loop is not None:
                self.loop._failed(message.get("message", "the audio thread died"))
        elif kind == "stopped":
            pass
        else:  # ready, error, opened, open_failed, recorded: a reply someone waits for
            self._replies.put(message)

    # -- stop ---------------------------------------------------------------------------
    def stop(self, timeout: float = 5.0) -> None:
        """Stop the child: its audio first, a recording finished; idempotent."""
        self._stopping.set()
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._send({"t": "stop"})
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the audio process did not stop within %.1f s; killing it", timeout)
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(2.0)
        if self._forward is not None:
            self._forward.join(1.0)

    close = stop

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __repr__(self) -> str:
        return f"<AudioProcess pid={self.pid} exit={self.exit_code}>"


class RemoteEngine:
    """What the app reads of the engine in the audio process: the published snapshot, the
    limiter's meter; ``apply`` sends a command (applied at the child's next hop)."""

    def __init__(self, process: AudioProcess, ready: dict):
        self._process = process
        self.hop_length = int(ready["hop"])
        self.sample_rate = int(ready["sample_rate"])
        self.latency_samples = int(ready["latency_samples"])
        self.gain_reduction_db = 0.0
        self.nonfinite_inputs = 0
        self.snapshot: Any = snapshot_of(ready["snapshot"])

    @property
    def mode(self) -> str:
        return self.snapshot.mode

    def _update(self, message: dict) -> None:
        self.snapshot = snapshot_of(message, self.snapshot.controls.take)

    def apply(self, cmd: object) -> bool:
        self._process.send_command(cmd)
        return True

    def __repr__(self) -> str:
        return f"<RemoteEngine {self.snapshot.model} {self.snapshot.mode}>"


class RemoteLoop:
    """What the app reads of the audio loop in the audio process."""

    def __init__(self, process: AudioProcess, opened: dict, config: Any, *,
                 sample_rate: int, hop: int, needs_capture: bool):
        from device.sound.audio import AudioStats

        self._process = process
        self.config = config
        self.sample_rate = sample_rate
        self.hop = hop
        self.card_rate = opened.get("card_rate")
        self.warnings = list(opened.get("warnings", ()))
        self._expected = dict(opened["expected_latency"])
        self.stats = AudioStats()
        self.first_period_at: float | None = None
        self._running = True
        self._failure: BaseException | None = None
        self._percentiles: dict[str, float] = {}
        self.needs_capture = needs_capture

    def _update(self, message: dict) -> None:
        from device.sound.audio import AudioStats

        if "stats" in message:
            self.stats = AudioStats(**message["stats"])
            self._running = bool(message["running"])
            self.first_period_at = message["first_period_at"]
            self._percentiles = {k: float(v) for k, v in message["percentiles"].items()}

    def _failed(self, text: str) -> None:
        self._running = False
        if self._failure is None:
            self._failure = DeviceError(text)

    @property
    def running(self) -> bool:
        return self._running and self._process.exit_code is None

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def hop_cost_percentiles(self, percents: tuple[float, ...] = (50, 99, 99.9)
                             ) -> dict[str, float]:
        """The child's engine cost per hop in µs (as of its last report, at most 1 s old;
        the final figures once stopped)."""
        return {f"p{p:g}": self._percentiles.get(f"p{p:g}", 0.0) for p in percents}

    def expected_latency(self) -> dict[str, float]:
        return dict(self._expected)

    def start(self) -> RemoteLoop:
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._process.stop(timeout)
        self._running = False

    close = stop

    def __repr__(self) -> str:
        s = self.stats
        return (f"<RemoteLoop {'running' if self.running else 'stopped'} "
                f"{self.config.playback_device!r} hop={self.hop} hops={s.hops} xruns={s.xruns}>")


class RemoteRecorder:
    """The recorder slot's target in the app when the recorder lives in the audio process:
    ``toggle`` asks the child and waits for its answer (the control thread)."""

    def __init__(self, process: AudioProcess, folder: Any):
        self._process = process
        self._folder = folder  # a path, or a callable asked at each start (a stick)
        self.recording = False

    def toggle(self) -> Path | None:
        folder = self._folder() if callable(self._folder) else self._folder
        reply = self._process.record(str(folder))
        if reply.get("error"):
            raise DeviceError(f"recording: {reply['error']}")
        self.recording = bool(reply["recording"])
        return None if reply["path"] is None else Path(reply["path"])

    def push(self, block: Any) -> None:  # the audio thread is in the other process
        pass

    def close(self) -> None:
        pass  # the child finishes a recording in progress when it stops

    def __repr__(self) -> str:
        return f"<RemoteRecorder recording={self.recording}>"

