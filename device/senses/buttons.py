"""The box's two GPIO buttons (gpiozero): MODE and MODEL.

- MODE: each press steps the mode, original → resynth → generate → original.
- MODEL: a press steps to the next model when released; held for
  ``hold_time`` it steps to the previous one instead (and the release then
  does nothing, so one gesture never posts both, even released within a
  millisecond of ``hold_time``).

Buttons are wired from the pin to ground (gpiozero's default pull-up).
gpiozero runs the handlers on its own threads; they only post commands.

:func:`open_buttons` picks what plays the two buttons for ``aesynth play``
(``[buttons] kind``): these GPIO buttons, or keys on a terminal
(device/senses/keyboard.py), with the one fallback rule (device/state/fallbacks.py).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from device.state import commands as c
from device.errors import ConfigError, DeviceError

log = logging.getLogger("device.app")  # the player's lines, as before they moved here


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
        self._model_decided = True   # no gesture until a press
        self._model_down_at = 0.0
        self._hold_time = hold_time
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

    # gpiozero fires when_held on its hold thread and when_released on the pin's thread:
    # released within a few ms of hold_time, both can run.  Whichever takes the lock first
    # decides the gesture, once; the release decides by how long the button was down.
    def _model_pressed(self) -> None:
        with self._lock:
            self._model_decided = False
            self._model_down_at = time.monotonic()

    def _model_held_down(self) -> None:
        with self._lock:
            if self._model_decided:
                return
            self._model_decided = True
        self._post(c.StepModel(-1))

    def _model_released(self) -> None:
        with self._lock:
            if self._model_decided:
                return
            self._model_decided = True
            held = time.monotonic() - self._model_down_at >= self._hold_time
        self._post(c.StepModel(-1 if held else 1))

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


def open_buttons(cfg: Any, post: Callable[[object], None], *, pin_factory: Any = None,
                 keyboard_stream: IO[str] | None = None, current: Callable[[], Any] | None = None,
                 say: Callable[[str], None] | None = None,
                 labels: Callable[[], Sequence[str]] | None = None,
                 warn: Callable[[str], None]) -> Any:
    """The MODE/MODEL buttons the ``[buttons]`` section ``cfg`` asks for, running; or None.

    ``kind`` "gpio": :class:`ModeModelButtons` on ``mode_pin`` / ``model_pin`` (BCM),
    ``bounce_time`` / ``hold_time`` in seconds, through gpiozero's ``pin_factory`` (None:
    its default).  "keyboard": :class:`~device.senses.keyboard.KeyboardButtons` reading
    ``keyboard_stream`` (None: stdin), started; ``current``, ``say`` and ``labels`` go to
    it.  "auto": GPIO where gpiozero finds pins, else the keys when ``keyboard_stream`` is
    given or stdin is a terminal, else None.  "none": None.

    On a Raspberry Pi (:func:`on_raspberry_pi`), GPIO buttons that do not open are
    ``warn(text)`` and None: the box plays on without them.  ``post`` gets every command,
    on gpiozero's or the keyboard's thread.  The caller closes what is returned.

    Raises ConfigError naming the kind when buttons asked for by name ("gpio" off a Pi,
    "keyboard") cannot be used.
    """
    kind = cfg.kind
    if kind in ("auto", "gpio"):
        try:
            return ModeModelButtons(post, mode_pin=cfg.mode_pin, model_pin=cfg.model_pin,
                                    bounce_time=cfg.bounce_time, hold_time=cfg.hold_time,
                                    pin_factory=pin_factory)
        except Exception as e:  # no GPIO on a desktop: gpiozero finds no pin factory
            # On a Pi the box plays on without its buttons and says so (the music
            # matters more on stage); elsewhere buttons asked for by name are an error.
            if on_raspberry_pi():
                warn(f"no GPIO buttons: {e}")
                return None
            if kind == "gpio":  # asked for by name: an error naming it
                raise ConfigError(f"GPIO buttons ([buttons] kind = \"gpio\", pins "
                                  f"{cfg.mode_pin} and {cfg.model_pin}) cannot be used: {e}"
                                  ) from None
            log.info("no GPIO buttons (%s)", e)
    stream = keyboard_stream or sys.stdin
    if kind == "keyboard" or (kind == "auto" and (keyboard_stream or sys.stdin.isatty())):
        from device.senses.keyboard import KeyboardButtons

        try:
            return KeyboardButtons(post, stream=stream, current=current, say=say,
                                   labels=labels).start()
        except OSError as e:
            if kind == "keyboard":
                raise ConfigError(f"keyboard buttons ([buttons] kind = \"keyboard\") cannot "
                                  f"be used: {e}") from None
            log.warning("keyboard buttons unavailable: %s", e)
    return None
