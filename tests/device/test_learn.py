"""MIDI learn (issue 16, item 8): the pure session (device.senses.learn) and a learn on the
box's R8 through the real JACK MIDI path, saved and read back in the mapping-file format."""

from __future__ import annotations

import pytest

from device.senses.keyboard import command_for
from device.senses.learn import FUNCTIONS, Learn, assign, function_label, mapping_dict
from device.senses.midi import MidiController
from device.senses.nanokontrol2 import (
    ACTIONS,
    DEFAULT_MAP,
    MODIFIERS,
    ControllerMap,
    load_mapping,
    mapping_from_dict,
)
from device.state import commands as c
from tests.device.fake_nanokontrol2 import FakeNanoKontrol2
from tests.device.test_midi import SYSEX_TIMEOUT, Box, settle
from tests.jack import jack_server  # noqa: F401  (fixture)


def test_a_session_assigns_in_order_and_swaps_clashing_ccs():
    learn = Learn(DEFAULT_MAP)
    assert learn.prompt() == "learn fader 1: move a control"
    assert learn.offer(0, 16) == "fader 1 = CC 16"   # knob 1's CC: knob 1 takes fader 1's 0
    assert learn.offer(0, 16) is None                 # the same control again: ignored
    assert learn.mapping.faders[0] == 16 and learn.mapping.knobs[0] == 0
    learn.step(+6)                                    # skip to fader 8
    assert learn.offer(2, 100) == "fader 8 = CC 100"
    assert function_label(learn.function) == "knob 1"
    m = learn.result()
    assert m.channel == 0                             # learnt on channels 1 and 3: any
    assert mapping_from_dict(mapping_dict(m)) == m    # a valid map, as the file holds it
    assert len(FUNCTIONS) == 32 + len(ACTIONS) + len(MODIFIERS)


def test_assign_a_button_ccs_away_from_a_strip_shortens_the_row_at_the_gap():
    m = assign(DEFAULT_MAP, ("buttons", "stop"), 3)   # fader 4's CC; stop had 42
    assert m.buttons["stop"] == 3 and m.faders[3] == 42
    m = assign(m, ("buttons", "zero_all"), 5)         # zero_all had 60: fader 6 takes it
    assert m.faders[5] == 60
    m2 = assign(ControllerMap(buttons={}), ("buttons", "stop"), 2)  # fader 3 loses its CC
    assert m2.faders == (0, 1) and m2.buttons == {"stop": 2}


def test_the_keyboard_has_the_learn_keys():
    assert command_for("L") == c.ToggleLearn()
    assert command_for("<") == c.StepLearn(-1) and command_for(">") == c.StepLearn(1)


@pytest.mark.usefixtures("jack_server")
def test_learn_on_the_box_then_play_the_learnt_controls(tmp_path):
    # Before: no learn at all (R8 did nothing).
    said: list[str] = []
    box, fake = Box(), FakeNanoKontrol2()
    path = tmp_path / "learnt.json"
    ctl = MidiController(box.post, box.current, scan_interval=0.1, sysex_timeout=SYSEX_TIMEOUT,
                         say=said.append, learn_path=str(path)).start()
    try:
        assert ctl.wait_connected(15.0)
        base = ctl.received
        fake.press(71)                       # R8: learn
        for v in (10, 20, 30):
            fake.cc(90, v, channel=0)        # a control of another layout: fader 1
        fake.press(91)                       # a button: fader 2 (a press and a release)
        settle(ctl, base + 7)
        assert ctl.learning
        assert said[:3] == ["learn fader 1: move a control",
                            "fader 1 = CC 90; learn fader 2: move a control",
                            "fader 2 = CC 91; learn fader 3: move a control"]
        fake.press(71)                       # R8 again: the map takes over and is saved
        settle(ctl, base + 9)
        assert not ctl.learning and said[-1] == "learnt 2, saved"
        saved = load_mapping(path)
        assert saved.faders[:2] == (90, 91) and saved == ctl.mapping
        fake.cc(90, 127)                     # meets unit 0 at gain 1.0 ...
        fake.cc(90, 0)                       # ... and moves it
        assert box.wait_for(lambda: box.controls.gain[0] == 0.0)
        assert not box.of(c.ToggleLearn)     # never reaches the app
    finally:
        ctl.close()
        fake.close()


def test_the_shipped_midimix_map_loads():
    from pathlib import Path

    m = load_mapping(Path(__file__).parents[2] / "deploy/controllers/akai-midimix.toml")
    assert m.port == "MIDI Mix" and m.faders == tuple(range(19, 48, 4))
    assert m.knobs == tuple(range(16, 45, 4)) and m.buttons == {} and not m.korg_led_sysex


@pytest.mark.usefixtures("jack_server")
def test_the_app_plays_the_learnt_map_at_start(tmp_path, monkeypatch):
    """A map learnt in an earlier session (saved under ~/.local/share/aesynth) is the one the
    app plays with at its next start, over [midi] mapping and the default map."""
    import time
    from pathlib import Path

    from device.app import App
    from device.senses.learn import LEARNED_PATH, save_mapping
    from device.state.config import config_from_dict, expand
    from tests.jack import MIDI_BACKEND

    monkeypatch.setenv("HOME", str(tmp_path))
    learnt = assign(DEFAULT_MAP, ("faders", 0), 90)  # fader 1 on CC 90 (a foreign control)
    save_mapping(learnt, expand(LEARNED_PATH))
    cfg = config_from_dict({
        "model": {"path": str(Path(__file__).parents[2] / "tests/fixtures/tiny_bundle")},
        "play": {"mode": "generate", "input": "none"},
        "audio": {"playback_device": "null", "realtime": False},
        "display": {"kind": "none"}, "buttons": {"kind": "none"},
        "storage": {"presets_dir": str(tmp_path / "presets"),
                    "recordings_dir": str(tmp_path / "rec")},
    })
    fake = FakeNanoKontrol2()
    app = App(cfg, midi_backend=MIDI_BACKEND).start()
    try:
        assert app.midi.wait_connected(15.0)
        assert app.midi.mapping == learnt
        fake.cc(90, 127)                     # meets unit 0 at gain 1.0 ...
        fake.cc(90, 0)                       # ... and moves it
        deadline = time.monotonic() + 10
        while app.engine.snapshot.controls.gain[0] != 0.0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.engine.snapshot.controls.gain[0] == 0.0
    finally:
        app.close()
        fake.close()
