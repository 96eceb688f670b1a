"""The controller map and its pure logic: the paper's table, soft takeover, presets,
LEDs, map files, Korg SysEx packing, and garbage that must never crash it."""

from __future__ import annotations

import json
import random

import mido
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.state import commands as c
from device.state.controls import UnitControls
from device.errors import ConfigError
from device.senses.nanokontrol2 import (
    DEFAULT_MAP,
    PACKED_SCENE_BYTES,
    SCENE_BYTES,
    ControllerMap,
    Pickup,
    Surface,
    load_mapping,
    mapping_from_dict,
    pack7,
    parse_korg,
    scene_dump,
    scene_request,
    unpack7,
    with_led_mode,
)


def cc(control: int, value: int, channel: int = 0) -> mido.Message:
    return mido.Message("control_change", channel=channel, control=control, value=value)


class Rig:
    """A Surface feeding UnitControls directly, with a fake clock."""

    def __init__(self, units: int = 16, mapping: ControllerMap = DEFAULT_MAP):
        self.surface = Surface(mapping)
        self.controls = UnitControls(units)
        self.now = 0.0
        self.posted: list[object] = []

    def send(self, *msgs: mido.Message) -> list[object]:
        out = []
        for m in msgs:
            cmds = self.surface.handle(m, self.controls.snapshot(), self.now)
            for cmd in cmds:
                self.controls.apply(cmd)
            out += cmds
        self.posted += out
        return out

    def press(self, control: int, hold: float = 0.0) -> list[object]:
        out = self.send(cc(control, 127))
        self.now += hold
        return out + self.send(cc(control, 0))


def test_default_map_is_the_papers_table():
    r = Rig()
    assert r.press(59) == [c.PageBy(1)]                 # Track ▶
    assert r.press(58) == [c.PageBy(-1)]                # Track ◀
    assert r.press(46) == [c.Shutdown()]                # Cycle
    assert r.press(60) == [c.ZeroAll()]                 # Set
    assert r.press(43) == [c.StepMode(-1)]              # Rewind
    assert r.press(44) == [c.StepMode(1)]               # Fast-forward
    assert r.press(42) == [c.Stop()]
    assert r.press(41) == [c.PlayPause()]
    assert r.press(45) == [c.ResetAll()]                # Record
    assert r.press(61) == [c.StepModel(-1)]             # Marker ◀
    assert r.press(62) == [c.StepModel(1)]              # Marker ▶
    assert r.press(52) == [c.ToggleMute(4)]             # M5
    assert r.press(66) == [c.ToggleMotionRecord()]      # R3: motion take
    assert r.press(67) == [c.ToggleMotionLoop()]        # R4: loop / stop it
    assert r.press(68) == []                            # R5: free
    assert r.press(64) == [c.ToggleRecording()]         # R1: record the output


def test_r2_held_turns_the_strips_into_lfo_controls():
    r = Rig()
    r.press(59)                                         # page 2: units 8..15
    assert r.send(cc(65, 127)) == []                    # R2 down: the LFO shift
    assert r.send(cc(2, 64)) == [c.SetLfoDepth(10, 64 / 127)]   # fader 3: depth, no pickup
    got = r.send(cc(18, 0), cc(18, 127))                # knob 3: rate, 0.05..20 Hz log
    assert got == [c.SetLfoRate(10, pytest.approx(0.05)), c.SetLfoRate(10, pytest.approx(20.0))]
    mid = r.send(cc(18, 64))[0].hz
    assert mid == pytest.approx(1.0, abs=1e-12)         # the centre detent: 1 Hz exactly
    assert r.press(50) == [c.StepLfoShape(10, 1)]       # M3: next shape, not a mute
    assert r.controls.lfo_shape[10] == 1 and not r.controls.muted[10]
    assert r.send(cc(65, 0)) == []                      # R2 up
    assert r.send(cc(2, 20)) == []                      # the fader must pick gain up again
    assert r.controls.gain[10] == 1.0
    assert r.press(50) == [c.ToggleMute(10)]            # M3 mutes again


