"""Stage faults of the controller (issue 16), each through the real JACK MIDI path:
python-rtmidi on a JACK dummy server, the controller played by FakeNanoKontrol2.

Every test here failed on the code before the fix (noted per test).
"""

from __future__ import annotations

import logging
import time

import mido
import pytest
import rtmidi

from device.senses.display import DisplayState
from device.senses.midi import MidiController
from device.senses.nanokontrol2 import ControllerMap
from device.senses.port_links import PORTS_LOCK
from device.state import commands as c
from tests.device.fake_nanokontrol2 import FakeNanoKontrol2
from tests.device.test_midi import SYSEX_TIMEOUT, Box, settle
from tests.jack import jack_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("jack_server")


def wait_until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def start(box: Box, scan_interval: float = 0.1, **kw) -> MidiController:
    ctl = MidiController(box.post, box.current, scan_interval=scan_interval, max_backoff=1.0,
                         sysex_timeout=SYSEX_TIMEOUT, **kw).start()
    assert ctl.wait_connected(15.0), "controller never found the fake nanoKONTROL2"
    return ctl


def replug_fast(fake: FakeNanoKontrol2) -> FakeNanoKontrol2:
    """Close the controller's ports and open them again under the same names at once
    (well inside one scan interval)."""
    fake.close()
    # Plugged back as soon as the old port has left JACK's list (opening the same client
    # name while the old one is still closing crashed python-rtmidi here once).
    with PORTS_LOCK:
        lister = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name="aesynth-test-lister")
    try:
        assert wait_until(lambda: not any("nanoKONTROL2" in p for p in lister.get_ports()),
                          timeout=5.0)
    finally:
        with PORTS_LOCK:
            lister.delete()
    return FakeNanoKontrol2()


def test_fast_replug_reconnects_and_sets_the_led_mode_again():
    # Before: the watcher only checked the port name, which never left the list: every
    # later move was lost (connects stayed 1) and the LEDs kept the controller's mode.
    # The default scan interval (1 s): the replug (tens of ms here) falls between scans.
    box, fake = Box(), FakeNanoKontrol2()
    ctl = start(box, scan_interval=1.0)
    second = None
    try:
        ctl.update_leds(DisplayState(box.current(), "resynth", "m", True, 0))
        assert fake.wait_for(lambda: fake.leds.get(41) == 127)
        second = replug_fast(fake)
        assert second.wait_for(lambda: second.led_mode == 1 and second.leds.get(41) == 127)
        second.press(51)
        assert box.wait_for(lambda: box.controls.muted[3])
        assert ctl.connects == 2 and ctl.connected
        assert ctl.led_mode == "external"
        assert getattr(ctl, "replugs", None) == 1
    finally:
        ctl.close()
        (second or fake).close()


def test_a_hold_across_an_unplug_never_saves_and_the_next_press_counts():
    # Before: S1 held, unplugged, replugged, tapped: "saved preset 1" (the press time
    # from before the unplug was used), and M1's first press after the replug was lost.
    box, fake = Box(), FakeNanoKontrol2()
    ctl = start(box, mapping=ControllerMap(preset_hold_s=0.3))
    second = None
    try:
        base = ctl.received
        fake.cc(32, 127)  # S1 down ...
        fake.cc(48, 127)  # ... and M1 down
        settle(ctl, base + 2)
        assert box.wait_for(lambda: box.controls.muted[0])
        fake.close()
        assert wait_until(lambda: not ctl.connected)
        time.sleep(0.4)  # longer than the hold that saves
        second = FakeNanoKontrol2()
        # connected to the new port (the LED mode it set proves it; a connect to the old
        # port while it was closing may have come and gone first)
        assert second.wait_for(lambda: second.led_mode == 1)
        assert wait_until(lambda: ctl.connected and ctl.connects >= 2)
        second.cc(32, 0)    # the release of the hold begun on the old connection: nothing
        second.press(32)    # a tap: recall
        second.press(48)    # M1's first press on this connection toggles
        assert box.wait_for(lambda: box.of(c.RecallPreset) and not box.controls.muted[0])
        assert box.of(c.RecallPreset) == [c.RecallPreset(1)]
        assert box.of(c.SavePreset) == []
    finally:
        ctl.close()
        (second or fake).close()


def test_a_truncated_sysex_does_not_make_the_input_deaf(caplog):
    # Before: F0 7D 01 02 03 04 (no F7), then control changes: none acted, ever, until a
    # later SysEx ended (rtmidi glues every event into the open SysEx).
    box, fake = Box(), FakeNanoKontrol2()
    ctl = start(box)
    try:
        with caplog.at_level(logging.WARNING, logger="device.senses.midi"):
            fake.raw([0xF0, 0x7D, 0x01, 0x02, 0x03, 0x04])
            fake.press(50)  # M3
            fake.cc(0, 127)  # fader 1 meets unit 0 (gain 1.0) ...
            fake.cc(0, 64)   # ... and moves it
            assert box.wait_for(lambda: box.controls.muted[2] and
                                box.controls.gain[0] == pytest.approx(64 / 127))
            assert ctl.dropped == 6
            fake.raw([0xF0, 0x7D, 0x09])  # a second one: counted, logged no more
            fake.press(51)
            assert box.wait_for(lambda: box.controls.muted[3])
        assert ctl.dropped == 9
        assert ctl._stream.truncated == 2
        drops = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(drops) == 1 and "6 bytes" in drops[0].getMessage()
        assert ctl.errors == 0
    finally:
        ctl.close()
        fake.close()


