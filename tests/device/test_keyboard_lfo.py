"""The desktop keyboard's motion keys (pure: device.senses.keyboard.LfoKeys, the key map)."""

from __future__ import annotations

import pytest

from device.state import commands as c
from device.state.controls import UnitControls
from device.senses.keyboard import LfoKeys, command_for


def test_lfo_keys_act_on_the_picked_strip_of_the_page():
    controls = UnitControls(16)
    keys = LfoKeys()
    controls.apply(c.PageBy(1))

    def press(key):
        cmds = keys.handle(key, controls.snapshot())
        for cmd in cmds:
            controls.apply(cmd)
        return cmds

    assert press("3") == []
    assert press("=") == [c.SetLfoDepth(10, 0.1)]
    assert press("+") == [c.SetLfoDepth(10, 0.2)]
    assert press("-") == [c.SetLfoDepth(10, 0.1)]
    assert press(".") == [c.SetLfoRate(10, pytest.approx(1.25))]
    press(",")
    assert press(",") == [c.SetLfoRate(10, pytest.approx(0.8))]
    assert press("l") == [c.StepLfoShape(10, 1)] and controls.lfo_shape[10] == 1
    for _ in range(50):
        press("-")
        press(",")
    assert controls.lfo_depth[10] == 0.0 and controls.lfo_rate[10] == 0.01  # clamped
    assert keys.handle("x", controls.snapshot()) == []
    assert command_for("o") == c.ToggleMotionRecord() and command_for("p") == c.ToggleMotionLoop()
