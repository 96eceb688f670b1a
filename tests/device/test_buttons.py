"""MODE/MODEL buttons through gpiozero's MockFactory (a Pi 4B), with real timing."""

from __future__ import annotations

import threading
import time

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from device.state import commands as c
from device.senses.buttons import ModeModelButtons, open_buttons
from device.state.config import ButtonsSection
from device.errors import ConfigError, DeviceError

MODE, MODEL = 17, 27
HOLD = 0.3


class Posted:
    def __init__(self):
        self.commands: list[object] = []
        self._cond = threading.Condition()

    def __call__(self, cmd: object) -> None:
        with self._cond:
            self.commands.append(cmd)
            self._cond.notify_all()

    def wait_len(self, n: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.commands) >= n, timeout)


@pytest.fixture
def factory():
    f = MockFactory(revision="d03114")
    yield f
    f.reset()


@pytest.fixture
def buttons(factory):
    posted = Posted()
    b = ModeModelButtons(posted, mode_pin=MODE, model_pin=MODEL, bounce_time=0.01,
                         hold_time=HOLD, pin_factory=factory)
    yield b, posted, factory.pin(MODE), factory.pin(MODEL)
    b.close()


def tap(pin, seconds: float = 0.05) -> None:
    pin.drive_low()
    time.sleep(seconds)
    pin.drive_high()
    time.sleep(0.05)


def test_mode_press_steps_mode_forward(buttons):
    b, posted, mode, _ = buttons
    for _ in range(3):
        tap(mode)
    assert posted.wait_len(3)
    assert posted.commands == [c.StepMode(1)] * 3


def test_model_press_steps_forward_on_release_only(buttons):
    b, posted, _, model = buttons
    model.drive_low()
    time.sleep(0.05)
    assert posted.commands == []  # nothing until we know it was not a hold
    model.drive_high()
    assert posted.wait_len(1)
    time.sleep(0.05)
    assert posted.commands == [c.StepModel(1)]


def test_model_hold_steps_back_once_and_release_adds_nothing(buttons):
    b, posted, _, model = buttons
    model.drive_low()
    time.sleep(HOLD * 3)   # no repeat while held
    model.drive_high()
    time.sleep(0.1)
    assert posted.commands == [c.StepModel(-1)]
    tap(model)              # and the next short press is forward again
    assert posted.wait_len(2)
    assert posted.commands == [c.StepModel(-1), c.StepModel(1)]


def test_bounce_and_hold_times_reach_gpiozero(factory):
    # Debouncing itself is the pin driver's (lgpio's) job; MockPin records the setting but
    # does not filter chatter, so what we can check here is that the setting arrives.
    with ModeModelButtons(Posted(), mode_pin=MODE, model_pin=MODEL, bounce_time=0.2,
                          hold_time=1.5, pin_factory=factory) as b:
        assert factory.pin(MODE).bounce == 0.2 and factory.pin(MODEL).bounce == 0.2
        assert b._model.hold_time == 1.5 and b._mode.hold_time == 1.5
    with ModeModelButtons(Posted(), mode_pin=MODE, model_pin=MODEL, bounce_time=0,
                          pin_factory=factory):
        assert factory.pin(MODE).bounce is None


def test_pins_are_released_on_close(factory):
    posted = Posted()
    b = ModeModelButtons(posted, mode_pin=MODE, model_pin=MODEL, pin_factory=factory)
    b.close()
    b.close()
    assert "closed" in repr(b)
    again = ModeModelButtons(posted, mode_pin=MODE, model_pin=MODEL, pin_factory=factory)
    again.close()


@pytest.mark.parametrize("kwargs, match", [
    ({"mode_pin": 5, "model_pin": 5}, "must differ"),
    ({"mode_pin": 5, "model_pin": 6, "hold_time": 0}, "bounce_time"),
    ({"mode_pin": 5, "model_pin": 6, "bounce_time": -1}, "bounce_time"),
    ({"mode_pin": 5, "model_pin": 6, "bounce_time": 0.01, "hold_time": 30}, "hold_time"),
])
def test_bad_settings_name_the_setting(factory, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ModeModelButtons(Posted(), pin_factory=factory, **kwargs)


def test_a_pin_the_board_lacks_is_a_device_error(factory):
    with pytest.raises(DeviceError, match="MODEL pin 99"):
        ModeModelButtons(Posted(), mode_pin=MODE, model_pin=99, pin_factory=factory)
    # the MODE pin taken before the failure was released again
    ModeModelButtons(Posted(), mode_pin=MODE, model_pin=MODEL, pin_factory=factory).close()


def test_default_factory_from_environment(monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    monkeypatch.setattr(Device, "pin_factory", None)
    posted = Posted()
    b = ModeModelButtons(posted, mode_pin=MODE, model_pin=MODEL, bounce_time=0.01)
    try:
        tap(Device.pin_factory.pin(MODE))
        assert posted.wait_len(1)
    finally:
        b.close()
        Device.pin_factory.reset()
        Device.pin_factory.close()


def test_model_released_as_the_hold_fires_is_one_gesture(buttons):
    """gpiozero's hold thread calls when_held while the release is being handled (a
    release within ms of hold_time): before, that posted both next and previous."""
    b, posted, _, model = buttons
    released = threading.Event()
    on_held, on_released = b._model.when_held, b._model.when_released

    def held_late() -> None:  # the hold thread, overtaken by the release
        released.wait(5.0)
        on_held()

    def release() -> None:
        on_released()
        released.set()

    b._model.when_held, b._model.when_released = held_late, release
    model.drive_low()
    time.sleep(HOLD + 0.1)   # hold_time has passed: the hold thread waits in held_late
    model.drive_high()
    assert posted.wait_len(1)
    time.sleep(0.2)          # held_late has run by now
    assert posted.commands == [c.StepModel(-1)]
    tap(model)               # the next gesture is decided afresh
    assert posted.wait_len(2)
    assert posted.commands == [c.StepModel(-1), c.StepModel(1)]


def test_open_buttons_plays_the_pins_asked_for_or_names_them(factory, monkeypatch):
    """``[buttons] kind = "gpio"``: the buttons on its pins, or off a Pi a ConfigError
    naming the kind and the pins (the app's exit 2)."""
    monkeypatch.setattr("device.senses.buttons.on_raspberry_pi", lambda: False)
    cfg = ButtonsSection(kind="gpio", mode_pin=MODE, model_pin=MODEL, bounce_time=0.01,
                         hold_time=HOLD)
    posted, warned = Posted(), []
    b = open_buttons(cfg, posted, pin_factory=factory, warn=warned.append)
    try:
        assert isinstance(b, ModeModelButtons) and (b.mode_pin, b.model_pin) == (MODE, MODEL)
        tap(factory.pin(MODE))
        assert posted.wait_len(1) and posted.commands == [c.StepMode(1)]
        with pytest.raises(ConfigError, match=r'kind = "gpio", pins 17 and 27\) cannot be '
                                              r"used: GPIO buttons on MODE pin 17"):
            open_buttons(cfg, posted, pin_factory=factory, warn=warned.append)  # pins taken
    finally:
        b.close()
    assert warned == []
