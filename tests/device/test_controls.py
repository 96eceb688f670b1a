"""Unit controls (device/state/controls.py): the paper's gain × scale × mute, pages of 8."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.state import commands as c
from device.state.controls import UnitControls
from device.errors import ControlError


def adjusted(u: UnitControls) -> np.ndarray:
    return u.adjusted(np.empty(u.units))


def test_adjusted_value_is_gain_times_scale_unless_muted():
    u = UnitControls(8)
    u.apply(c.SetGain(2, 0.5))
    u.apply(c.SetScale(2, 1.5))
    u.apply(c.SetScale(3, 2.0))
    u.apply(c.ToggleMute(3))
    a = adjusted(u)
    assert a[2] == pytest.approx(0.75)
    assert a[3] == 0.0
    u.apply(c.ToggleMute(3))
    assert adjusted(u)[3] == 2.0


def test_set_zeroes_every_unit_and_record_resets():
    u = UnitControls(12)
    u.apply(c.SetScale(1, 0.2))
    u.apply(c.SetMute(5, True))
    u.apply(c.ZeroAll())
    assert not adjusted(u).any()
    u.apply(c.ResetAll())
    np.testing.assert_array_equal(adjusted(u), np.ones(12))


def test_pages_wrap_and_the_short_last_page_has_fewer_rows():
    """The seed indexed past the end when units were not a multiple of 8."""
    u = UnitControls(20)
    assert u.pages == 3
    u.apply(c.PageBy(-1))
    assert u.page == 2
    rows = u.snapshot().rows()
    assert [r.unit for r in rows] == [16, 17, 18, 19]
    u.apply(c.PageBy(1))
    assert u.page == 0 and len(u.snapshot().rows()) == 8


@pytest.mark.parametrize("cmd, words", [
    (c.SetGain(8, 0.5), "unit must be in 0..7, got 8"),
    (c.SetGain(0, 1.5), "gain must be in 0.0..1.0, got 1.5"),
    (c.SetScale(0, -0.1), "scale must be in 0.0..2.0, got -0.1"),
    (c.ToggleMute(-1), "unit must be in 0..7, got -1"),
])
def test_out_of_range_commands_are_refused_by_name(cmd, words):
    u = UnitControls(8)
    with pytest.raises(ControlError, match=words.replace(".", r"\.")):
        u.apply(cmd)
    np.testing.assert_array_equal(adjusted(u), np.ones(8))


def test_commands_for_others_are_left_alone():
    u = UnitControls(8)
    assert u.apply(c.PlayPause()) is False
    assert u.apply(c.SetMode("generate")) is False


def test_snapshot_is_immutable_and_restorable():
    u = UnitControls(9)
    u.apply(c.SetGain(8, 0.25))
    u.apply(c.PageBy(1))
    snap = u.snapshot()
    u.apply(c.ResetAll())
    assert snap.gain[8] == 0.25
    v = UnitControls(9)
    v.restore(snap)
    assert v.gain[8] == 0.25 and v.page == 1
    with pytest.raises(ControlError, match="preset is for 9 units, this model has 8"):
        UnitControls(8).restore(snap)


@given(st.lists(st.tuples(st.sampled_from(["gain", "scale", "mute", "page", "zero", "reset"]),
                          st.integers(0, 15), st.floats(0, 2)), max_size=60))
def test_adjusted_always_matches_the_definition(ops):
    u = UnitControls(16)
    for op, unit, value in ops:
        cmd = {"gain": c.SetGain(unit, min(value, 1.0)), "scale": c.SetScale(unit, value),
               "mute": c.ToggleMute(unit), "page": c.PageBy(unit - 7), "zero": c.ZeroAll(),
               "reset": c.ResetAll()}[op]
        u.apply(cmd)
    expect = u.gain * u.scale * ~u.muted
    np.testing.assert_array_equal(adjusted(u), expect)
    assert 0 <= u.page < u.pages