def test_faders_and_knobs_address_the_page_and_scale_to_ranges():
    r = Rig()
    r.send(cc(2, 127), cc(2, 0))     # fader 3 met unit 2 at 1.0, then went to 0
    assert r.controls.gain[2] == 0.0
    r.send(cc(18, 64), cc(18, 127))  # knob 3 met scale 1.0 at its centre, then max
    assert r.controls.scale[2] == 2.0
    r.press(59)
    r.send(cc(7, 127), cc(7, 100))   # fader 8 on page 2 is unit 15
    assert r.controls.gain[15] == pytest.approx(100 / 127)


def test_button_press_acts_on_press_once_and_release_alone_does_nothing():
    r = Rig()
    assert r.send(cc(41, 127)) == [c.PlayPause()]
    assert r.send(cc(41, 127)) == []   # no release seen: not a second press
    assert r.send(cc(41, 0)) == []
    assert r.send(cc(41, 0)) == []     # a stray release
    assert r.send(cc(41, 127), cc(41, 0), cc(41, 127), cc(41, 0)) == [c.PlayPause()] * 2


def test_short_last_page_ignores_strips_past_the_last_unit():
    r = Rig(units=10)
    r.press(59)  # page 2 holds units 8, 9
    assert r.press(49) == [c.ToggleMute(9)]
    assert r.press(50) == []           # M3 has no unit here
    assert r.send(cc(5, 127), cc(21, 64)) == []
    leds = r.surface.leds(r.controls.snapshot(), "resynth", False)
    assert leds[50] is False


def test_pickup_needs_the_value_to_be_met_or_crossed():
    p = Pickup(window=2 / 127)
    assert not p.move("gain", 0, 0, 0.2, current=0.9)    # first touch far away
    assert not p.move("gain", 0, 0, 0.5, current=0.9)
    assert p.move("gain", 0, 0, 0.95, current=0.9)       # crossed 0.9 between two messages
    assert p.move("gain", 0, 0, 0.1, current=0.95)       # engaged: follows
    p.release()
    assert p.move("gain", 0, 0, 0.105, current=0.1)      # within the window
    assert not p.move("scale", 0, 0, 0.0, current=0.5)   # kinds are separate


def test_reset_and_page_change_release_pickup():
    r = Rig()
    r.send(cc(0, 127), cc(0, 30))
    assert r.controls.gain[0] == pytest.approx(30 / 127)
    r.press(45)  # Record: gain back to 1
    assert r.controls.gain[0] == 1.0
    assert r.send(cc(0, 40)) == []   # the fader at 40 must not pull unit 0 from 1.0
    r.send(cc(0, 127), cc(0, 30))      # engaged on unit 0, left at 30
    assert r.controls.gain[0] == pytest.approx(30 / 127)
    r.press(59)
    assert r.send(cc(0, 50)) == []     # unit 8 is at 1.0: not met
    r.press(58)                        # back on page 1: unit 0 (at 30) must be met again
    assert r.send(cc(0, 60)) == []
    r.surface.release()
    assert r.send(cc(0, 31)) == [c.SetGain(0, 31 / 127)]  # within the window of 30


def test_a_unit_changed_elsewhere_must_be_picked_up_again():
    r = Rig()
    r.send(cc(0, 127), cc(0, 100))
    r.now += 0.1
    assert r.send(cc(0, 101)) == [c.SetGain(0, 101 / 127)]  # engaged, lagging snapshot or not
    r.controls.apply(c.SetGain(0, 0.2))                      # a preset from the app, say
    r.now += 1.0
    assert r.send(cc(0, 102)) == []
    assert r.controls.gain[0] == 0.2
    assert r.send(cc(0, 26)) == [c.SetGain(0, 26 / 127)]     # crossed 0.2: takes over


def test_a_lagging_snapshot_does_not_release_pickup():
    r = Rig()
    r.send(cc(0, 127))
    snap = r.controls.snapshot()  # the audio thread has not applied anything since
    for v in range(126, 60, -1):
        r.now += 0.01
        assert r.surface.handle(cc(0, v), snap, r.now) == [c.SetGain(0, v / 127)]


def test_zero_all_then_faders_pick_up_from_zero():
    r = Rig()
    r.press(60)
    assert r.send(cc(3, 90)) == []
    assert r.send(cc(3, 1)) == [c.SetGain(3, 1 / 127)]


