"""The MIDI controller: ports, threads and LEDs around the pure map in nanokontrol2.py.

Threads (none of them the audio thread):
- ``midi-events`` takes every incoming message in order and posts its
  commands: no event is dropped or coalesced, press and release in one read
  both count.  With python-rtmidi it drains rtmidi's own lock-free queue
  every 2 ms, never registering a Python callback: on JACK that callback runs
  in the process thread and needs the GIL, and a cycle it misses while
  another Python thread holds the GIL loses that cycle's events (measured:
  600 of 3000 at 2000 CC/s).  Other mido backends feed it by callback.
  What rtmidi hands over is split by :class:`~device.senses.midi_stream.MidiStream`
  (MIDI 1.0 framing): rtmidi glues every event after a SysEx without F7 into
  that SysEx, so while the input is quiet the thread sends a tiny SysEx of its
  own into its own input port (``NUDGE``), which ends rtmidi's glued message
  and lets the stream recover the control changes inside it;
- ``midi-watch`` finds the port (substring match), opens it, sets the
  nanoKONTROL2's external LED mode by SysEx (asked again until answered, within
  ``sysex_timeout``), and re-scans with backoff after the controller is
  unplugged, re-opening it when it comes back.  A controller replugged between
  two scans keeps its port name; on JACK the watcher sees that our connection to
  it is gone (:mod:`device.senses.port_links`) and reconnects.  No gesture (a
  held button) survives a reconnect.

LEDs follow :meth:`MidiController.update_leds`; only changed LEDs are sent.
On close the controller's original scene (its LED mode) is sent back, never
written to its flash.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import mido

from device.state import commands as c
from device.state.controls import ControlsSnapshot
from device.errors import DeviceError
from device.senses.learn import LEARN_ACTION, LEARNED_PATH, Learn, save_mapping
from device.senses.midi_stream import MidiStream
from device.senses.nanokontrol2 import (
    DEFAULT_MAP,
    LED_MODE_OFFSET,
    ControllerMap,
    Surface,
    load_mapping,
    parse_korg,
    scene_dump,
    scene_request,
    with_led_mode,
)
from device.senses.port_links import PORTS_LOCK, alsa_address, links_for
from device.sound.scheduling import name_thread

__all__ = ["DEFAULT_MAP", "ControllerMap", "MidiController", "find_port", "load_mapping"]

log = logging.getLogger(__name__)

_STOP = object()  # sentinel for the event thread
POLL_S = 0.002       # wait of the event thread on rtmidi's queue while the controller is in use
POLL_IDLE_S = 0.010  # after IDLE_AFTER_S without a message: fewer wake-ups on a quiet box
IDLE_AFTER_S = 1.0
RTMIDI_QUEUE = 16384  # messages rtmidi may hold between drains (a storm is ~1000/s)
# Sent into our own input while it is quiet: ends a SysEx that rtmidi keeps open (7D: the
# MIDI ID for non-commercial use).  Never reaches the controller.
NUDGE = (0xF0, 0x7D, 0x61, 0x65, 0xF7)
NUDGE_AFTER_S = 0.2   # of quiet on the input before a nudge, and between nudges
DROP_LOG_S = 10.0     # at most one log line about dropped bytes this often
SYSEX_TRIES = 4       # scene request / scene dump: asked this many times within sysex_timeout
_port_serial = iter(range(1, 1 << 62))


class _RtMidiInput:
    """A python-rtmidi input without a Python callback: rtmidi queues, we drain."""

    def __init__(self, api: str | None, name: str):
        with PORTS_LOCK:
            self._open(api, name)

    def _open(self, api: str | None, name: str) -> None:
        import rtmidi

        rtapi = getattr(rtmidi, f"API_{api}") if api else rtmidi.API_UNSPECIFIED
        self._rt = rtmidi.MidiIn(rtapi=rtapi, name="aesynth", queue_size_limit=RTMIDI_QUEUE)
        ports = self._rt.get_ports()
        if name not in ports:
            self._rt.delete()
            raise DeviceError(f"MIDI input {name!r} is gone; ports now: {ports}")
        # A name of its own, so that the watcher and the nudge find this very port.
        self.port = f"aesynth in {next(_port_serial)}"
        try:
            self._rt.open_port(ports.index(name), name=self.port)
            self._rt.ignore_types(sysex=False, timing=True, active_sense=True)
        except BaseException:  # the client would stay registered with ALSA/JACK
            self._rt.delete()
            raise
        self._lock = threading.Lock()  # close() must not free the port mid-read
        self.name = name
        self.address = self.port  # what the controller's port is connected to (JACK: name)
        self._nudge = None
        try:
            out = rtmidi.MidiOut(rtapi=rtapi, name="aesynth-nudge")
            own = re.compile(rf"[^:]*:{re.escape(self.port)}( \d+:\d+)?")  # JACK, ALSA
            mine = [i for i, p in enumerate(out.get_ports()) if own.fullmatch(p)]
            if mine:
                # on ALSA, our port's "client:port", which the watcher looks for
                self.address = alsa_address(out.get_ports()[mine[0]]) or self.port
                out.open_port(mine[0], name="aesynth nudge")
                self._nudge = out
            else:
                out.delete()
                log.debug("no output port to our own input %r: no SysEx recovery", self.port)
        except Exception as exc:  # recovery from a truncated SysEx is lost, nothing else
            log.debug("no nudge port for %r: %s", self.port, exc)

    def nudge(self) -> None:
        """End any SysEx rtmidi holds open (see NUDGE)."""
        with self._lock:
            if self._nudge is not None:
                self._nudge.send_message(NUDGE)

    def read(self) -> list[int] | None:
        with self._lock:
            if self._rt is None:
                return None
            got = self._rt.get_message()
        return got[0] if got else None

    def close(self) -> None:
        with PORTS_LOCK, self._lock:  # always in this order (read() holds only _lock)
            if self._nudge is not None:
                self._nudge.close_port()
                self._nudge.delete()
                self._nudge = None
            if self._rt is not None:
                self._rt.close_port()
                self._rt.delete()
                self._rt = None


def _close_ports(ports: Iterable[Any], why: str) -> None:
    """Close each port that is there; a port that fails to close (unplugged) is only logged."""
    for port in ports:
        if port is not None:
            try:
                with PORTS_LOCK:
                    port.close()
            except Exception as exc:
                log.debug("closing MIDI port %r after %s: %s", port, why, exc)


def find_port(names: list[str], match: str) -> str | None:
    """The first of ``names`` containing ``match`` (case-insensitive), or None."""
    hits = [n for n in names if match.lower() in n.lower()]
    if len(hits) > 1:
        log.info("MIDI ports matching %r: %s; using %r", match, hits, hits[0])
    return hits[0] if hits else None


class _Scanner:
    """Lists port names.  For rtmidi it keeps one client per direction, because
    mido's get_*_names opens (and on JACK registers) two new clients per call."""

    def __init__(self, backend: Any):
        self._backend = backend
        self._rt_in = self._rt_out = None
        if backend.name == "mido.backends.rtmidi":
            import rtmidi

            api = getattr(rtmidi, f"API_{backend.api}") if backend.api else rtmidi.API_UNSPECIFIED
            with PORTS_LOCK:
                self._rt_in = rtmidi.MidiIn(rtapi=api, name="aesynth-scan")
                self._rt_out = rtmidi.MidiOut(rtapi=api, name="aesynth-scan")

    def inputs(self) -> list[str]:
        if self._rt_in is not None:
            return self._rt_in.get_ports()
        return self._backend.get_input_names()

    def outputs(self) -> list[str]:
        if self._rt_out is not None:
            return self._rt_out.get_ports()
        return self._backend.get_output_names()

    def close(self) -> None:
        with PORTS_LOCK:
            for rt in (self._rt_in, self._rt_out):
                if rt is not None:
                    rt.delete()
        self._rt_in = self._rt_out = None


