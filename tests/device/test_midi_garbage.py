"""MidiController.handle with whatever a broken cable or a confused device sends:
random bytes through mido's parser, Korg-looking SysEx, extreme values.  No ports."""

from __future__ import annotations

import mido
from hypothesis import given, settings
from hypothesis import strategies as st

from device.state.controls import UnitControls
from device.senses.midi import MidiController

KORG_HEADER = bytes([0xF0, 0x42, 0x40, 0x00, 0x01, 0x13, 0x00])


def controller(units: int) -> tuple[MidiController, UnitControls, list[object]]:
    controls = UnitControls(units)
    posted: list[object] = []

    def post(cmd: object) -> None:
        posted.append(cmd)
        controls.apply(cmd)  # raises ControlError if a command were out of range

    return MidiController(post, controls.snapshot), controls, posted


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.binary(max_size=600), st.integers(1, 64), st.booleans())
def test_random_bytes_never_crash_and_commands_stay_in_range(raw, units, korg):
    ctl, controls, posted = controller(units)
    if korg:  # make SysEx that claims to be the nanoKONTROL2's
        raw = KORG_HEADER + bytes(b & 0x7F for b in raw) + b"\xf7"
    parser = mido.Parser()
    parser.feed(raw)
    for msg in parser:
        ctl.handle(msg)
    assert all(0.0 <= g <= 1.0 for g in controls.gain)
    assert all(0.0 <= s <= 2.0 for s in controls.scale)
    assert 0 <= controls.page < controls.pages
    ctl.close()


def test_extreme_values_on_every_cc():
    ctl, controls, posted = controller(3)
    for channel in (0, 15):
        for control in range(128):
            for value in (0, 127, 64, 127, 0):
                ctl.handle(mido.Message("control_change", channel=channel, control=control,
                                        value=value))
    assert posted  # the map did act on channel 1
    assert all(0.0 <= g <= 1.0 for g in controls.gain)
    ctl.close()
