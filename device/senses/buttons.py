"""The box's two GPIO buttons (gpiozero): MODE and MODEL.

- MODE: each press steps the mode, original → resynth → generate → original.
- MODEL: a press steps to the next model when released; held for
  ``hold_time`` it steps to the previous one instead (and the release then
  does nothing, so one gesture never posts both).

Buttons are wired from the pin to ground (gpiozero's default pull-up).
gpiozero runs the handlers on its own threads; they only post commands.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from device.state import commands as c
from device.errors import ConfigError, DeviceError


class ModeModelButtons:
    """MODE and MODEL buttons on BCM pins ``mode_pin`` and ``model_pin``.

    ``bounce_time`` and ``hold_time`` are in seconds (0 bounce: no debounce);
    ``pin_factory`` is gpiozero's (None: its default, from GPIOZERO_PIN_FACTORY).
    """

    def __init__(self, post: Callable[[object], None], *, mode_pin: int | str,
                 model_pin: int | str, bounce_time: float = 0.05, hold_time: float = 1.0,
                 pin_factory: Any = None):
        if mode_pin == model_pin:
            raise ConfigError(f"buttons mode_pin and model_pin must differ, both are {mode_pin!r}")
        if not 0 <= bounce_time < hold_time:
            raise ConfigError(f"buttons bounce_time must be in 0..hold_time={hold_time} s, "
                              f"got {bounce_time}")
        if not 0 < hold_time <= 10:
            raise ConfigError(f"buttons hold_time must be in (0, 10] s, got {hold_time}")
        from gpiozero import Button

        self._post = post
        self._lock = threading.Lock()
        self._model_held = False
        bounce = bounce_time or None
        self.mode_pin, self.model_pin = mode_pin, model_pin
        self._mode = self._model = None
        try:
            self._mode = Button(mode_pin, bounce_time=bounce, hold_time=hold_time,
                                pin_factory=pin_factory)
            self._model = Button(model_pin, bounce_time=bounce, hold_time=hold_time,
                                 pin_factory=pin_factory)
        except Exception as exc:  # gpiozero: BadPinFactory, PinInvalidPin, PinInUse, ...
            self.close()
            raise DeviceError(f"GPIO buttons on MODE pin {mode_pin}, MODEL pin {model_pin}: "
                              f"{exc}") from exc
        self._mode.when_pressed = self._mode_pressed
        self._model.when_pressed = self._model_pressed
        self._model.when_held = self._model_held_down
        self._model.when_released = self._model_released

    def _mode_pressed(self) -> None:
        self._post(c.StepMode(1))

    def _model_pressed(self) -> None:
        with self._lock:
            self._model_held = False

    def _model_held_down(self) -> None:
        with self._lock:
            self._model_held = True
        self._post(c.StepModel(-1))

    def _model_released(self) -> None:
        with self._lock:
            held, self._model_held = self._model_held, False
        if not held:
            self._post(c.StepModel(1))

    def close(self) -> None:
        """Release both pins.  Idempotent."""
        for button in (self._mode, self._model):
            if button is not None:
                button.close()
        self._mode = self._model = None

    def __enter__(self) -> ModeModelButtons:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._mode is None else "open"
        return f"<ModeModelButtons {state} MODE={self.mode_pin} MODEL={self.model_pin}>"


def on_raspberry_pi(model_file: str = "/proc/device-tree/model") -> bool:
    """True on a Raspberry Pi (its device tree names the model): a Pi has the buttons, so
    failing to open them is a warning there, not a desktop's quiet fallback to keys."""
    try:
        with open(model_file, "rb") as f:
            return b"Raspberry Pi" in f.read(256)
    except OSError:
        return False
