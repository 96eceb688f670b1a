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
                 say: Callable[[str], None] | None = None, verbosity: int = 0,
                 cancel: threading.Event | None = None, command: list[str] | None = None):
        """``cancel``: set by the app to stop waiting for the child's answers (a SIGTERM
        while it starts); ``command``: the child's command line (tests run fakes)."""
        self._cancel = cancel or threading.Event()
        self._command = command or [sys.executable, "-m", "device.sound.audio_child",
                                    str(verbosity)]
        self._to_control = to_control
        self._say = say or (lambda text: None)
        self._proc: subprocess.Popen | None = None
        self._write_lock = threading.Lock()
        self._replies: queue.SimpleQueue = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._forward: threading.Thread | None = None
        self._stopping = threading.Event()
        self.engine: RemoteEngine | None = None
        self.loop: RemoteLoop | None = None
        self.exit_code: int | None = None
        self.recording = False  # as the child last said
        self._asked = 0         # numbered requests (record): a late answer is not the next's
        self._opening: tuple[Any, str] | None = None  # the open asked for: config, source

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
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=str(_ROOT),
            bufsize=0, close_fds=True)
        self._reader = threading.Thread(target=self._read, name="audio-reader", daemon=True)
        self._reader.start()
        self._send({"t": "start", **spec})
        reply = self._reply(START_TIMEOUT_S, "start")
        if reply["t"] == "error":
            self.stop()
            raise ModelError(reply.get("message", "the audio process could not load the model"))
        assert self.engine is not None  # made by the reader, before any snapshot after it
        return self.engine

    def open(self, config: Any, source: str, *, commands: queue.SimpleQueue) -> RemoteLoop:
        """Open the card in the child (``config`` an AudioConfig, ``source`` "line", "none"
        or a file path) and start forwarding ``commands``.  Raises what the child's
        AudioLoop.start raised, with its message: DeviceError (``pcm_kind`` set) or
        AudioFileError."""
        import dataclasses

        self._opening = (config, source)
        self._send({"t": "open", "config": dataclasses.asdict(config), "source": source})
        reply = self._reply(REPLY_TIMEOUT_S, "open")
        if reply["t"] == "open_failed":
            if reply.get("error") == "AudioFileError":
                raise AudioFileError(reply["message"])
            err = DeviceError(reply["message"])
            err.pcm_kind = reply.get("pcm_kind", "")
            raise err
        assert self.loop is not None  # made by the reader, before any statistics after it
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

    def _frame(self, cmd: object) -> bytes:
        """``cmd``'s frame; b"" for a command that cannot cross the wire, which is refused
        through the control inbox like any command the engine refuses."""
        try:
            return encode(command_message(cmd))
        except WireError as e:
            from device.sound.audio import Rejected

            self._to_control(Rejected(cmd, str(e)))
            return b""

    def send_command(self, cmd: object) -> None:
        """One command to the child (any thread)."""
        self._write(self._frame(cmd))

    def _forward_commands(self, commands: queue.SimpleQueue) -> None:
        """The app's command queue into the pipe, in order, a burst per write."""
        from device.sound.scheduling import name_thread

        name_thread()
        while not self._stopping.is_set():
            try:
                batch = [self._frame(commands.get(timeout=0.1))]
            except queue.Empty:
                continue
            while len(batch) < 256 and not commands.empty():
                batch.append(self._frame(commands.get_nowait()))
            self._write(b"".join(batch))

    def record(self, folder: str) -> dict:
        """Start or stop a recording in the child; its reply (path, recording, error).
        Raises DeviceError when the child does not answer within REPLY_TIMEOUT_S (a
        stalled child with its input full included: the request is sent from a thread of
        its own, so the caller's wait is bounded)."""
        self._asked += 1
        self._send_soon({"t": "record", "folder": str(folder), "id": self._asked})
        return self._reply(REPLY_TIMEOUT_S, "record", ask=self._asked)

    def _send_soon(self, message: dict) -> None:
        """Send ``message`` from a short-lived thread: the caller never waits behind a
        writer blocked on a full pipe (a stalled child)."""
        threading.Thread(target=self._write, args=(encode(message),), name="audio-send",
                         daemon=True).start()

    # -- from the child -----------------------------------------------------------------
    _ANSWERS = {"start": ("ready", "error"), "open": ("opened", "open_failed"),
                "record": ("recorded",)}

    def _reply(self, timeout: float, what: str, ask: int | None = None) -> dict:
        """The child's answer to ``what`` (to request ``ask`` where requests are numbered);
        an answer to an earlier request that timed out is dropped, not taken for this one."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if self._cancel.is_set():
                raise DeviceError(f"stopped while waiting for the audio process's {what}")
            try:
                reply = self._replies.get(timeout=min(0.1, max(0.0, left)))
            except queue.Empty:
                if left > 0:
                    continue
                raise DeviceError(f"the audio process did not answer {what} within "
                                  f"{timeout:g} s") from None
            if reply["t"] == "exited":
                self._replies.put(reply)  # every later request fails the same way
                raise DeviceError(f"the audio process exited with {_exit_text(reply['code'])} "
                                  f"during {what}")
            if reply["t"] in self._ANSWERS[what] and reply.get("id") == ask:
                return reply
            log.debug("audio process: a late %s answer dropped", reply["t"])

    def _read(self) -> None:
        from device.sound.scheduling import name_thread

        name_thread()
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        why = None
        try:
            for message in read_messages(proc.stdout.fileno()):
                try:
                    self._on_message(message)
                except (WireError, KeyError, TypeError, ValueError) as e:
                    # one message this app cannot read: said, and the next ones still count
                    log.error("audio process: a %r message could not be read: %s",
                              message.get("t"), e)
        except Exception as e:  # a garbled stream cannot be resynchronised: end the child
            why = f"its messages are garbled: {e}"
            log.error("the audio process: %s; stopping it", why)
            proc.kill()
        code = proc.wait()
        self.exit_code = code
        if self.loop is not None and not self._stopping.is_set():
            why = why or f"it exited with {_exit_text(code)}"
            log.error("the audio process stopped: %s", why)
            self.loop._failed(f"the audio process stopped: {why}")
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
        elif kind == "control":  # a WireError here is said by _read, and the next counts
            self._to_control(command_of(message["cmd"]))
        elif kind == "say":
            self._say(str(message.get("text", "")))
        elif kind == "record_failed":  # the child's recorder ended a recording by itself
            self.recording = bool(message["recording"])
            self._say(str(message["message"]))
        elif kind == "failure":
            if self.loop is not None:
                self.loop._failed(message.get("message", "the audio thread died"))
        elif kind == "stopped":
            pass
        else:  # ready, error, opened, open_failed, recorded: a reply someone waits for
            # The stand-ins are made here, in the order of the child's messages, so that
            # no snapshot or statistics sent right after the answer is missed.
            if kind == "ready":
                self.engine = RemoteEngine(self, message)
            elif kind == "opened" and self._opening is not None:
                config, source = self._opening
                self.loop = RemoteLoop(self, message, config,
                                       sample_rate=self.engine.sample_rate,
                                       hop=self.engine.hop_length,
                                       needs_capture=source == "line")
            elif kind == "recorded":  # late or not, it says what the child is doing
                self.recording = bool(message["recording"])
            self._replies.put(message)

    # -- stop ---------------------------------------------------------------------------
    def stop(self, timeout: float = 5.0) -> None:
        """Stop the child: its audio first, a recording finished; idempotent."""
        self._stopping.set()
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # From a thread of its own: with the child stalled and its input full, the
            # forward thread holds the write lock in a blocked write, and so would we.
            sender = threading.Thread(target=self._say_stop, name="audio-stop", daemon=True)
            sender.start()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the audio process did not stop within %.1f s; killing it", timeout)
                proc.kill()  # a write blocked on its input now fails: the threads end
                proc.wait()
            sender.join(1.0)
        if self._reader is not None:
            self._reader.join(2.0)
        if self._forward is not None:
            self._forward.join(1.0)

    def _say_stop(self) -> None:
        self._write(encode({"t": "stop"}))
        with self._write_lock:  # then end of input: the child stops even if "stop" was lost
            try:
                self._proc.stdin.close()
            except OSError:
                pass

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

    @property
    def recording(self) -> bool:
        """What the child last said: an answer that came after ``toggle`` gave up counts, and
        so does its report of a recording a failed write ended."""
        return self._process.recording

    def toggle(self) -> Path | None:
        """Start or stop the child's recording; the file's path.  Raises DeviceError when
        the child refuses or does not answer."""
        folder = self._folder() if callable(self._folder) else self._folder
        reply = self._process.record(str(folder))
        if reply.get("error"):
            raise DeviceError(f"recording: {reply['error']}")
        return None if reply["path"] is None else Path(reply["path"])

    def push(self, block: Any) -> None:  # the audio thread is in the other process
        pass

    def close(self) -> None:
        pass  # the child finishes a recording in progress when it stops

    def __repr__(self) -> str:
        return f"<RemoteRecorder recording={self.recording}>"


def _exit_text(code: int) -> str:
    """"code 1", or for a process a signal ended "signal SIGKILL" (Popen's -9)."""
    if code < 0:
        import signal

        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
