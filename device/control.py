"""The control thread: what a slow command does to the running instrument.

The audio thread applies at a hop boundary the commands that change the sound, and hands
the rest here (its ``to_control``): a model step (read, checked and prepared here, then
posted back as a swap), presets saved and recalled, a recording started or stopped, MIDI
learn from the keyboard, and a quit, which a live instrument asks to confirm.  None of
this may run on the audio thread: it reads and writes disk and takes as long as it takes.

The same thread closes the models swapped out and settles the garbage collector once the
senses have finished starting (device/sound/collector.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from device.state import commands as c

log = logging.getLogger("device.app")  # one logger name for the player, as before the split

CONFIRM_S = 3.0  # a second Shutdown (Cycle, q) within this many seconds quits


class Control:
    """Handles the commands the audio thread hands over, one at a time, off the audio thread.

    ``engine`` and ``loop`` are the running :class:`~device.sound.engine.Engine` and
    :class:`~device.sound.audio.AudioLoop`; ``inbox`` is the queue the loop's
    ``to_control`` fills.  ``post`` queues a command for the audio thread, ``say`` puts a
    short message on the display (``None`` clears it), ``stop`` asks the app to stop with
    exit code 0.  ``quit`` is ``[play] quit`` (``"exit"`` or ``"poweroff"``), ``profile``
    and ``num_threads`` are how a stepped-to model is prepared (``[audio] profile``,
    ``[model] num_threads``).  The parts the app could not start are ``None`` and their
    commands say so on the display.  The collector settles ``settle_s`` seconds after the
    first audio period.  ``remote``: the engine runs in the audio process
    (device/sound/remote.py), which loads a stepped-to model itself from its path.
    """

    def __init__(self, engine: Any, loop: Any, inbox: queue.SimpleQueue, *,
                 post: Callable[[object], None], say: Callable[[str | None], None],
                 stop: Callable[[], None], quit: str = "exit", profile: str = "safe",
                 num_threads: int = 1, library: Any = None, presets: Any = None,
                 recorder: Any = None, midi: Any = None, last_state: Any = None,
                 collector: Any = None, settle_s: float = 3.0, remote: bool = False):
        self.engine = engine
        self.loop = loop
        self._inbox = inbox
        self._post = post
        self._say = say
        self._stop = stop
        self._quit = quit
        self._profile = profile
        self._num_threads = num_threads
        self.library = library
        self.presets = presets
        self.recorder = recorder  # the audio thread's slot; its ``target`` is the Recorder
        self.midi = midi
        self.last_state = last_state
        self.collector = collector
        self._settle_s = settle_s
        self._remote = remote
        self._settled = False
        self._shutdown_asked = -1e9

    def run(self, stopping: threading.Event) -> None:
        """Handle commands until ``stopping`` is set (the body of the control thread).

        An expected failure (:class:`~device.errors.AesynthError`, ``OSError``: a full
        disk, a bad bundle) is one line in the log and a message on the display; any other
        is logged with its traceback; neither ends the thread.
        """
        from device.errors import AesynthError

        while not stopping.is_set():
            release = getattr(self.engine, "release_retired", None)
            if release is not None:
                release()  # close models swapped out, here rather than on the audio thread
            self._settle_collector()
            try:
                cmd = self._inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self.handle(cmd)
            except (AesynthError, OSError) as e:  # expected (a full disk, a bad bundle): a line
                log.error("%s: %s", type(cmd).__name__, e)
                self._say(f"{e}"[:90])
            except Exception as e:  # one bad command must not end the control thread
                log.exception("handling %r failed", cmd)
                self._say(f"error: {e}"[:60])

    def _settle_collector(self) -> None:
        first = self.loop.first_period_at if self.loop is not None else None
        due = (not self._settled and first is not None
               and time.monotonic() - first >= self._settle_s)
        if due or (self._settled and self.collector.wants_settle):
            self._settled = True
            self.collector.settle()
            log.debug("garbage collector settled: %s", self.collector.report().summary())

    def handle(self, cmd: object) -> None:
        """Do what ``cmd`` asks (on the calling thread); raises what the part doing it
        raises: :class:`~device.errors.AesynthError` or ``OSError`` when a model or a file
        cannot be read or written."""
        from device.sound.audio import Rejected

        match cmd:
            case Rejected():
                log.warning("refused %r: %s", cmd.command, cmd.error)
            case c.Shutdown():
                self._shutdown()
            case c.StepModel(delta):
                self.step_model(delta)
            case c.SavePreset(slot):
                if self.presets is not None:
                    snap = self.engine.snapshot
                    self.presets.save(snap.model, slot, snap.controls)
                    self._say(f"saved preset {slot}")
            case c.RecallPreset(slot):
                if self.presets is not None:
                    self._recall_preset(slot)
            case c.ToggleRecording():
                self.toggle_recording()
            case c.ToggleLearn() | c.StepLearn():  # from the keyboard
                if self.midi is None:
                    self._say("learn: no MIDI controller")
                elif isinstance(cmd, c.ToggleLearn):
                    self.midi.toggle_learn()
                else:
                    self.midi.step_learn(cmd.delta)
            case _:
                log.warning("no one handles %r", cmd)

    def _shutdown(self) -> None:
        # A live instrument must not quit on one stray press: ask, then quit on a second
        # Shutdown within CONFIRM_S.
        now = time.monotonic()
        if now - self._shutdown_asked <= CONFIRM_S:
            if self._quit == "poweroff":
                from device.state.poweroff import request_poweroff

                self._say(request_poweroff())  # systemd stops us, then the box
                return
            log.info("shutdown confirmed")
            self._stop()
        else:
            self._shutdown_asked = now
            self._say("again to quit")

    def _recall_preset(self, slot: int) -> None:
        from device.state.presets import commands_for

        snap = self.engine.snapshot
        controls = self.presets.load(snap.model, slot, units=snap.controls.units)
        if controls is None:
            self._say(f"no preset {slot}")
            return
        for unit_cmd in commands_for(controls, snap.controls):
            self._post(unit_cmd)
        self._say(f"preset {slot}")

    def step_model(self, delta: int) -> None:
        """Load the model ``delta`` places along the library, prepare it here and post the
        swap; a model at another sample rate or hop is refused with a message (a restart
        plays it).  Raises :class:`~device.errors.AesynthError` when it cannot be loaded."""
        if self.library is None:
            self._say("no model library")
            return
        from device.sound.engine import prepare_model
        from device.sound.profiles import bundle_for

        entry = self.library.step(delta)
        self._say(f"loading {getattr(entry, 'name', entry)}")
        bundle = bundle_for(self.library.load(entry), self._profile)
        if bundle.frame.sample_rate != self.loop.sample_rate or \
                bundle.frame.hop_length != self.loop.hop:
            self._say(f"{bundle.name}: other rate/hop")
            log.warning("model %s needs %d Hz hop %d; playing %d Hz hop %d: restart to switch",
                        bundle.name, bundle.frame.sample_rate, bundle.frame.hop_length,
                        self.loop.sample_rate, self.loop.hop)
            return
        if self._remote:  # the audio process prepares it; the commands after wait for it
            from device.sound.wire import LoadModel

            swap: object = LoadModel(bundle.source, self._profile, self._num_threads)
        else:
            swap = c.SwapModel(prepare_model(bundle, num_threads=self._num_threads))
        if self.last_state is not None:
            self.last_state.flush()  # the model left keeps its last moves (offers are per model)
        self._post(swap)
        self._restore_last(bundle.name, bundle.units)
        self._say(None)
        if self._settled:
            self.collector.settle()  # the new model's objects live until the next swap

    def _restore_last(self, model: str, units: int) -> None:
        """The model stepped to comes back as it was left (its last state, the motion take
        included): posted after the swap, so they reach the new model's controls."""
        if self.presets is None:
            return
        from device.state.presets import commands_for

        last = self.presets.load_last(model, units=units)
        if last is not None:
            for cmd in commands_for(last):
                self._post(cmd)

    @property
    def recording(self) -> bool:
        """Whether the recorder is recording (its own state, here or in the audio process)."""
        target = getattr(self.recorder, "target", None)
        return bool(target is not None and target.recording)

    def toggle_recording(self) -> None:
        """Start a recording of the output, or finish the one in progress; says which."""
        target = getattr(self.recorder, "target", None)
        if target is None:
            self._say("no recorder")
            return
        path = target.toggle()
        self._say("recording" if self.recording else "recording saved")
        log.info("%s %s", "recording to" if self.recording else "recorded", path)

    def __repr__(self) -> str:
        return (f"<Control recording={self.recording} library={self.library is not None} "
                f"presets={self.presets is not None}>")