def test_s_buttons_recall_on_tap_and_save_on_hold():
    r = Rig()
    assert r.press(33, hold=0.2) == [c.RecallPreset(2)]
    assert r.press(39, hold=1.0) == [c.SavePreset(8)]
    assert r.send(cc(32, 127)) == []  # nothing until the release says which


def test_channel_filter_and_other_message_types():
    r = Rig()
    assert r.send(cc(41, 127, channel=5)) == []
    assert r.send(mido.Message("note_on", note=41, velocity=127)) == []
    assert r.send(mido.Message("sysex", data=[1, 2, 3])) == []
    any_channel = Rig(mapping=ControllerMap(channel=0))
    assert any_channel.send(cc(41, 127, channel=5)) == [c.PlayPause()]


def test_leds_show_mode_play_and_page_mutes():
    r = Rig()
    r.controls.apply(c.ToggleMute(3))
    r.controls.apply(c.ToggleMute(11))
    snap = r.controls.snapshot()
    lit = r.surface.leds(snap, "generate", True)
    assert {k for k, v in lit.items() if v} == {41, 43, 44, 51}
    assert set(lit) == {41, 42, 43, 44, *range(48, 56)}
    r.controls.apply(c.PageBy(1))
    lit = r.surface.leds(r.controls.snapshot(), "original", False)
    assert {k for k, v in lit.items() if v} == {42, 43, 51}


@settings(max_examples=300, derandomize=True)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash_the_surface(raw):
    r = Rig(units=11)
    parser = mido.Parser()
    parser.feed(raw)
    for msg in parser:
        r.send(msg)
    assert all(0.0 <= g <= 1.0 for g in r.controls.gain)
    assert all(0.0 <= s <= 2.0 for s in r.controls.scale)


@settings(max_examples=200, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 127), st.integers(0, 127)), max_size=300),
       st.integers(1, 40))
def test_any_cc_stream_keeps_controls_in_range(events, units):
    r = Rig(units=units)
    for control, value in events:
        r.send(cc(control, value))
    assert 0 <= r.controls.page < r.controls.pages


def test_pack7_roundtrip_and_sizes():
    rng = random.Random(3)
    scene = bytes(rng.randrange(256) for _ in range(SCENE_BYTES))
    packed = pack7(scene)
    assert len(packed) == PACKED_SCENE_BYTES
    assert all(0 <= b < 128 for b in packed)
    assert unpack7(packed) == scene
    # bit i of the group's first byte is the top bit of byte i
    assert pack7(bytes([0x80, 0, 0xFF])) == [0b101, 0, 0, 0x7F]


@settings(max_examples=200, derandomize=True)
@given(st.binary(max_size=700))
def test_pack7_roundtrip_any_length(data):
    assert unpack7(pack7(data)) == data


def test_scene_messages_and_replies():
    assert scene_request() == [0x42, 0x40, 0x00, 0x01, 0x13, 0x00, 0x1F, 0x10, 0x00]
    scene = bytes(range(256)) + bytes(SCENE_BYTES - 256)
    dump = scene_dump(with_led_mode(scene, True))
    assert dump[:12] == [0x42, 0x40, 0, 1, 0x13, 0, 0x7F, 0x7F, 0x02, 0x03, 0x05, 0x40]
    kind, back = parse_korg(dump)
    assert kind == "scene" and back[2] == 1 and back[3:] == scene[3:]
    assert parse_korg([0x42, 0x40, 0, 1, 0x13, 0, 0x5F, 0x23, 0]) == ("ack", None)
    assert parse_korg([0x42, 0x41, 0, 1, 0x13, 0, 0x5F, 0x24, 0]) == ("nak", None)
    assert parse_korg([0x42, 0x40, 0, 1, 0x13, 0, 0x7F, 0x7F, 2, 3, 5, 0x40, 1, 2]) == (
        "other", None)
    assert parse_korg([0x7E, 0x7F, 6, 2]) == ("other", None)
    assert parse_korg([]) == ("other", None)
    with pytest.raises(ConfigError, match="339 bytes, got 3"):
        with_led_mode(b"abc", True)


