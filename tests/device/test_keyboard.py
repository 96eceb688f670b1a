"""The desktop keyboard reaches every control (issue 16, item 7): the key decoder (pure)
and KeyboardButtons reading a real pseudo-terminal, its commands applied to UnitControls."""

from __future__ import annotations

import os
import threading

import pytest

from device.models.bundle import default_labels, unit_name
from device.senses.keyboard import LEGEND, KeyboardButtons, UnitKeys, decode_keys
from device.state import commands as c
from device.state.controls import UnitControls

UP, DOWN, RIGHT, LEFT = "\x1b[A", "\x1b[B", "\x1b[C", "\x1b[D"


def test_arrow_keys_are_keys_not_their_bytes():
    # Before: read byte by byte, ESC [ A was "[" (page back) and "A"; all four arrows paged
    # backwards.
    keys, rest = decode_keys(UP + DOWN + RIGHT + LEFT + "\x1bOA" + "\x1b[1;2A" + "m")
    assert keys == ["up", "down", "right", "left", "up", "shift-up", "m"] and rest == ""
    assert decode_keys("\x1b[5~\x1b[6~\x1b[15~x") == (["pgup", "pgdn", "x"], "")
    assert decode_keys("a\x1b[1") == (["a"], "\x1b[1")          # finished by the next read
    assert decode_keys("\x1b[1" + ";2B") == (["shift-down"], "")
    assert decode_keys("\x1bx") == (["esc", "x"], "")
    assert all(len(line) <= 79 for line in LEGEND)


class Played:
    """The app's side: commands applied to the controls at once, presets recorded."""

    def __init__(self, units: int = 20):
        self.controls = UnitControls(units)
        self.commands: list[object] = []
        self.said: list[str] = []
        self._cond = threading.Condition()

    def post(self, cmd: object) -> None:
        with self._cond:
            self.commands.append(cmd)
            self.controls.apply(cmd)
            self._cond.notify_all()

    def say(self, text: str) -> None:
        with self._cond:
            self.said.append(text)
            self._cond.notify_all()

    def wait(self, predicate, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)


@pytest.fixture
def terminal():
    master, slave = os.openpty()
    stream = os.fdopen(slave, "r")
    played = Played()
    kb = KeyboardButtons(played.post, stream=stream, current=played.controls.snapshot,
                         say=played.say).start()
    yield played, lambda text: os.write(master, text.encode())
    kb.close()
    os.close(master)
    stream.close()


def test_arrows_select_and_nudge_a_unit_through_a_terminal(terminal):
    played, type_ = terminal
    type_(UP)  # before: "[" paged back to page 3 of 3
    type_(DOWN + DOWN + DOWN)
    assert played.wait(lambda: len(played.commands) == 4)
    assert played.controls.page == 0
    assert played.controls.gain[0] == pytest.approx(0.7)  # 1.0 is the top: +0.1 stays, -0.3
    type_(RIGHT * 8)  # unit 9: the view follows to page 2
    type_("J")        # fine: gain -0.01
    assert played.wait(lambda: played.controls.gain[8] == pytest.approx(0.99))
    assert played.controls.page == 1
    type_(LEFT)       # back to unit 8, page 1
    type_("k" + "K" + "x")
    assert played.wait(lambda: played.controls.muted[7])
    assert played.controls.page == 0
    assert played.controls.scale[7] == pytest.approx(0.89)
    assert "unit 8 scale 0.89" in played.said


def test_digits_select_and_every_unit_control_is_reached(terminal):
    played, type_ = terminal
    type_("3" + "j" + "j" + "i" + "I" + "x")
    assert played.wait(lambda: played.controls.muted[2])
    assert played.controls.gain[2] == pytest.approx(0.8)
    assert played.controls.scale[2] == pytest.approx(1.11)
    type_("=" + "." + "l")  # the selected unit's LFO: depth, rate, shape
    assert played.wait(lambda: played.controls.lfo_shape[2] == 1)
    assert played.controls.lfo_depth[2] == pytest.approx(0.1)
    assert played.controls.lfo_rate[2] == pytest.approx(1.25)
    type_("v3" + "V5" + "vm")  # recall 3, save 5, a cancelled recall ("m" does nothing)
    assert played.wait(lambda: "preset: cancelled" in played.said)
    assert [x for x in played.commands if isinstance(x, c.RecallPreset | c.SavePreset)] == [
        c.RecallPreset(3), c.SavePreset(5)]
    assert not any(isinstance(x, c.StepMode) for x in played.commands)
    type_("u" * 30)  # clamped at the range's top
    assert played.wait(lambda: played.controls.gain[2] == 1.0)


