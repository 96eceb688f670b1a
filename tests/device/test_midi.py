"""MidiController over real python-rtmidi on a JACK dummy server (harness.md, MIDI).

The nanoKONTROL2 is played by FakeNanoKontrol2 (two virtual JACK MIDI ports);
the controller under test finds it by substring, as it would the real one.
"""

from __future__ import annotations

import random
import threading
import time

import mido
import pytest

from device.state import commands as c
from device.state.controls import UnitControls
from device.senses.display import DisplayState
from device.senses.midi import SYSEX_TRIES, MidiController
from device.senses.nanokontrol2 import ControllerMap
from tests.device.fake_nanokontrol2 import FakeNanoKontrol2, PolledInput
from tests.jack import jack_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("jack_server")

# JACK's dummy driver without real-time priority stalls for seconds when the machine is
# loaded (seen at load 12 on 2 cores): waits are generous, none of them is a time limit.
SYSEX_TIMEOUT = 5.0


class Box:
    """The app's side, reduced: unit commands applied at once, the rest recorded."""

    def __init__(self, units: int = 16):
        self.controls = UnitControls(units)
        self.commands: list[object] = []
        self._lock = threading.RLock()  # predicates of wait_for call of()
        self.changed = threading.Condition(self._lock)

    def post(self, cmd: object) -> None:
        with self._lock:
            self.commands.append(cmd)
            self.controls.apply(cmd)
            self.changed.notify_all()

    def current(self):
        return self.controls.snapshot()

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        with self._lock:
            return self.changed.wait_for(predicate, timeout)

    def of(self, kind: type) -> list[object]:
        with self._lock:
            return [x for x in self.commands if isinstance(x, kind)]


@pytest.fixture
def fake():
    f = FakeNanoKontrol2()
    yield f
    f.close()


@pytest.fixture
def box():
    return Box()


@pytest.fixture
def controller(fake, box):
    ctl = MidiController(box.post, box.current, scan_interval=0.1, max_backoff=0.4,
                         sysex_timeout=SYSEX_TIMEOUT).start()
    assert ctl.wait_connected(10.0), "controller never found the fake nanoKONTROL2"
    yield ctl
    ctl.close()


def settle(ctl: MidiController, sent: int, timeout: float = 15.0) -> None:
    """Wait until the controller has taken ``sent`` messages from its queue."""
    deadline = time.monotonic() + timeout
    while ctl.received < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.02)  # let the handler finish the last one


def test_finds_port_by_substring_and_sets_external_led_mode(controller, fake):
    assert "nanoKONTROL2" in controller.port_name
    assert controller.led_mode == "external"
    assert fake.led_mode == 1
    # what was sent back is the controller's own scene with only the LED byte changed
    original = bytearray(fake.scene_writes[0])
    original[2] = 0
    assert bytes(original) == bytes((i * 37) & 0xFF if i != 2 else 0 for i in range(339))


def test_close_restores_the_original_led_mode_and_darkens_leds(fake, box):
    ctl = MidiController(box.post, box.current, scan_interval=0.1,
                         sysex_timeout=SYSEX_TIMEOUT).start()
    assert ctl.wait_connected(10.0)
    assert fake.wait_for(lambda: fake.led_mode == 1)
    snap = box.current()
    ctl.update_leds(DisplayState(snap, "resynth", "m", True, 0))
    assert fake.wait_for(lambda: fake.leds.get(41) == 127)
    ctl.close()
    assert fake.led_mode == 0
    assert len(fake.scene_writes) == 2
    assert fake.leds[41] == 0 and fake.leds[44] == 0
    ctl.close()  # idempotent


def test_fader_soft_takeover_then_tracks(controller, fake, box):
    # unit 0 is at gain 1.0; a fader sweep from the bottom takes over only at the top
    base = controller.received
    for v in [*range(0, 128, 4), 127]:
        fake.cc(0, v)
    settle(controller, base + 33)
    gains = [cmd.value for cmd in box.of(c.SetGain)]
    assert gains and min(gains) >= 1.0 - 2 / 127 - 1e-9, gains
    fake.cc(0, 64)
    assert box.wait_for(lambda: box.controls.gain[0] == pytest.approx(64 / 127))
    # a knob far from its unit's value 1.0 (=64/127 of 0..2) does nothing until it crosses
    fake.cc(17, 0)
    fake.cc(17, 10)
    fake.cc(17, 100)  # crossed 63.5
    assert box.wait_for(lambda: box.controls.scale[1] == pytest.approx(1 + 36 / 63))
    assert [cmd.value for cmd in box.of(c.SetScale)] == [pytest.approx(1 + 36 / 63)]