def test_led_mode_is_set_when_the_first_requests_go_unanswered():
    # Before: one request, one wait: a request lost while the port was still connecting
    # left the LEDs dark (led_mode "unknown").
    box, fake = Box(), FakeNanoKontrol2(deaf_to=2)
    ctl = start(box)
    try:
        assert ctl.led_mode == "external"
        assert fake.led_mode == 1
        assert len(fake.scene_writes) == 1
        assert len(fake.sysex_in) == 4  # 2 unanswered requests, the answered one, the dump
    finally:
        ctl.close()
        fake.close()


def test_led_mode_exchange_many_starts_in_a_row():
    """The exchange in a loop of fresh starts (bench/led_mode_bench.py does 50)."""
    fake, done = FakeNanoKontrol2(), 0
    try:
        for _ in range(8):
            box = Box()
            ctl = start(box)
            done += ctl.led_mode == "external"
            ctl.close()
        assert done == 8
        assert fake.led_mode == 0  # each close gave the controller its own mode back
    finally:
        fake.close()


def test_a_controller_on_another_channel_is_named_once(caplog):
    # Before: nothing said; the controller just looked dead.
    said: list[str] = []
    box, fake = Box(), FakeNanoKontrol2()
    ctl = start(box, say=said.append)
    try:
        with caplog.at_level(logging.WARNING, logger="device.senses.midi"):
            base = ctl.received
            for _ in range(5):
                fake.cc(48, 127, channel=1)  # global channel 2
                fake.cc(48, 0, channel=1)
            settle(ctl, base + 10)
        assert said == ["MIDI on channel 2, expected 1"]
        lines = [r.getMessage() for r in caplog.records if "channel 2" in r.getMessage()]
        assert len(lines) == 1 and "expects channel 1" in lines[0]
        assert not box.of(c.ToggleMute)
    finally:
        ctl.close()
        fake.close()


def test_a_real_time_byte_inside_a_sysex_does_not_end_it():
    box, fake = Box(), FakeNanoKontrol2()
    ctl = start(box)
    try:
        fake.raw([0xF0, 0x7D, 0x01, 0xF8, 0x02, 0xF7])  # clock inside: still one SysEx
        fake.press(49)
        assert box.wait_for(lambda: box.controls.muted[1])
        assert ctl.dropped == 0
    finally:
        ctl.close()
        fake.close()


def test_mido_message_from_the_stream_is_what_was_sent():
    """The framing hands mido the exact bytes of each message (spot check, no ports)."""
    from device.senses.midi_stream import MidiStream

    msgs = [mido.Message("control_change", channel=3, control=7, value=99),
            mido.Message("sysex", data=[1, 2, 3]), mido.Message("pitchwheel", pitch=-77)]
    raw = [b for m in msgs for b in m.bytes()]
    assert [mido.Message.from_bytes(m) for m in MidiStream().feed(raw)] == msgs


def test_the_knob_centre_gives_exactly_scale_one():
    # Before: CC 64 gave 2 * 64 / 127 = 1.0079, shown as 1.01.
    box, fake = Box(), FakeNanoKontrol2()
    ctl = start(box)
    try:
        for v in (64, 127, 64):  # meets 1.0 at the centre, up, back to the centre
            fake.cc(16, v)
        assert box.wait_for(lambda: len(box.of(c.SetScale)) == 3)
        assert [cmd.value for cmd in box.of(c.SetScale)] == [1.0, 2.0, 1.0]
    finally:
        ctl.close()
        fake.close()


def test_the_display_shows_which_way_a_control_must_move_to_pick_up():
    # Before: nothing showed that a fader had not picked its unit up, nor which way.
    from device.senses.display import table_lines

    box, fake = Box(), FakeNanoKontrol2()
    ctl = start(box)
    try:
        box.controls.apply(c.SetGain(1, 0.5))
        base = ctl.received
        fake.cc(0, 10)    # fader 1 low, unit 0 at 1.0: must move up
        fake.cc(1, 120)   # fader 2 high, unit 1 at 0.5: must move down
        fake.cc(17, 127)  # knob 2 at the top, unit 1 at scale 1.0: down
        settle(ctl, base + 3)
        hints = ctl.pickup_hints()
        assert hints[:3] == ("^ ", "vv", "  ") and len(hints) == 8
        state = DisplayState(box.current(), "resynth", "m", True, 0, pickup=hints)
        assert table_lines(state)[1] == "1     1.00^1.00 1.00"
        assert table_lines(state)[2] == "2     0.50v1.00v0.50"
        fake.cc(0, 127)   # fader 1 meets its unit: picked up
        assert box.wait_for(lambda: box.of(c.SetGain))
        assert wait_until(lambda: ctl.pickup_hints()[0] == "  ")
    finally:
        ctl.close()
        fake.close()
