"""Notes from a USB-MIDI keyboard reach the engine: real python-rtmidi on a JACK dummy
server (harness.md, MIDI), a virtual keyboard port beside a virtual nanoKONTROL2."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import mido
import numpy as np
import pytest

from device.state import commands as c
from device.models.bundle import read_bundle
from device.sound.engine import Engine
from device.senses.notes import NoteInput, note_command, note_ports
from tests.jack import MIDI_BACKEND, jack_server  # noqa: F401  (fixture)

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_bundle"


def test_note_ports_are_every_input_but_the_controller_the_loopback_and_ours():
    inputs = ["nanoKONTROL2:nanoKONTROL2 _ CTRL", "Midi Through:Midi Through Port-0",
              "Keystation 49:Keystation 49 MIDI 1", "aesynth:out", "Digital Piano:MIDI 1"]
    assert note_ports(inputs, exclude="nanoKONTROL2") == [
        "Keystation 49:Keystation 49 MIDI 1", "Digital Piano:MIDI 1"]
    assert note_ports(inputs, match="piano", exclude="nanoKONTROL2") == ["Digital Piano:MIDI 1"]


def test_note_messages_become_commands():
    assert note_command(mido.Message("note_on", note=64, velocity=90)) == c.NoteOn(64, 90)
    assert note_command(mido.Message("note_on", note=64, velocity=0)) == c.NoteOff(64)
    assert note_command(mido.Message("note_off", note=64)) == c.NoteOff(64)
    assert note_command(mido.Message("control_change", control=123)) == c.NotesOff()
    assert note_command(mido.Message("control_change", control=7)) is None


def _apply_until(engine: Engine, q: queue.SimpleQueue, predicate, timeout: float = 10.0) -> bool:
    """The audio thread's part: drain the queue into the engine between hops."""
    deadline = time.monotonic() + timeout
    out = np.zeros(engine.hop_length)
    block = np.zeros(engine.hop_length)
    while time.monotonic() < deadline:
        while True:
            try:
                engine.apply(q.get_nowait())
            except queue.Empty:
                break
        engine.process(block, out)
        if predicate():
            return True
        time.sleep(0.005)
    return False


@pytest.mark.usefixtures("jack_server")
def test_a_keyboard_plays_the_engine_and_unplugging_it_brings_the_drone_back():
    backend = mido.Backend(MIDI_BACKEND, load=True)
    controller = backend.open_output("nanoKONTROL2", virtual=True)
    keyboard = backend.open_output("Keystation", virtual=True)
    q: queue.SimpleQueue = queue.SimpleQueue()
    engine = Engine(read_bundle(TINY), mode="generate")
    notes = NoteInput(q.put, backend=MIDI_BACKEND, scan_interval=0.1).start()
    try:
        deadline = time.monotonic() + 10
        while not notes.ports and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(notes.ports) == 1 and "Keystation" in notes.ports[0]
        assert engine.notes.drone
        keyboard.send(mido.Message("note_on", note=72, velocity=100, channel=3))
        assert _apply_until(engine, q, lambda: engine.notes.note == 72)
        assert engine.notes.transposer.semitones == 12 and engine.snapshot.note == "C5"
        controller.send(mido.Message("note_on", note=50, velocity=100))  # not a keyboard
        keyboard.send(mido.Message("note_on", note=67, velocity=100))
        assert _apply_until(engine, q, lambda: engine.notes.note == 67)
        keyboard.send(mido.Message("note_off", note=67))
        assert _apply_until(engine, q, lambda: engine.notes.note == 72)  # last-note priority
        keyboard.send(mido.Message("note_on", note=72, velocity=0))
        assert _apply_until(engine, q, lambda: engine.notes.level == 0.0)  # released
        assert not engine.notes.drone and engine.notes.held == []
        keyboard.close()
        assert _apply_until(engine, q, lambda: engine.notes.drone)
        assert engine.notes.level == 1.0 or _apply_until(engine, q,
                                                         lambda: engine.notes.level == 1.0)
        assert engine.notes.transposer.identity
    finally:
        notes.close()
        controller.close()
        engine.close()


@pytest.mark.usefixtures("jack_server")
def test_a_truncated_sysex_from_a_keyboard_does_not_silence_it():
    # Before: F0 43 10 (no F7) from a keyboard, and no later note arrived (rtmidi glued them).
    backend = mido.Backend(MIDI_BACKEND, load=True)
    keyboard = backend.open_output("Keystation", virtual=True)
    q: queue.SimpleQueue = queue.SimpleQueue()
    notes = NoteInput(q.put, backend=MIDI_BACKEND, scan_interval=0.1).start()
    try:
        deadline = time.monotonic() + 10
        while not notes.ports and time.monotonic() < deadline:
            time.sleep(0.02)
        assert notes.ports
        keyboard._rt.send_message([0xF0, 0x43, 0x10])
        keyboard.send(mido.Message("note_on", note=64, velocity=90))
        assert q.get(timeout=10) == c.NoteOn(64, 90)
    finally:
        notes.close()
        keyboard.close()