def test_unit_keys_stay_inside_a_short_last_page():
    keys, controls = UnitKeys(), UnitControls(10)
    controls.apply(c.PageBy(1))  # page 2 has units 9 and 10
    assert keys.handle("5", controls.snapshot()) == []
    assert keys.handle("x", controls.snapshot()) == []  # no unit 13
    assert keys.handle("2", controls.snapshot()) == [] and keys.said == "unit 10"
    assert keys.handle("right", controls.snapshot()) == [c.PageBy(-1)]  # wraps to unit 1
    assert keys.strip == 0


def test_every_unit_key_says_what_it_changed():
    """Mute and the LFO keys left the previous key's message up ('unit 1 scale 1.10' while
    muting; a newcomer's trial): each now says its own change."""
    keys, ctl = UnitKeys(), UnitControls(8)
    keys.handle("3", ctl.snapshot())
    said = {}
    for key in ("x", "l", ".", "=", "-"):
        keys.handle(key, ctl.snapshot())
        said[key] = keys.said
    assert said == {"x": "unit 3 muted", "l": "unit 3 LFO triangle", ".": "unit 3 LFO 1.25 Hz",
                    "=": "unit 3 LFO depth 0.1", "-": "unit 3 LFO depth 0.0 (off)"}
    ctl.apply(c.ToggleMute(2))
    keys.handle("x", ctl.snapshot())
    assert keys.said == "unit 3 unmuted"


LABELS = ("low", "mid", "body", "air", "air2", "hiss", "thump", "edge")


def test_unit_name_says_the_label_the_table_shows_and_the_number_without_one():
    assert unit_name(2, LABELS) == "u3 body"
    assert unit_name(2, ("a", "b", "longlabel")) == "u3 longl"  # cut as the table cuts it
    assert unit_name(2) == "unit 3"                            # a bundle without labels
    assert unit_name(2, default_labels(8)) == "unit 3"         # ... read from its manifest
    assert unit_name(9, LABELS) == "unit 10"                   # past the labels


def test_unit_keys_name_a_labelled_unit_by_its_label():
    """A newcomer's trial: the table showed "body", the message said "unit 3"."""
    keys, ctl = UnitKeys(), UnitControls(8)
    keys.handle("3", ctl.snapshot(), LABELS)
    said = [keys.said]
    for key in ("x", "l", ".", "=", "u", "k"):
        keys.handle(key, ctl.snapshot(), LABELS)
        said.append(keys.said)
    assert said == ["u3 body", "u3 body muted", "u3 body LFO triangle", "u3 body LFO 1.25 Hz",
                    "u3 body LFO depth 0.1", "u3 body gain 1.00", "u3 body scale 0.90"]
    keys.handle("right", ctl.snapshot(), LABELS)
    assert keys.said == "u4 air"
    # another model's labels (a model change under way) never name these units
    keys.handle("x", ctl.snapshot(), LABELS[:4])
    assert keys.said == "unit 4 muted"


def test_keyboard_buttons_say_the_playing_models_labels():
    master, slave = os.openpty()
    played = Played(units=8)
    with os.fdopen(slave, "r") as stream, KeyboardButtons(
            played.post, stream=stream, current=played.controls.snapshot, say=played.say,
            labels=lambda: LABELS):
        os.write(master, b"2j")
        assert played.wait(lambda: played.said[-1:] == ["u2 mid gain 0.90"]), played.said
    os.close(master)


def test_a_global_key_clears_the_last_message_and_question_mark_is_not_a_warning(terminal,
                                                                                 caplog):
    import logging

    played, type_keys = terminal
    with caplog.at_level(logging.INFO):
        type_keys("j")
        assert played.wait(lambda: played.said == ["unit 1 gain 0.90"])
        type_keys("m")
        assert played.wait(lambda: played.said[-1:] == [""] and played.commands[-1:] ==
                           [c.StepMode(1)])
        type_keys("?")
        assert played.wait(lambda: played.said[-1:] == ["keys: see the legend below"])
    assert not any(r.levelname == "WARNING" for r in caplog.records)


def test_fast_nudges_step_from_what_was_sent_until_the_controls_catch_up():
    """Five quick presses of "j" lowered gain by 0.2 instead of 0.5 while the published
    controls lagged (a newcomer's trial, with the engine in its own process); a nudge
    after ECHO_S steps from the controls again (another part may have moved them)."""
    from device.state.controls import ECHO_S

    now = [100.0]
    keys, ctl = UnitKeys(clock=lambda: now[0]), UnitControls(8)
    stale = ctl.snapshot()  # the app's copy never catches up during the burst
    sent = []
    for _ in range(5):
        sent += keys.handle("j", stale)
        now[0] += 0.01
    assert [cmd.value for cmd in sent] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    ctl.apply(c.SetGain(0, 0.25))  # moved by a fader meanwhile
    now[0] += ECHO_S
    assert keys.handle("u", ctl.snapshot()) == [c.SetGain(0, 0.35)]