def test_page_change_reengages_pickup(controller, fake, box):
    fake.cc(0, 127)
    fake.cc(0, 0)
    assert box.wait_for(lambda: box.controls.gain[0] == 0.0)
    fake.press(59)  # Track ▶
    assert box.wait_for(lambda: box.controls.page == 1)
    fake.cc(0, 10)  # unit 8 is at 1.0: the fader at 10 must not pull it down
    fake.cc(0, 127)  # meets it
    fake.cc(0, 90)
    assert box.wait_for(lambda: box.controls.gain[8] == pytest.approx(90 / 127))
    assert box.controls.gain[0] == 0.0
    assert not any(isinstance(x, c.SetGain) and x.value == pytest.approx(10 / 127)
                   for x in box.commands)


def test_transport_and_marker_buttons_follow_the_paper(controller, fake, box):
    expected = {41: c.PlayPause(), 42: c.Stop(), 43: c.StepMode(-1), 44: c.StepMode(1),
                45: c.ResetAll(), 46: c.Shutdown(), 60: c.ZeroAll(), 58: c.PageBy(-1),
                61: c.StepModel(-1), 62: c.StepModel(1)}
    base = controller.received
    for cc in expected:
        fake.press(cc)
    settle(controller, base + 2 * len(expected))
    assert box.commands == list(expected.values())


def test_mute_buttons_toggle_units_of_the_page(controller, fake, box):
    fake.press(50)  # M3
    assert box.wait_for(lambda: box.controls.muted[2])
    fake.press(59)
    fake.press(50)
    assert box.wait_for(lambda: box.controls.muted[10])
    assert box.controls.muted.sum() == 2


def test_no_event_lost_in_a_storm(controller, fake, box):
    rng = random.Random(5)
    # take over all 8 faders first (units start at 1.0)
    sent = controller.received + 8
    for cc in range(8):
        fake.cc(cc, 127)
    last = {}
    for _ in range(3000):
        cc = rng.randrange(8)
        v = rng.randrange(128)
        fake.cc(cc, v)
        last[cc] = v
        sent += 1
    # press+release pairs back to back: every press counts
    for _ in range(51):
        fake.press(55)  # M8
        sent += 2
    settle(controller, sent, timeout=30)
    assert controller.connects == 1
    assert controller.received == sent
    assert controller.errors == 0
    for cc, v in last.items():
        assert box.controls.gain[cc] == pytest.approx(v / 127)
    assert len(box.of(c.ToggleMute)) == 51
    assert box.controls.muted[7]


def test_leds_follow_state_and_only_changes_are_sent(controller, fake, box):
    box.controls.apply(c.ToggleMute(1))
    box.controls.apply(c.ToggleMute(9))  # page 2: not lit on page 1
    state = DisplayState(box.current(), "original", "m", False, 0)
    controller.update_leds(state)
    assert fake.wait_for(lambda: 43 in fake.leds and 49 in fake.leds and 55 in fake.leds)
    assert fake.leds[49] == 127 and fake.leds[48] == 0 and fake.leds[57 - 2] == 0
    assert fake.leds[43] == 127 and fake.leds[44] == 0 and fake.leds[42] == 127
    assert fake.leds[41] == 0
    n = len(fake.led_log)
    controller.update_leds(state)
    time.sleep(0.1)
    assert len(fake.led_log) == n
    controller.update_leds(DisplayState(box.current(), "generate", "m", True, 0))
    assert fake.wait_for(lambda: fake.leds[41] == 127 and fake.leds[44] == 127)
    assert fake.leds[43] == 127 and fake.leds[42] == 0
    assert sorted(cc for cc, _ in fake.led_log[n:]) == [41, 42, 44]


def test_unplug_and_replug_without_restart(fake, box):
    ctl = MidiController(box.post, box.current, scan_interval=0.1, max_backoff=0.3,
                         sysex_timeout=SYSEX_TIMEOUT).start()
    try:
        assert ctl.wait_connected(10.0)
        ctl.update_leds(DisplayState(box.current(), "resynth", "m", True, 0))
        fake.close()
        deadline = time.monotonic() + 10
        while ctl.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not ctl.connected
        time.sleep(0.5)  # a few scans with backoff while nothing is there
        second = FakeNanoKontrol2()
        try:
            assert ctl.wait_connected(10.0)
            assert ctl.connects == 2
            assert second.wait_for(lambda: second.led_mode == 1 and second.leds.get(41) == 127)
            second.press(51)
            assert box.wait_for(lambda: box.controls.muted[3])
        finally:
            ctl.close()
            second.close()
    finally:
        ctl.close()


