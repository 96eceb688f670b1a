"""`aesynth play`: load a model, start the audio thread, and wire the senses to it.

Threads (design.md): the audio thread owns the engine; the *control* thread
does the slow work the audio thread hands it (model steps, presets,
recording, shutdown: device/control.py); the *ui* thread watches the published
snapshots and updates the display and the controller LEDs when they change
(device/senses/feedback.py).  MIDI, GPIO and keyboard callbacks only post
commands.  App builds the parts, wires them, starts and stops them in order.

What was asked for by name works or stops the app with a line naming it
(device/state/fallbacks.py); only what nobody named falls back.  When ALSA's
``default`` device does not open (a desktop or a container with no sound card)
playback goes to ALSA's ``null`` device paced by the clock, with a warning and
"no sound card" on the display (``[audio] fallback = "fail"`` exits instead);
pass ``--output-device out.wav`` to hear later what was played.  When the
``default`` capture device does not open the input becomes silence ("no
line-in"; generate mode still sounds).  With ``auto`` buttons and no GPIO the
MODE/MODEL buttons are keyboard keys; with an ``auto`` display and no OLED the
table is drawn in the terminal.

Exit codes, for a supervisor (systemd ``RestartPreventExitStatus=2 3``):
0 stopped on request (SIGTERM, SIGINT, Cycle, ``--duration``); 1 a thread
died; 2 bad arguments or config (including a display, buttons or mapping
asked for by name that cannot be used); 3 no model could be loaded; 4 a sound
card could not be opened (one named, or the default with ``fallback =
"fail"``): worth retrying later.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

from device.control import Control
from device.senses.feedback import Feedback
from device.state import commands as c

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_MODEL, EXIT_AUDIO = 0, 1, 2, 3, 4
MESSAGE_S = 3.0  # how long a message ("saved preset 1") stays on the display
# The senses finish starting (imports, first frame, MIDI port) in their own threads after
# the first period; the garbage collector stays held until then (device/sound/collector.py).
SETTLE_S = 3.0


def wav_device(value: str) -> str:
    """``out.wav`` → an inline ALSA file PCM writing that WAV (null slave, clock paced)."""
    from device.state.config import is_wav_path

    if is_wav_path(value):
        path = os.path.abspath(value).replace("'", "")
        return f"file:'{path}',wav"
    return value


class App:
    """The instrument: built from a :class:`~device.state.config.Config`, run until stopped.

    Hardware comes in through the constructor for tests: ``display_device`` (a
    luma device), ``pin_factory`` (gpiozero), ``midi_backend`` (mido backend
    name), ``keyboard_stream`` (a terminal); ``engine_factory(bundle)`` replaces
    :class:`device.sound.engine.Engine`.
    """

    def __init__(self, config: Any, *, display_device: Any = None, pin_factory: Any = None,
                 midi_backend: str | None = None, keyboard_stream: Any = None,
                 engine_factory: Any = None):
        self.config = config
        self._engine_factory = engine_factory
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        self._control_inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closers: list[Any] = []
        self._display_device = display_device
        self._pin_factory = pin_factory
        self._midi_backend = midi_backend
        self._keyboard_stream = keyboard_stream
        self.exit_code = EXIT_OK
        self._message: tuple[str | None, float] = (None, 0.0)  # text, when it was said
        self.note: str | None = None  # shown while no message is: "no sound card"
        self.engine: Any = None
        self.loop: Any = None
        self.audio_process: Any = None  # device.sound.remote.AudioProcess with process = "own"
        self.library: Any = None
        self.presets: Any = None
        self.recorder: Any = None
        self.display: Any = None
        self.midi: Any = None
        self.notes: Any = None
        self.buttons: Any = None
        self.usb: Any = None
        self.last_state: Any = None     # saves the controls across restarts
        self.control: Any = None        # device.control.Control: the control thread's work
        self.feedback: Any = None       # device.senses.feedback.Feedback: the ui thread's
        self._switch_interval: float | None = None
        self.collector: Any = None
        self._scheduling: tuple[int, tuple[int, int]] | None = None  # thread, policy before
        self._closed = False
        self.health: Any = None
        self.last_error: tuple[str, float] | None = None  # (text, wall clock) for the status

    # -- a short message for the display, shown for MESSAGE_S ---------------------------
    @property
    def message(self) -> str | None:
        text, since = self._message
        if text is not None and time.monotonic() - since > MESSAGE_S:
            return None
        return text

    @message.setter
    def message(self, text: str | None) -> None:
        self._message = (text, time.monotonic())  # one assignment: safe from any thread

    # -- senses call this ----------------------------------------------------------
    def post(self, cmd: object) -> None:
        """Queue a command for the audio thread (any thread, never blocks)."""
        self.commands.put(cmd)

    def current_controls(self) -> Any:
        return self.engine.snapshot.controls

    @property
    def recording(self) -> bool:
        """Whether a recording is running (:attr:`Control.recording`)."""
        return self.control is not None and self.control.recording

    @property
    def display_state(self) -> Any:
        """The last :class:`~device.senses.display.DisplayState` shown, or None."""
        return self.feedback.state if self.feedback is not None else None

    def request_stop(self, code: int = EXIT_OK) -> None:
        if not self._stopping.is_set():
            self.exit_code = code
            self._stopping.set()

    # -- start -------------------------------------------------------------------------
    def start(self) -> App:
        """Model, engine, senses, then the audio thread; raises StartError on failure.

        The senses start first so that their imports and threads do not compete
        with the first periods of audio (a startup xrun); it costs a few
        hundred ms before the first period.  On failure what was started is closed.
        """
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> App:
        from device.sound.collector import QuietCollector
        from device.sound.profiles import bundle_for

        cfg = self.config
        self.collector = QuietCollector().hold()
        self._share_realtime()
        bundle = bundle_for(self._load_model(), cfg.audio.profile)
        if cfg.audio.own_process:
            self._start_audio_process(bundle)
        elif self._engine_factory is not None:
            self.engine = self._engine_factory(bundle)
        else:
            from device.errors import AesynthError
            from device.sound.engine import Engine

            try:
                self.engine = Engine(bundle, phase=cfg.model.phase,
                                     num_threads=cfg.model.num_threads, mode=cfg.play.mode)
            except AesynthError as e:  # a model the interpreter refuses, a bad phase name
                raise StartError(EXIT_MODEL, f"cannot play {bundle.name}: {e}") from None
        if cfg.play.mode != self.engine.mode:
            self.engine.apply(c.SetMode(cfg.play.mode))  # before the audio thread owns it
        n = cfg.notes
        if hasattr(self.engine, "notes") and self.audio_process is None:  # the child's: spec
            self.engine.apply(c.SetNoteGate(n.reference_note, n.attack_s, n.release_s))
        self._switch_interval = sys.getswitchinterval()  # restored by close()
        sys.setswitchinterval(cfg.audio.switch_interval_ms / 1000.0)
        self._start_storage(bundle)
        self._start_display()
        self._start_midi()
        self._start_notes()
        self._start_buttons()
        # Everything loaded so far lives until exit: collect the startup garbage now, while
        # no audio runs, and freeze the rest; the control thread freezes again once the
        # senses have settled (SETTLE_S) and re-enables automatic collection.
        gc.collect()
        gc.freeze()
        self._start_audio(bundle)
        self._start_health()
        self._start_control()
        self._start_feedback()
        return self

    def _start_audio_process(self, bundle: Any) -> None:
        """``[audio] process = "own"`` (or "auto" at the low profile): the engine in a process
        of its own (device/sound/remote.py); ``self.engine`` stands for it."""
        from device.errors import AesynthError, DeviceError
        from device.sound.remote import AudioProcess

        cfg = self.config
        level = logging.getLogger().getEffectiveLevel()
        self.audio_process = AudioProcess(
            to_control=self._control_inbox.put, say=self._say, cancel=self._stopping,
            verbosity=2 if level <= logging.DEBUG else 1 if level <= logging.INFO else 0)
        self._closers.insert(0, self.audio_process)  # stopped last of all if never opened
        n = cfg.notes
        try:
            self.engine = self.audio_process.start({
                "model": bundle.source, "profile": cfg.audio.profile,
                "phase": cfg.model.phase, "num_threads": cfg.model.num_threads,
                "mode": cfg.play.mode,
                "note_gate": [n.reference_note, n.attack_s, n.release_s],
                "switch_interval_ms": cfg.audio.switch_interval_ms,
                "others_priority": cfg.audio.others_priority if cfg.audio.realtime else 0})
        except DeviceError as e:  # the child did not start or answer: worth retrying later
            if self._stopping.is_set():  # asked to stop (SIGTERM) while it started
                raise StartError(EXIT_OK, "stopped before the audio started") from None
            raise StartError(EXIT_AUDIO, f"cannot play {bundle.name}: {e}") from None
        except AesynthError as e:  # the child's interpreter refused the model
            raise StartError(EXIT_MODEL, f"cannot play {bundle.name}: {e}") from None
        log.info("audio: engine in its own process (pid %d)", self.audio_process.pid)

    def _share_realtime(self) -> None:
        """Real-time priority for this thread and so for every thread started from it."""
        a = self.config.audio
        if not (a.realtime and a.others_priority):
            return
        from device.sound.scheduling import share_realtime

        before = share_realtime(a.others_priority)
        if isinstance(before, str):
            log.warning("audio: %s", before)
        else:
            self._scheduling = (threading.get_ident(), before)

    def _load_model(self) -> Any:
        from device.errors import AesynthError
        from device.models.choose import NoModelError, choose_model

        try:
            bundle, self.library = choose_model(self.config.model)
        except NoModelError as e:
            raise StartError(EXIT_MODEL, str(e)) from None
        except AesynthError as e:
            raise StartError(EXIT_MODEL, f"cannot load the model: {e}") from None
        return bundle

    def _source_kind(self) -> str:
        """``[play] input``: "line", "none" or the audio file's path, expanded."""
        from device.state.config import expand

        kind = self.config.play.input
        return kind if kind in ("line", "none") else str(expand(kind))

    def _start_audio(self, bundle: Any) -> None:
        from device.errors import AudioFileError, ConfigError, DeviceError
        from device.sound.audio import AudioLoop, SilentSource, make_source
        from device.sound.opening import open_with_fallbacks
        from device.state.config import is_wav_path
        from device.state.paths import check_output_file

        a = self.config.audio
        if is_wav_path(a.playback_device):  # a take to keep: its folder checked before playing
            try:
                check_output_file(a.playback_device, what="--output-device / [audio] "
                                  "playback_device", suffixes=(".wav",))
            except ConfigError as e:
                raise StartError(EXIT_USAGE, str(e)) from None
        playback = wav_device(a.playback_device)
        # ALSA's file plugin labels float data as integer PCM in a WAV header: use S16.
        wav = playback.startswith("file:") and playback.endswith(",wav")
        audio_cfg = a.audio_config(playback_device=playback,
                                   sample_format="S16_LE" if wav else a.sample_format)
        if self.audio_process is not None:  # the child makes the source from its kind
            source: Any = self._source_kind()
            silent: Any = "none"

            def open_loop(cfg: Any, src: Any) -> Any:
                try:
                    return self.audio_process.open(cfg, src, commands=self.commands)
                except AudioFileError as e:
                    raise StartError(EXIT_USAGE, str(e)) from None
        else:
            try:
                source = make_source(self._source_kind(), bundle.frame.sample_rate)
            except AudioFileError as e:
                raise StartError(EXIT_USAGE, str(e)) from None
            silent = SilentSource()

            def open_loop(cfg: Any, src: Any) -> Any:
                self.loop = AudioLoop(self.engine, src, sample_rate=bundle.frame.sample_rate,
                                      commands=self.commands,
                                      to_control=self._control_inbox.put, config=cfg,
                                      recorder=self.recorder,
                                      latency_samples=self.engine.latency_samples)
                return self.loop.start()
        try:
            self.loop, self.note = open_with_fallbacks(
                open_loop, audio_cfg, source, silent, fallback=a.fallback, note=self.note)
        except DeviceError as e:
            raise StartError(EXIT_AUDIO, str(e)) from None

    def _start_health(self) -> None:
        """Live health each second: the status file (`aesynth status`) and systemd's watchdog."""
        from device.state.health import HealthPublisher

        self.health = HealthPublisher(self.loop, midi=self.midi,
                                      errors=lambda: self.last_error).start()
        self._closers.insert(0, self.health)  # closed last: the watchdog pings until the end

    def _start_control(self) -> None:
        """The control thread: the commands the audio thread hands over (device/control.py)."""
        cfg = self.config
        self.control = Control(
            self.engine, self.loop, self._control_inbox, post=self.post,
            say=lambda text: setattr(self, "message", text),
            stop=self.request_stop, quit=cfg.play.quit, profile=cfg.audio.profile,
            num_threads=cfg.model.num_threads, library=self.library, presets=self.presets,
            recorder=self.recorder, midi=self.midi, last_state=self.last_state,
            collector=self.collector, settle_s=SETTLE_S, remote=self.audio_process is not None)
        self._spawn("control", lambda: self.control.run(self._stopping))

    def _start_feedback(self) -> None:
        """The ui thread: display and LEDs follow the snapshots (device/senses/feedback.py)."""
        self.feedback = Feedback(
            self.engine, self.loop, message=lambda: self.message,
            on_failure=lambda: self.request_stop(EXIT_FAILURE), display=self.display,
            midi=self.midi, health=self.health, last_state=self.last_state, note=self.note,
            max_fps=self.config.display.max_fps)
        self._spawn("ui", lambda: self.feedback.run(self._stopping))

    def warn(self, text: str) -> None:
        """An expected problem the player must see: one log line, the display, the status."""
        log.warning("%s", text)
        self.last_error = (text, time.time())
        self.message = text

    def _start_display(self) -> None:
        d = self.config.display
        kind = d.kind
        if self._display_device is None and kind == "auto":
            if Path(f"/dev/i2c-{d.i2c_port}").exists():
                kind = "ssd1306"
            else:
                kind = "terminal" if sys.stdout.isatty() else "none"
        if self._display_device is None and kind == "none":
            return
        try:
            from device.senses.display import Display, open_display

            device = self._display_device or open_display(
                kind, i2c_port=d.i2c_port, i2c_address=d.i2c_address, rotate=d.rotate,
                column_offset=d.column_offset)
            self.display = Display(device, max_fps=d.max_fps)
            self._closers.append(self.display)
        except Exception as e:  # luma missing, no OLED on the bus
            if d.kind != "auto":  # asked for by name: an error naming it
                raise StartError(EXIT_USAGE, f"display {kind!r} (--display / [display] kind) "
                                             f"cannot be opened: {e}") from None
            log.warning("display %r unavailable, playing without it: %s", kind, e)

    def _start_midi(self) -> None:
        m = self.config.midi
        if not m.enabled:
            return
        try:
            from device.senses.learn import LEARNED_PATH
            from device.senses.midi import DEFAULT_MAP, MidiController
            from device.state.config import expand

            mapping, learned = DEFAULT_MAP, expand(LEARNED_PATH)
            if learned.exists() or m.mapping:  # a learnt map wins over [midi] mapping
                from device.senses.midi import load_mapping

                path = learned if learned.exists() else expand(m.mapping)
                try:
                    mapping = load_mapping(path)
                except Exception as e:  # a file asked for by name: an error, not a fallback
                    raise StartError(EXIT_USAGE, f"MIDI mapping {str(path)!r}: {e}") from None
                log.info("MIDI mapping %s from %s", mapping.name, path)
            # No port_match: the mapping's own port (a mapping file names its controller's).
            self.midi = MidiController(self.post, self.current_controls,
                                       port_match=m.port_match or None,
                                       mapping=mapping, backend=self._midi_backend,
                                       say=lambda text: setattr(self, "message", text))
            self.midi.start()
            self._closers.append(self.midi)
        except ModuleNotFoundError as e:
            log.warning("no MIDI: %s", e)
        except StartError:
            raise
        except Exception as e:  # no MIDI system here; a missing controller reconnects later
            log.warning("MIDI controller unavailable: %s", e)

    def _start_notes(self) -> None:
        """Every MIDI input that is not the controller plays notes (device.senses.notes)."""
        n, m = self.config.notes, self.config.midi
        if not (n.enabled and m.enabled):
            return
        try:
            from device.senses.notes import NoteInput

            exclude = m.port_match or (self.midi.mapping.port if self.midi is not None
                                       else "nanoKONTROL2")
            self.notes = NoteInput(self.post, port_match=n.port_match, exclude=exclude,
                                   backend=self._midi_backend).start()
            self._closers.append(self.notes)
        except Exception as e:  # no MIDI system: generate mode plays on as a drone
            log.warning("MIDI keyboards unavailable: %s", e)

    def _start_buttons(self) -> None:
        """MODE/MODEL: GPIO buttons, or keys on a terminal (device.senses.buttons.open_buttons)."""
        from device.errors import ConfigError
        from device.senses.buttons import ModeModelButtons, open_buttons

        try:
            self.buttons = open_buttons(
                self.config.buttons, self.post, pin_factory=self._pin_factory,
                keyboard_stream=self._keyboard_stream, current=self.current_controls,
                say=lambda text: setattr(self, "message", text),
                labels=lambda: self.engine.snapshot.labels, warn=self.warn)
        except ConfigError as e:  # buttons asked for by name that cannot be used
            raise StartError(EXIT_USAGE, str(e)) from None
        if self.buttons is not None:
            self._closers.append(self.buttons)
            if not isinstance(self.buttons, ModeModelButtons):  # keys: their legend shown
                self._show_keys()

    def _show_keys(self) -> None:
        """The key legend under the terminal table: a log line would be wiped by its
        first redraw."""
        from device.senses.keyboard import LEGEND

        device = getattr(self.display, "device", None)
        if hasattr(device, "footer"):
            device.footer = "\n".join(LEGEND)

    def _start_storage(self, bundle: Any) -> None:
        """Presets and the last controls, USB sticks, the folders checked, the recorder
        (device/state/storage.py)."""
        from device.state.storage import open_storage

        storage = open_storage(self.config, self.engine, sample_rate=bundle.frame.sample_rate,
                               library=self.library, audio_process=self.audio_process,
                               say=self._say, started=self._closers.append)
        self.presets, self.last_state = storage.presets, storage.last_state
        self.usb, self.recorder = storage.usb, storage.recorder

    def _say(self, text: str) -> None:
        """A part's report for the display (any thread; already logged by the part)."""
        self.message = text[:90]

    def _spawn(self, name: str, target: Any) -> None:
        t = threading.Thread(target=self._guard(target), name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _guard(self, target: Any) -> Any:
        def run() -> None:
            from device.sound.scheduling import name_thread

            name_thread()
            try:
                target()
            except BaseException:
                log.exception("thread %s died", threading.current_thread().name)
                self.request_stop(EXIT_FAILURE)
        return run

    # -- run and stop -------------------------------------------------------------------------
    def wait(self, duration: float | None = None) -> int:
        """Block until a stop is requested (or ``duration`` seconds pass); the exit code."""
        deadline = None if duration is None else time.monotonic() + duration
        while not self._stopping.wait(0.1):
            if deadline is not None and time.monotonic() >= deadline:
                self.request_stop(EXIT_OK)
        return self.exit_code

    def close(self) -> int:
        """Stop the audio thread, then every other thread and device in reverse order of start;
        idempotent."""
        if self._closed:
            return self.exit_code
        self._closed = True
        self._stopping.set()
        # The audio thread stops first: closing the senses can hold the GIL for a long time
        # (closing a MIDI port on JACK: 15-20 ms, measured), an xrun nobody needs at exit.
        if self.loop is not None:
            self.loop.stop()
            s = self.loop.stats
            pc = self.loop.hop_cost_percentiles()
            log.info("audio stopped: %d hops, %d xruns (%d under, %d over), %d reconnects; "
                     "engine per hop p50 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us",
                     s.hops, s.xruns, s.underruns, s.overruns, s.reconnects, pc["p50"],
                     pc["p99"], pc["p99.9"], s.max_hop_us)
            cushion_ms = self.loop.expected_latency()["playback_buffer_ms"]
            log.info("audio: longest gap between periods %.1f ms (buffered cushion %.1f ms)",
                     s.max_gap_us / 1000.0, cushion_ms)
            bad = getattr(self.engine, "nonfinite_inputs", 0)
            if bad:  # counted on the audio thread (device/sound/finite.py), said here
                log.warning("input: %d samples were NaN or infinite, played as silence", bad)
        if self.collector is not None:
            log.info("collector: %s", self.collector.report().summary())
            self.collector.release()
        if self.midi is not None or self.display is not None:
            log.info("senses: midi received %d messages (%d errors); display drew %d frames",
                     getattr(self.midi, "received", 0), getattr(self.midi, "errors", 0),
                     getattr(self.display, "frames", 0))
        for closer in reversed(self._closers):
            try:
                closer.close()
            except Exception as e:  # keep closing the rest
                log.warning("closing %r: %s", closer, e)
        self._closers.clear()
        target = getattr(self.recorder, "target", None)
        if target is not None:
            target.close()  # finishes a recording in progress
        for t in self._threads:
            t.join(2.0)
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        if self._scheduling is not None and self._scheduling[0] == threading.get_ident():
            from device.sound.scheduling import restore_scheduling

            restore_scheduling(self._scheduling[1])
            self._scheduling = None
        return self.exit_code

    def __enter__(self) -> App:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class StartError(Exception):
    """The app could not start; ``code`` is the exit code to use."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
