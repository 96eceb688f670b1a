"""Note input: every USB-MIDI keyboard plugged in, as NoteOn / NoteOff commands.

A second MIDI input beside the controller (device.senses.midi).  By default it
opens *every* input port that is not the controller (its ``port`` match),
not ALSA's "Midi Through" and not one of our own; ``[notes] port_match``
narrows it to ports whose name contains a substring.  All channels are
heard (omni).  Ports are rescanned every ``scan_interval`` s: a keyboard
plugged in later is opened, one unplugged is closed, and when the last one
goes a :class:`~device.state.commands.NotesOff` with ``drone=True`` is posted, so
generate mode plays on untransposed with the gate open (device.sound.pitch).

One thread, ``midi-notes``, drains every open port (rtmidi's own queue, as
device.senses.midi does, never a Python callback on JACK's thread) and rescans.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import mido

from device.state import commands as c
from device.senses.midi import NUDGE, NUDGE_AFTER_S, POLL_S, _close_ports, _RtMidiInput, _Scanner
from device.senses.midi_stream import MidiStream
from device.senses.port_links import PORTS_LOCK
from device.sound.scheduling import name_thread

log = logging.getLogger(__name__)

ALWAYS_SKIPPED = ("midi through", "aesynth")  # ALSA's loopback; our own ports


def note_ports(inputs: list[str], *, match: str = "", exclude: str = "") -> list[str]:
    """The input ports to open: containing ``match`` (case-insensitive; "" = any), not
    containing ``exclude`` (the controller's port match), never ALWAYS_SKIPPED.  Pure."""
    out = []
    for name in inputs:
        low = name.lower()
        if any(s in low for s in ALWAYS_SKIPPED):
            continue
        if exclude and exclude.lower() in low:
            continue
        if match and match.lower() not in low:
            continue
        out.append(name)
    return out


def note_command(msg: Any) -> object | None:
    """NoteOn / NoteOff for a mido message, None for anything else.  Pure."""
    kind = getattr(msg, "type", None)
    if kind == "note_on" and msg.velocity > 0:
        return c.NoteOn(msg.note, msg.velocity)
    if kind == "note_off" or kind == "note_on":  # note on at velocity 0 is a release
        return c.NoteOff(msg.note)
    if kind == "control_change" and msg.control in (120, 123):  # all sound / all notes off
        return c.NotesOff()
    return None


class NoteInput:
    """Posts the notes of every keyboard found; ``post(cmd)`` must not block."""

    def __init__(self, post: Callable[[object], None], *, port_match: str = "",
                 exclude: str = "nanoKONTROL2", backend: str | Any = None,
                 scan_interval: float = 1.0):
        self._post = post
        self.port_match = port_match
        self.exclude = exclude
        if backend is None or isinstance(backend, str):
            backend = mido.Backend(backend, load=True)
        self._backend = backend
        self._scan_interval = scan_interval
        self._ports: dict[str, Any] = {}   # name → open input
        self._queue: list[Any] = []        # callback backends (not rtmidi) append here
        self._streams: dict[str, MidiStream] = {}   # framing per rtmidi port
        self._heard: dict[str, float] = {}          # port → when a message last came
        self._nudged: dict[str, float] = {}         # port → when we last nudged it
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.received = 0
        self.garbage = 0

    @property
    def ports(self) -> list[str]:
        return sorted(self._ports)

    def start(self) -> NoteInput:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="midi-notes", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        name_thread()
        scanner = None
        next_scan = 0.0
        failed = False
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if now >= next_scan:
                    next_scan = now + self._scan_interval
                    try:
                        scanner = scanner or _Scanner(self._backend)
                        self._rescan(scanner.inputs())
                        failed = False
                    except Exception as exc:  # no MIDI system (yet)
                        if not failed:
                            log.warning("MIDI keyboards cannot be listed (%s); retrying", exc)
                        failed = True
                if not self._drain():
                    time.sleep(POLL_S)
        finally:
            self._close_all()
            if scanner is not None:
                scanner.close()

    def _rescan(self, inputs: list[str]) -> None:
        want = set(note_ports(inputs, match=self.port_match, exclude=self.exclude))
        had = bool(self._ports)
        for name in sorted(set(self._ports) - want):
            log.warning("MIDI keyboard %r gone", name)
            _close_ports((self._ports.pop(name),), "unplugged")
            self._streams.pop(name, None)
        for name in sorted(want - set(self._ports)):
            try:
                if self._backend.name == "mido.backends.rtmidi":
                    port: Any = _RtMidiInput(self._backend.api, name)
                else:
                    with PORTS_LOCK:
                        port = self._backend.open_input(name, callback=self._queue.append)
            except Exception as exc:
                log.warning("MIDI keyboard %r did not open: %s", name, exc)
                continue
            self._ports[name] = port
            log.info("MIDI keyboard on %r", name)
        if had and not self._ports:
            self._post(c.NotesOff(drone=True))  # no keyboard left: the drone comes back

    def _drain(self) -> bool:
        """Post the notes waiting on every port; True if there were any.  Framed and nudged
        as the controller's input is (device.senses.midi): a truncated SysEx from a
        keyboard must not silence it."""
        got = False
        now = time.monotonic()
        for name, port in list(self._ports.items()):
            if not isinstance(port, _RtMidiInput):
                continue
            stream = self._streams.setdefault(name, MidiStream())
            while (data := port.read()) is not None:
                for raw in stream.feed(data):
                    if tuple(raw) == NUDGE:
                        continue
                    got = True
                    self._heard[name] = now
                    try:
                        self._handle(mido.Message.from_bytes(raw))
                    except ValueError:
                        self.garbage += 1
            quiet = now - max(self._heard.get(name, 0.0), self._nudged.get(name, 0.0))
            if quiet >= NUDGE_AFTER_S:
                self._nudged[name] = now
                try:
                    port.nudge()
                except Exception as exc:  # closing under us
                    log.debug("MIDI nudge to %r not sent: %s", name, exc)
        while self._queue:
            got = True
            self._handle(self._queue.pop(0))
        return got

    def _handle(self, msg: Any) -> None:
        self.received += 1
        cmd = note_command(msg)
        if cmd is not None:
            self._post(cmd)

    def _close_all(self) -> None:
        ports, self._ports = list(self._ports.values()), {}
        _close_ports(ports, "closing")

    def close(self) -> None:
        """Stop the thread and close every port.  Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(3.0)
            self._thread = None

    def __enter__(self) -> NoteInput:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<NoteInput ports={self.ports} received={self.received}>"