def test_another_controller_from_a_mapping_file(tmp_path, box):
    path = tmp_path / "other.toml"
    path.write_text('name = "Other"\nport = "OtherCtl"\nchannel = 3\nkorg_led_sysex = false\n'
                    'faders = [70, 71]\nknobs = []\nmutes = [80]\npresets = []\n'
                    'pickup = 127\n[buttons]\nplay_pause = 90\n[leds]\nplaying = [90]\n')
    from device.senses.midi import load_mapping
    mapping = load_mapping(path)
    backend = mido.Backend(load=True)
    out = backend.open_output("OtherCtl", virtual=True)
    leds = []
    inp = PolledInput(backend, "OtherCtl", leds.append)
    ctl = MidiController(box.post, box.current, mapping=mapping, scan_interval=0.1).start()
    try:
        assert ctl.wait_connected(10.0)
        out.send(mido.Message("control_change", channel=2, control=71, value=127))
        out.send(mido.Message("control_change", channel=2, control=71, value=0))
        out.send(mido.Message("control_change", channel=0, control=80, value=127))  # channel 1
        out.send(mido.Message("control_change", channel=2, control=90, value=127))
        assert box.wait_for(lambda: box.of(c.PlayPause))
        assert box.controls.gain[1] == 0.0
        assert not box.of(c.ToggleMute)
        ctl.update_leds(DisplayState(box.current(), "resynth", "m", True, 0))
        deadline = time.monotonic() + 10
        while len(leds) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert sorted((m.channel, m.control, m.value) for m in leds) == [(2, 80, 0), (2, 90, 127)]
        assert ctl.led_mode == "unknown"  # no SysEx sent to a non-Korg controller
    finally:
        ctl.close()
        inp.close()
        out.close()


def test_sysex_flood_and_garbage_do_not_stop_it(controller, fake, box):
    rng = random.Random(9)
    sent = controller.received
    for i in range(300):
        data = [rng.randrange(128) for _ in range(rng.randrange(0, 600))]
        if i % 3 == 0:  # looks like Korg, is not a valid reply
            data = [0x42, 0x40, 0, 1, 0x13, 0] + data
        fake.to_host.send(mido.Message("sysex", data=data))
        fake.to_host.send(mido.Message("pitchwheel", pitch=rng.randrange(-8192, 8192)))
        sent += 2
        time.sleep(0.005)  # the sender's JACK ring buffer holds 16 KiB
    fake.press(50)
    sent += 2
    settle(controller, sent, timeout=30)
    assert box.wait_for(lambda: box.controls.muted[2])
    assert controller.errors == 0


def test_controller_with_no_device_waits_and_closes(box):
    ctl = MidiController(box.post, box.current, port_match="NoSuchController",
                         scan_interval=0.05, max_backoff=0.2).start()
    time.sleep(0.3)
    assert not ctl.connected
    assert "waiting" in repr(ctl)
    ctl.close()
    assert "closed" in repr(ctl)


def test_nak_and_silence_leave_led_mode_unknown(box):
    mute = FakeNanoKontrol2(answer_sysex=False)
    ctl = MidiController(box.post, box.current, scan_interval=0.1, sysex_timeout=0.3).start()
    try:
        assert ctl.wait_connected(10.0)
        assert ctl.led_mode == "unknown"
        assert len(mute.sysex_in) == SYSEX_TRIES  # asked a few times, then carried on
        mute.press(48)
        assert box.wait_for(lambda: box.controls.muted[0])
    finally:
        ctl.close()
        mute.close()
    assert len(mute.sysex_in) == SYSEX_TRIES  # nothing to restore: no scene was written


def test_callback_survives_a_failing_post(fake):
    def post(cmd):
        raise RuntimeError("queue gone")
    controls = UnitControls(8)
    ctl = MidiController(post, controls.snapshot, scan_interval=0.1).start()
    try:
        assert ctl.wait_connected(10.0)
        base = ctl.received
        fake.press(48)
        fake.press(48)
        settle(ctl, base + 4)
        assert ctl.errors == 2
        assert ctl.received == base + 4
    finally:
        ctl.close()


def test_constructor_rejects_bad_scan_interval(box):
    from device.errors import DeviceError
    with pytest.raises(DeviceError, match="scan_interval"):
        MidiController(box.post, box.current, scan_interval=0)


def test_controller_map_is_accepted_by_name(box):
    ctl = MidiController(box.post, box.current, mapping=ControllerMap(port="X"),
                         backend="mido.backends.rtmidi/UNIX_JACK")
    assert ctl.port_match == "X"
    ctl.close()


def test_midi_system_that_comes_up_later(monkeypatch, box):
    """No JACK server at start (no ALSA sequencer on a box is the same case): the
    controller waits, then connects once the server and the controller appear."""
    from tests.jack import JackServer

    server = JackServer()
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)  # not running yet
    ctl = MidiController(box.post, box.current, scan_interval=0.05, max_backoff=0.2,
                         sysex_timeout=SYSEX_TIMEOUT).start()
    try:
        time.sleep(0.3)
        assert not ctl.connected
        with server:
            late = FakeNanoKontrol2()
            try:
                assert ctl.wait_connected(10.0)
                late.press(48)
                assert box.wait_for(lambda: box.controls.muted[0])
            finally:
                ctl.close()
                late.close()
    finally:
        ctl.close()