class MidiController:
    """A MIDI control surface posting commands; reconnects when unplugged and plugged back.

    ``post(cmd)`` must not block (a SimpleQueue's put); ``current()`` returns
    the ControlsSnapshot the audio thread last published (for soft takeover);
    ``say(text)``, when given, shows a short line to the player (a controller on
    the wrong MIDI channel).
    ``backend`` is a mido backend name (``"mido.backends.rtmidi/UNIX_JACK"``),
    a ``mido.Backend``, or None for mido's default (``MIDO_BACKEND``).
    """

    def __init__(self, post: Callable[[object], None], current: Callable[[], ControlsSnapshot],
                 *, port_match: str | None = None, mapping: ControllerMap = DEFAULT_MAP,
                 backend: str | Any = None, scan_interval: float = 1.0,
                 max_backoff: float = 5.0, sysex_timeout: float = 4.0,
                 clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], None] | None = None,
                 learn_path: str = LEARNED_PATH):
        if not 0 < scan_interval <= max_backoff:
            raise DeviceError(f"MIDI scan_interval must be in (0, max_backoff={max_backoff}] s, "
                              f"got {scan_interval}")
        self._post = post
        self._current = current
        self.mapping = mapping
        self.port_match = port_match or mapping.port
        if backend is None or isinstance(backend, str):
            backend = mido.Backend(backend, load=True)  # None: MIDO_BACKEND, read now
        self._backend = backend
        self._scan_interval = scan_interval
        self._max_backoff = max_backoff
        self._sysex_timeout = sysex_timeout
        self._clock = clock
        self._say = say                      # a line for the display (App.message)
        self._channel_said: int | None = None
        self._learn: Learn | None = None
        self.learn_path = learn_path         # where a learn session saves its map
        self._surface = Surface(mapping)
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()  # callback backends
        self._poll: _RtMidiInput | None = None                         # rtmidi
        self._events_done = threading.Event()
        self._lock = threading.Lock()        # surface, ports, LED cache; never the audio thread
        self._stopping = threading.Event()
        self._input: Any = None
        self._output: Any = None
        self.port_name: str | None = None
        self._connected = threading.Event()
        self._leds_sent: dict[int, bool] = {}
        self._led_state: Any = None
        self._model: str | None = None
        self._sysex_reply: queue.SimpleQueue[tuple[str, int, bytes | None]] = queue.SimpleQueue()
        self.sysex_tries = 0                 # requests the last SysEx exchange took
        self._original_scene: bytes | None = None
        self._awaiting_sysex = False
        self.led_mode: str = "unknown"       # "external" once the controller ACKed our scene
        self.received = 0                    # messages taken from the queue
        self.errors = 0
        self.garbage = 0                     # byte strings that were no MIDI message
        self._stream = MidiStream()          # framing of what rtmidi hands over
        self._dropped_logged = 0
        self._drop_logged_at = -1e9
        self.connects = 0
        self.replugs = 0                     # reconnects to a port replugged under its name
        self._threads: list[threading.Thread] = []
        self._scanner: _Scanner | None = None  # made by the watcher: the MIDI system may be late
        self._started = False
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> MidiController:
        """Start the event and watcher threads; returns at once (the port may come later)."""
        if self._started:
            return self
        self._started = True
        for name, target in (("midi-events", self._event_loop), ("midi-watch", self._watch)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def wait_connected(self, timeout: float = 5.0) -> bool:
        """Block until a port is open (for tests and the CLI)."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self) -> None:
        """Restore the controller's LED mode, close the ports, stop the threads.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        watcher = self._threads[1:] if self._started else []
        for t in watcher:
            t.join(timeout=3.0)
        # The event thread still runs here: it delivers the controller's ACK.
        self._disconnect("closing", restore=True)
        self._events_done.set()
        self._events.put(_STOP)
        for t in self._threads[:1]:
            t.join(timeout=3.0)
        if self._scanner is not None:
            self._scanner.close()

    def __enter__(self) -> MidiController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else (f"on {self.port_name!r}" if self.connected
                                               else f"waiting for {self.port_match!r}")
        return f"<MidiController {state} received={self.received} leds={self.led_mode}>"

    # -- events ---------------------------------------------------------------------------------
    def _callback(self, msg: Any) -> None:
        # Backends other than rtmidi call this on their own thread: queue only.
        self._events.put(msg)

    def _event_loop(self) -> None:
        name_thread()
        last_message = last_nudge = time.monotonic()
        while not self._events_done.is_set():
            poll = self._poll
            if poll is None:
                try:
                    msg = self._events.get(timeout=0.05)
                except queue.Empty:
                    continue
                if msg is not _STOP:
                    self._process(msg)
                continue
            data = poll.read()
            now = time.monotonic()
            if data is None:
                if now - max(last_message, last_nudge) >= NUDGE_AFTER_S:
                    last_nudge = now
                    try:
                        poll.nudge()
                    except Exception as exc:  # the port is closing under us
                        log.debug("MIDI nudge not sent: %s", exc)
                idle = now - last_message > IDLE_AFTER_S
                time.sleep(POLL_IDLE_S if idle else POLL_S)
                continue
            messages = self._stream.feed(data)
            if self._stream.dropped != self._dropped_logged:
                self._log_dropped(now)
            for raw in messages:
                if tuple(raw) == NUDGE:
                    continue
                last_message = now
                try:
                    msg = mido.Message.from_bytes(raw)
                except ValueError:  # framed, but no message mido knows (F4, an F9)
                    self.garbage += 1
                    continue
                self._process(msg)

    @property
    def dropped(self) -> int:
        """Bytes of the input that were no whole MIDI message (a truncated SysEx, stray data)."""
        return self._stream.dropped

    def _log_dropped(self, now: float) -> None:
        if now - self._drop_logged_at < DROP_LOG_S:
            return
        s = self._stream
        log.warning("MIDI input %r: dropped %d bytes that were no whole message (%d SysEx "
                    "cut short by another status byte) so far", self.port_name, s.dropped,
                    s.truncated)
        self._drop_logged_at, self._dropped_logged = now, s.dropped

    def _process(self, msg: Any) -> None:
        self.received += 1
        try:
            self.handle(msg)
        except Exception:
            self.errors += 1
            if self.errors in (1, 10, 100) or self.errors % 1000 == 0:
                log.exception("MIDI message %r not handled (%d errors)", msg, self.errors)

    def handle(self, msg: Any) -> None:
        """Post the commands for one message (the event thread calls this)."""
        if msg.type == "sysex":
            kind, scene = parse_korg(msg.data)
            if kind != "other" and self._awaiting_sysex:  # else a flood would pile up
                self._sysex_reply.put((kind, msg.data[1] & 0x0F, scene))
            return
        if self._learn is not None and msg.type == "control_change":
            self._learn_message(msg)
            return
        with self._lock:
            cmds = self._surface.handle(msg, self._current(), self._clock())
            off = self._surface.off_channel
        if off is not None and off != self._channel_said:
            self._channel_said = off
            self._wrong_channel(off)
        for cmd in cmds:
            if isinstance(cmd, c.ToggleLearn):
                self.toggle_learn()
            else:
                self._post(cmd)

    def pickup_hints(self) -> tuple[str, ...]:
        """Surface.pickup_hints for the current controls (the display shows them)."""
        with self._lock:
            return self._surface.pickup_hints(self._current())

    # -- MIDI learn -------------------------------------------------------------------------
    def toggle_learn(self) -> None:
        """Start a learn session, or end it: the learnt map takes over and is saved to
        ``learn_path`` (any thread)."""
        with self._lock:
            session, self._learn = self._learn, None
            if session is None:
                self._learn = Learn(self.mapping)
                said = self._learn.prompt()
            elif not session.learnt:
                said = "learn: nothing learnt"
            else:
                m = session.result()
                port = self.port_match
                m = replace(m, port=port, name=port if m.port != port else m.name,
                            korg_led_sysex=m.korg_led_sysex and "nanokontrol2" in port.lower())
                self.mapping, self._surface = m, Surface(m)
                said = None
        if session is not None and session.learnt:
            try:
                path = save_mapping(m, self.learn_path)
            except OSError as exc:
                log.warning("learnt MIDI map not saved to %s: %s", self.learn_path, exc)
                said = "learnt map NOT saved"
            else:
                log.info("learnt %d controls of %r; saved %s", len(session.learnt),
                         self.port_name, path)
                said = f"learnt {len(session.learnt)}, saved"
        if self._say is not None:
            self._say(said)

    def step_learn(self, delta: int) -> None:
        """While learning, select the next (+1) or previous (-1) function."""
        with self._lock:
            said = self._learn.step(delta) if self._learn is not None else "not learning"
        if self._say is not None:
            self._say(said)

    @property
    def learning(self) -> bool:
        return self._learn is not None

    def _learn_message(self, msg: Any) -> None:
        learn_cc = self.mapping.buttons.get(LEARN_ACTION)
        channel = self.mapping.channel
        if (msg.control == learn_cc and (not channel or msg.channel == channel - 1)):
            if msg.value >= 64:  # the learn button again: end (its release is ignored)
                self.toggle_learn()
            return
        with self._lock:
            learn = self._learn
            said = learn.offer(msg.channel, msg.control) if learn is not None else None
            prompt = learn.prompt() if learn is not None else ""
        if said is not None and self._say is not None:
            self._say(f"{said}; {prompt}")

    def _wrong_channel(self, channel: int) -> None:
        want = self.mapping.channel
        log.warning("MIDI controller %r sends on channel %d but the mapping %r expects "
                    "channel %d: set the controller's global MIDI channel to %d, or "
                    "channel = %d in a mapping file (docs/controller.md)", self.port_name,
                    channel, self.mapping.name, want, want, channel)
        if self._say is not None:
            self._say(f"MIDI on channel {channel}, expected {want}")

    # -- LEDs -----------------------------------------------------------------------------------
    def update_leds(self, state: Any) -> None:
        """Light mutes, play and mode for ``state`` (a DisplayState); sends only changes."""
        with self._lock:
            if self._model is not None and state.model != self._model:
                self._surface.release()  # another model: the units moved under the faders
            self._model = state.model
            self._led_state = state
            self._send_leds_locked()

    def _send_leds_locked(self) -> None:
        state, out = self._led_state, self._output
        if state is None or out is None:
            return
        lit = self._surface.leds(state.controls, state.mode, state.playing)
        channel = max(self.mapping.channel - 1, 0)
        try:
            for cc, on in lit.items():
                if self._leds_sent.get(cc) != on:
                    out.send(mido.Message("control_change", channel=channel, control=cc,
                                          value=127 if on else 0))
                    self._leds_sent[cc] = on
        except Exception as exc:  # unplugged mid-send: the watcher will notice
            log.warning("MIDI LEDs not sent to %r: %s", self.port_name, exc)

    # -- ports ----------------------------------------------------------------------------------
    def _watch(self) -> None:
        name_thread()
        backoff = self._scan_interval
        waiting_logged = scan_failed = False
        while not self._stopping.is_set():
            try:
                if self._scanner is None:
                    self._scanner = _Scanner(self._backend)
                inputs = self._scanner.inputs()
                scan_failed = False
            except Exception as exc:  # no ALSA sequencer, no JACK server (yet)
                if not scan_failed:
                    log.warning("MIDI ports of %s cannot be listed (%s); retrying",
                                self._backend.name, exc)
                scan_failed = True
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            if self.connected:
                if self.port_name not in inputs:
                    log.warning("MIDI controller %r gone; waiting for it to come back",
                                self.port_name)
                    self._disconnect("unplugged")
                    backoff = self._scan_interval
                    continue
                if not self._still_linked():
                    log.warning("MIDI controller %r was replugged (our connection to it is "
                                "gone); reconnecting", self.port_name)
                    self.replugs += 1
                    self._disconnect("replugged")
                    # then a scan interval: a port closing as we look must be gone
                wait = self._scan_interval
            else:
                name = find_port(inputs, self.port_match)
                if name is not None:
                    try:
                        self._connect(name, self._scanner)
                        backoff = self._scan_interval
                        waiting_logged = False
                        continue
                    except Exception as exc:
                        log.warning("MIDI port %r did not open: %s", name, exc)
                elif not waiting_logged:
                    log.info("no MIDI input matching %r among %s; retrying", self.port_match,
                             inputs)
                    waiting_logged = True
                wait = backoff
                backoff = min(backoff * 2, self._max_backoff)
            self._stopping.wait(wait)

    def _still_linked(self) -> bool:
        """False when the port we opened is not the one listed now (JACK only)."""
        poll = self._poll
        links = links_for(self._backend)
        if links is None or poll is None:
            return True
        return links.linked(self.port_name, poll.address)

    def _connect(self, name: str, scanner: _Scanner) -> None:
        if self._backend.name == "mido.backends.rtmidi":
            inp = _RtMidiInput(self._backend.api, name)
        else:
            with PORTS_LOCK:
                inp = self._backend.open_input(name, callback=self._callback)
        out = out_name = None
        try:
            out_name = find_port(scanner.outputs(), self.port_match)
            if out_name is not None:
                try:
                    with PORTS_LOCK:
                        out = self._backend.open_output(out_name)
                except Exception as exc:
                    log.warning("MIDI output %r did not open (no LEDs): %s", out_name, exc)
            with self._lock:
                # close() may have given up waiting for us: ports installed now would leak
                if self._stopping.is_set():
                    raise DeviceError(f"MIDI controller closing; {name!r} not connected")
                self._input, self._output, self.port_name = inp, out, name
                self._poll = inp if isinstance(inp, _RtMidiInput) else None
                self._leds_sent.clear()
                self._surface.forget()  # no gesture begun on another connection counts
                self._stream.reset()
                self._channel_said = None
        except BaseException:
            _close_ports((out, inp), f"a failed connect to {name!r}")
            raise
        self.connects += 1
        log.info("MIDI controller on %r (LEDs via %r)", name, out_name)
        try:
            if out is not None and self.mapping.korg_led_sysex:
                self._set_external_leds()
            with self._lock:
                self._send_leds_locked()
        except BaseException:  # unplugged mid-SysEx: the next _connect must not leak these
            self._disconnect("connect failed")
            raise
        self._connected.set()

    def _exchange(self, data: list[int], want: tuple[str, ...], *, tries: int = SYSEX_TRIES,
                  timeout: float | None = None) -> tuple[str, bytes | None]:
        """Send SysEx ``data`` and wait for a reply of a kind in ``want`` on the request's
        channel; sent again up to ``tries`` times, waits doubling, all within ``timeout``
        seconds (``sysex_timeout``).  A NAK is an answer: it ends the exchange."""
        channel = data[1] & 0x0F  # Korg: 0x40 | global channel, echoed in the reply
        total = self._sysex_timeout if timeout is None else timeout
        deadline = time.monotonic() + total
        share = total / (2 ** tries - 1)
        for attempt in range(tries):
            while True:  # drop stale replies
                try:
                    self._sysex_reply.get_nowait()
                except queue.Empty:
                    break
            self._awaiting_sysex = True
            try:
                self._output.send(mido.Message("sysex", data=data))
                until = min(time.monotonic() + share * 2 ** attempt, deadline)
                while (left := until - time.monotonic()) > 0:
                    try:
                        kind, ch, scene = self._sysex_reply.get(timeout=left)
                    except queue.Empty:
                        break
                    if ch == channel and (kind in want or kind == "nak"):
                        self.sysex_tries = attempt + 1
                        return kind, scene
            finally:
                self._awaiting_sysex = False
            if attempt + 1 < tries:
                log.debug("no SysEx reply from %r yet; asking again", self.port_name)
        self.sysex_tries = tries
        return "timeout", None

    def _set_external_leds(self) -> None:
        channel = max(self.mapping.channel - 1, 0)
        kind, scene = self._exchange(scene_request(channel), ("scene",))
        if scene is None:
            log.info("no scene reply from %r (%s): LEDs stay in the controller's mode",
                     self.port_name, kind)
            self.led_mode = "unknown"
            return
        self._original_scene = scene
        kind, _ = self._exchange(scene_dump(with_led_mode(scene, True), channel), ("ack",))
        self.led_mode = "external" if kind == "ack" else "unknown"
        if kind != "ack":
            log.warning("%r answered %s to external LED mode", self.port_name, kind)

    def _disconnect(self, reason: str, *, restore: bool = False) -> None:
        self._connected.clear()
        out = self._output
        if out is not None and restore:  # before closing: the input brings the ACK
            try:
                self._leds_off(out)
                scene = self._original_scene
                if scene is not None and scene[LED_MODE_OFFSET] != 1:  # it was not external
                    channel = max(self.mapping.channel - 1, 0)
                    kind, _ = self._exchange(scene_dump(scene, channel), ("ack",), tries=1,
                                             timeout=min(self._sysex_timeout, 1.0))
                    log.info("restored the LED mode of %r: %s", self.port_name, kind)
            except Exception as exc:
                log.warning("could not restore %r: %s", self.port_name, exc)
        with self._lock:
            inp, out = self._input, self._output
            self._input = self._output = self._poll = None
            self._surface.forget()
        _close_ports((inp, out), reason)
        self._original_scene = None
        self.led_mode = "unknown"

    def _leds_off(self, out: Any) -> None:
        channel = max(self.mapping.channel - 1, 0)
        with self._lock:  # update_leds may be changing the cache on another thread
            lit = [cc for cc, on in self._leds_sent.items() if on]
            self._leds_sent.clear()
        for cc in lit:  # sent outside the lock: a slow port must not stall handle()
            out.send(mido.Message("control_change", channel=channel, control=cc, value=0))
