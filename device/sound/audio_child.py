"""The audio process (``[audio] process = "own"``): the engine and the audio loop, alone.

Run by the app as ``python -m device.sound.audio_child`` (device/sound/remote.py);
never by hand.  In the same process as the app, the audio thread shares one
GIL with the MIDI, display, control and USB threads: measured at the low
profile (docs/play.md) a hop's wall time included waits of up to 13 ms
(p99.9) for it, against a 2.9 ms hop.  Here the audio thread shares its GIL
only with two light threads of this process:

* the *reader* (this module's main thread) decodes the app's messages
  (device/sound/wire.py) and queues the commands for the audio thread, which
  drains them at hop boundaries exactly as in one process; it also loads a
  model the app steps to (LoadModel) and starts and stops recordings;
* the *publisher* sends the engine's snapshot when it changes, the loop's
  statistics every 100 ms, and the commands the audio thread hands over
  (StepModel, presets, Rejected reports) to the app's control thread.

Protocol (each line one message, app → child unless marked):
``start`` (model, profile, phase, threads, mode, scheduling) → ``ready`` (hop,
rate, latency, first snapshot) or ``error``; ``open`` (AudioConfig fields,
source) → ``opened`` (expected latency, card rate) or ``open_failed``
(message, which PCM); commands at any time; ``record`` (folder) →
``recorded`` (path, recording); ``stop`` → ``stopped`` (final statistics),
then exit 0.  Unasked, child → app: ``record_failed`` (message, recording) when a
recording's write fails (a full disk, a stick pulled out): the recorder has ended
it, and the app's state must say so before the next press.  End of input (the app
died) stops the audio and exits 0: a supervisor restarting the app must find the
card free.  Logging goes to
stderr, shared with the app; this process's stdout is the message channel
(anything printed is moved to stderr first).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import sys
import threading
import time
from typing import Any

from device.sound.wire import (WireError, command_message, command_of, encode,
                               read_messages, snapshot_message, write_all)
from device.sound.recorder import RecorderSlot
from device.state import commands as c

log = logging.getLogger("device.audio_child")

PUBLISH_S = 0.02       # snapshot and hand-over poll
STATS_S = 0.1          # statistics to the app
PERCENTILES_S = 1.0    # hop-cost percentiles (a cumulative sum over the histogram)
SETTLE_S = 3.0         # as the app: freeze the collector once the first periods have played


class AudioChild:
    """One audio process: owns the engine, the loop, the source and the recorder."""

    def __init__(self, in_fd: int, out_fd: int):
        self.in_fd = in_fd
        self.out_fd = out_fd
        self._write_lock = threading.Lock()
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()   # the audio thread's hand-over
        self.engine: Any = None
        self.loop: Any = None
        self.recorder: Any = None
        self.tap = RecorderSlot()
        self.collector: Any = None
        self._stopping = threading.Event()
        self._publisher: threading.Thread | None = None
        self._settled = False  # the collector frozen once the first periods have played
        self._pc: dict = {}    # the last hop-cost percentiles (µs)

    # -- messages out -------------------------------------------------------------------
    def send(self, message: dict) -> None:
        data = encode(message)
        with self._write_lock:
            try:
                write_all(self.out_fd, data)
            except (BrokenPipeError, OSError):  # the app is gone: the reader sees EOF next
                self._stopping.set()

    # -- the reader: the main thread ----------------------------------------------------
    def run(self) -> int:
        messages = read_messages(self.in_fd)
        try:
            first = next(messages, None)
            if first is None:
                return 0
            if first.get("t") != "start":
                log.error("audio process: first message must be start, got %r", first.get("t"))
                return 2
            if not self._start(first):
                return 3
            for message in messages:
                if message["t"] == "stop":
                    break
                self._handle(message)
        except WireError as e:
            log.error("audio process: the app's messages are garbled: %s", e)
            self._finish()
            return 1
        self._finish()
        return 0

    def _start(self, spec: dict) -> bool:
        from device.errors import AesynthError
        from device.models.bundle import read_bundle
        from device.sound.collector import QuietCollector
        from device.sound.engine import Engine
        from device.sound.profiles import bundle_for

        self.collector = QuietCollector().hold()
        if spec.get("others_priority"):
            from device.sound.scheduling import share_realtime

            before = share_realtime(int(spec["others_priority"]))
            if isinstance(before, str):
                log.warning("audio process: %s", before)
        sys.setswitchinterval(float(spec.get("switch_interval_ms", 1.0)) / 1000.0)
        if not isinstance(spec.get("model"), str):
            self.send({"t": "error", "message": f"start: model must be a bundle path, got "
                                                f"{spec.get('model')!r}"})
            return False
        try:
            bundle = bundle_for(read_bundle(spec["model"]), spec.get("profile", "safe"))
            self.engine = Engine(bundle, phase=spec.get("phase", "rtpghi"),
                                 num_threads=int(spec.get("num_threads", 1)),
                                 mode=spec.get("mode", "resynth"))
            gate = spec.get("note_gate")
            if gate is not None and hasattr(self.engine, "notes"):
                self.engine.apply(c.SetNoteGate(*gate))
        except AesynthError as e:
            self.send({"t": "error", "message": str(e)})
            return False
        self.bundle = bundle
        self.send({"t": "ready", "hop": self.engine.hop_length,
                   "sample_rate": bundle.frame.sample_rate,
                   "latency_samples": self.engine.latency_samples,
                   "snapshot": snapshot_message(self.engine.snapshot, send_take=True)})
        self._publisher = threading.Thread(target=self._publish, name="audio-publisher",
                                           daemon=True)
        self._publisher.start()
        return True

    def _handle(self, message: dict) -> None:
        kind = message["t"]
        if kind == "open":
            self._open(message)
        elif kind == "record":
            self._record(message.get("folder"), message.get("id"))
        elif kind == "LoadModel":
            self._load(message)
        else:
            try:
                cmd = command_of(message)
            except WireError as e:  # one bad message is refused; the rest still play
                log.error("audio process: %s", e)
                return
            self.commands.put(cmd)

    def _open(self, message: dict) -> None:
        from device.errors import AesynthError
        from device.sound.audio import AudioConfig, AudioLoop, make_source

        if self.loop is not None:
            self.loop.stop()
            self.loop = None
        try:
            source = make_source(message.get("source", "none"), self.bundle.frame.sample_rate)
            loop = AudioLoop(self.engine, source, sample_rate=self.bundle.frame.sample_rate,
                             commands=self.commands, to_control=self.outbox.put,
                             config=AudioConfig(**message["config"]), recorder=self.tap,
                             latency_samples=self.engine.latency_samples)
            loop.start()
        except AesynthError as e:
            self.send({"t": "open_failed", "message": str(e), "error": type(e).__name__,
                       "pcm_kind": getattr(e, "pcm_kind", "")})
            return
        self.loop = loop
        self.send({"t": "opened", "expected_latency": loop.expected_latency(),
                   "card_rate": loop.card_rate, "warnings": list(loop.warnings)})

    def _load(self, message: dict) -> None:
        """Prepare the model stepped to, here on the reader thread, then queue the swap:
        the commands sent after it (the model's last state) wait in the pipe until then.
        The app has checked its rate and hop already (device/control.py, step_model)."""
        from device.errors import AesynthError
        from device.models.bundle import read_bundle
        from device.sound.engine import prepare_model
        from device.sound.profiles import bundle_for

        try:
            load = command_of(message)
            bundle = bundle_for(read_bundle(load.path), load.profile)
            prepared = prepare_model(bundle, num_threads=load.num_threads)
        except AesynthError as e:
            log.error("audio process: cannot load %s: %s", message.get("path"), e)
            self.send({"t": "say", "text": str(e)[:90]})
            return
        self.commands.put(c.SwapModel(prepared))
        if self._settled:
            self.collector.settle()  # the new model's objects live until the next swap

    def _record(self, folder: object, ask: object = None) -> None:
        from device.errors import AesynthError

        try:
            if self.recorder is None:
                from device.sound.recorder import Recorder

                self.recorder = Recorder(str(folder), self.bundle.frame.sample_rate,
                                         on_error=self._record_failed)
                self.tap.target = self.recorder
            elif not self.recorder.recording:
                self.recorder.directory = str(folder)  # asked at each start, as in one process
            path = self.recorder.toggle()
        except (AesynthError, OSError) as e:
            self.send({"t": "recorded", "id": ask, "path": None,
                       "recording": self.recorder is not None and self.recorder.recording,
                       "error": str(e)})
            return
        self.send({"t": "recorded", "id": ask, "path": None if path is None else str(path),
                   "recording": self.recorder.recording})

    def _record_failed(self, text: str) -> None:
        """The recorder's report (its writer thread): a write failed and the recording has
        ended, or a stop could not finish the file.  Sent with the recorder's state: the
        app's is only what the child last said."""
        self.send({"t": "record_failed", "message": text,
                   "recording": self.recorder.recording})

    def _finish(self) -> None:
        self._stopping.set()
        if self._publisher is not None:
            self._publisher.join(2.0)
        if self.loop is not None:
            self.loop.stop()
        if self.recorder is not None:
            self.recorder.close()  # a recording in progress is finished, not lost
        if self.loop is not None or self.engine is not None:
            try:
                self._send_stats(final=True)
                self.send({"t": "stopped"})
            except WireError as e:
                log.error("audio process: %s", e)

    # -- the publisher ------------------------------------------------------------------
    def _publish(self) -> None:
        from device.sound.scheduling import name_thread

        name_thread()
        last_snap = None
        last_take: object = None
        next_stats = next_pc = 0.0
        failure_sent = False
        while not self._stopping.wait(PUBLISH_S):
            try:
                snap = self.engine.snapshot
                if snap is not last_snap:
                    take = snap.controls.take
                    self.send(snapshot_message(snap, send_take=take is not last_take))
                    last_snap, last_take = snap, take
                while not self.outbox.empty():
                    cmd = self.outbox.get_nowait()
                    self.send({"t": "control", "cmd": command_message(cmd)})
                now = time.monotonic()
                loop = self.loop
                if now >= next_pc and loop is not None:
                    self._pc = loop.hop_cost_percentiles()
                    next_pc = now + PERCENTILES_S
                if now >= next_stats:
                    self._send_stats()
                    next_stats = now + STATS_S
                if loop is not None and loop.failure is not None and not failure_sent:
                    failure_sent = True
                    self.send({"t": "failure", "message":
                               f"{type(loop.failure).__name__}: {loop.failure}"})
                first = loop.first_period_at if loop is not None else None
                if not self._settled and first is not None and now - first >= SETTLE_S:
                    self._settled = True
                    self.collector.settle()
            except WireError as e:  # a value JSON cannot carry: said, and the rest goes on
                log.error("audio process: %s", e)

    def _send_stats(self, final: bool = False) -> None:
        loop = self.loop
        message: dict = {"t": "stats", "gain_reduction_db": float(self.engine.gain_reduction_db),
                         "nonfinite_inputs": int(getattr(self.engine, "nonfinite_inputs", 0))}
        if loop is not None:
            if final:
                self._pc = loop.hop_cost_percentiles()
            message.update(stats=dataclasses.asdict(loop.stats), running=loop.running,
                           first_period_at=loop.first_period_at, percentiles=self._pc)
        self.send(message)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # The message channel is this process's stdout: keep a private copy of it and send
    # fd 1 to stderr, so that nothing a library prints can garble a frame.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    # SIGINT (a terminal's Ctrl-C) and SIGTERM (systemd stops the whole service) reach
    # this process too: the app decides, and stops us with "stop" or by closing our input,
    # so that a recording in progress is finished and the card closed in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from device import console
    from device.sound.scheduling import name_thread

    console.setup(int(args[0]) if args and args[0].isdigit() else 0)
    for handler in logging.getLogger().handlers:  # its lines told apart from the app's
        handler.setFormatter(logging.Formatter(console.FORMAT.replace(
            "%(name)s", "%(name)s [audio process]")))
    name_thread("audio-reader")  # this thread reads the app's messages (top -H)
    return AudioChild(0, out_fd).run()


if __name__ == "__main__":
    sys.exit(main())
