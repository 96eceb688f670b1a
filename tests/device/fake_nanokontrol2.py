"""A stand-in nanoKONTROL2 on JACK MIDI: two virtual ports named like the real one.

It plays the controller's side of the protocol the way Korg documents it:
sends control changes, answers the scene dump request with its scene
(7-bit packed), ACKs a scene dump it receives (or NAKs a wrong size), and
records the LED control changes the host sends back.  The MIDI transport is
the real one (python-rtmidi over JACK); only the controller is played.
"""

from __future__ import annotations

import threading
import time

import mido
import rtmidi

from device.senses.nanokontrol2 import KORG, SCENE_BYTES, pack7, parse_korg, unpack7
from device.senses.port_links import PORTS_LOCK

HEADER = [KORG, 0x40, 0x00, 0x01, 0x13, 0x00]
SCENE_HEADER = [0x7F, 0x7F, 0x02, 0x03, 0x05, 0x40]


class FakeNanoKontrol2:
    def __init__(self, name: str = "nanoKONTROL2", *, answer_sysex: bool = True,
                 deaf_to: int = 0):
        """``deaf_to``: the first n SysEx messages from the host go unanswered (a request
        lost while the port was still connecting)."""
        # A scene with a recognisable pattern; byte 2 = LED mode 0 (internal).
        self.scene = bytearray((i * 37) & 0xFF for i in range(SCENE_BYTES))
        self.scene[2] = 0
        self.answer_sysex = answer_sysex
        self.deaf_to = deaf_to
        self.leds: dict[int, int] = {}
        self.led_log: list[tuple[int, int]] = []
        self.sysex_in: list[list[int]] = []
        self.scene_writes: list[bytes] = []
        self._cond = threading.Condition()
        backend = mido.Backend(load=True)  # MIDO_BACKEND as set by the jack_server fixture
        # In the app's process: its JACK graph changes take turns with the app's (PORTS_LOCK).
        with PORTS_LOCK:
            self.to_host = backend.open_output(name, virtual=True)
        self.from_host = PolledInput(backend, name, self._on_host)

    def _on_host(self, msg: mido.Message) -> None:
        with self._cond:
            if msg.type == "control_change":
                self.leds[msg.control] = msg.value
                self.led_log.append((msg.control, msg.value))
            elif msg.type == "sysex":
                data = list(msg.data)
                self.sysex_in.append(data)
                if self.answer_sysex and len(self.sysex_in) > self.deaf_to:
                    self._answer(data)
            self._cond.notify_all()

    def _answer(self, data: list[int]) -> None:
        if data[6:9] == [0x1F, 0x10, 0x00]:         # scene dump request
            self.to_host.send(mido.Message(
                "sysex", data=HEADER + SCENE_HEADER + pack7(bytes(self.scene))))
        elif data[6:12] == SCENE_HEADER:            # scene dump from the host
            kind, scene = parse_korg(data)
            if kind == "scene":
                self.scene[:] = scene
                self.scene_writes.append(bytes(scene))
                reply = [0x5F, 0x23, 0x00]
            else:
                reply = [0x5F, 0x24, 0x00]
            self.to_host.send(mido.Message("sysex", data=HEADER + reply))

    @property
    def led_mode(self) -> int:
        return self.scene[2]

    def cc(self, control: int, value: int, channel: int = 0) -> None:
        self.to_host.send(mido.Message("control_change", channel=channel, control=control,
                                       value=value))

    def raw(self, data: list[int]) -> None:
        """Send ``data`` as one JACK MIDI event, unchecked (a truncated SysEx)."""
        self.to_host._rt.send_message(data)

    def press(self, control: int, hold: float = 0.0) -> None:
        self.cc(control, 127)
        if hold:
            time.sleep(hold)
        self.cc(control, 0)

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def close(self) -> None:
        self.from_host.close()
        with PORTS_LOCK:
            self.to_host.close()


class PolledInput:
    """A virtual MIDI input whose messages a thread of ours polls and hands to ``handle``.

    Not mido's Input: that always installs a Python callback, which runs on JACK's
    process thread and waits there for the GIL, while a thread holding the GIL may
    wait on the JACK server for that very cycle (a port closing on one thread while a
    client opened on another hung the suite: stop 19).  The app's own inputs poll for
    the same reason (device.senses.midi._RtMidiInput)."""

    def __init__(self, backend: mido.Backend, name: str, handle):
        api = getattr(rtmidi, f"API_{backend.api}") if backend.api else rtmidi.API_UNSPECIFIED
        with PORTS_LOCK:
            self._rt = rtmidi.MidiIn(rtapi=api, queue_size_limit=4096)
            self._rt.ignore_types(sysex=False, timing=False, active_sense=True)
            self._rt.open_virtual_port(name)
        self._handle = handle
        self._closing = False
        self._thread = threading.Thread(target=self._poll, name=f"poll {name}", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        parser = mido.Parser()
        while not self._closing:
            got = self._rt.get_message()
            if got is None:
                time.sleep(0.0005)
                continue
            parser.feed(got[0])
            for msg in parser:
                self._handle(msg)

    def close(self) -> None:
        """Idempotent (mido's ports are): the MidiIn is deleted once."""
        self._closing = True
        self._thread.join(2.0)
        with PORTS_LOCK:
            if self._rt is not None:
                self._rt.close_port()
                self._rt.delete()
                self._rt = None


__all__ = ["FakeNanoKontrol2", "PolledInput", "unpack7"]