def test_mapping_file_toml_and_json(tmp_path):
    toml = tmp_path / "x.toml"
    toml.write_text('port = "X-Touch"\nfaders = [1, 2]\n[buttons]\nplay_pause = 94\n')
    m = load_mapping(toml)
    assert m.port == "X-Touch" and m.faders == (1, 2) and m.buttons == {"play_pause": 94}
    assert m.knobs == DEFAULT_MAP.knobs  # unspecified keys keep the nanoKONTROL2's
    js = tmp_path / "x.json"
    js.write_text(json.dumps({"faders": [], "leds": {"playing": 94}, "buttons": {}}))
    m = load_mapping(js)
    assert m.leds == {"playing": (94,)}


@pytest.mark.parametrize("data, match", [
    ({"faders": [0, 0]}, r"faders\[1\] must be a CC not already used by faders\[0\]"),
    ({"knobs": [200]}, r"knobs\[0\] must be a CC number in 0..127, got 200"),
    ({"buttons": {"explode": 3}}, "buttons.explode must be one of page_prev"),
    ({"buttons": {"stop": 0}}, "a CC not already used by faders"),
    ({"channel": 17}, "channel must be 1..16, or 0 for any, got 17"),
    ({"leds": {"disco": [1]}}, "leds.disco must be one of playing"),
    ({"faders": list(range(9))}, "at most 8"),
    ({"colour": "red"}, "unknown key"),
    ({"faders": 3}, "a list of CC numbers"),
    ({"pickup": -1}, "pickup"),
])
def test_bad_mappings_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        mapping_from_dict(data)


def test_bad_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_mapping(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("faders = [")
    with pytest.raises(ConfigError, match="does not parse"):
        load_mapping(bad)
    other = tmp_path / "map.yaml"
    other.write_text("a: 1")
    with pytest.raises(ConfigError, match=".toml or .json"):
        load_mapping(other)
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a table"):
        load_mapping(arr)


def test_json_mapping_with_nan_or_infinity_is_refused(tmp_path):
    for token in ("NaN", "Infinity", "-Infinity"):
        path = tmp_path / "nan.json"
        path.write_text(f'{{"preset_hold_s": {token}}}')
        with pytest.raises(ConfigError, match=f"does not parse.*{token.lstrip('-')}"):
            load_mapping(path)
    bad_utf8 = tmp_path / "latin1.json"
    bad_utf8.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(ConfigError, match="does not parse"):
        load_mapping(bad_utf8)


def test_knob_centre_is_exactly_one_and_travel_round_trips():
    from device.senses.nanokontrol2 import knob_position, knob_travel

    assert knob_travel(64) == 0.5 and knob_travel(0) == 0.0 and knob_travel(127) == 1.0
    values = [knob_travel(v) for v in range(128)]
    assert values == sorted(values) and len(set(values)) == 128
    for v in range(128):
        assert knob_position(knob_travel(v)) * 127 == pytest.approx(v)
    r = Rig()
    assert r.send(cc(16, 64)) == [c.SetScale(0, 1.0)]  # exactly 1.0 (was 128/127)


def test_a_fader_right_after_track_next_moves_the_new_pages_unit_before_the_page_shows():
    """The published controls follow a page change a hop or more later (with the audio
    process ~25 ms): a fader moved in that time reached the old page's unit.  Until the page
    shows, or ECHO_S, the strips address the page the button asked for."""
    from device.state.controls import ECHO_S

    surface, controls = Surface(DEFAULT_MAP), UnitControls(16)
    stale = controls.snapshot()                       # page 1 (index 0), never updated
    assert surface.handle(cc(59, 127), stale, 0.0) == [c.PageBy(1)]
    surface.handle(cc(59, 0), stale, 0.01)
    surface.handle(cc(7, 127), stale, 0.02)           # fader 8 meets unit 15 at the top
    assert surface.handle(cc(7, 100), stale, 0.03) == [c.SetGain(15, pytest.approx(100 / 127))]
    # long after, with the page still not shown, the published page counts again
    assert surface.handle(cc(7, 90), stale, 0.03 + ECHO_S) == []  # unit 7: pickup
    controls.apply(c.PageBy(1))
    shown = controls.snapshot()                       # once shown, it is the page
    surface.handle(cc(58, 127), shown, 1.0)           # Track ◀, again not shown yet
    surface.handle(cc(58, 0), shown, 1.01)
    surface.handle(cc(0, 127), shown, 1.02)
    assert surface.handle(cc(0, 50), shown, 1.03) == [c.SetGain(0, pytest.approx(50 / 127))]
