"""Keyboard keys for the desktop: the box's MODE/MODEL buttons and a few transport keys.

Used when there is no GPIO (a laptop).  Reads single key presses from a
terminal in cbreak mode on its own thread and posts commands; the terminal is
restored on close.  The key map is data, and pure (``command_for``).

Motion without faders (:class:`LfoKeys`, pure): ``1``..``8`` pick the strip
(the page's unit n) that the LFO keys change; ``l`` steps its shape, ``,``
and ``.`` divide and multiply its rate by 1.25 (0.01..20 Hz), ``-`` and
``=`` (or ``+``) take its depth down and up by 0.1; ``o`` records a motion
take (again: loop it), ``p`` loops the take or stops it.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import termios
import threading
import tty
from collections.abc import Callable
from typing import IO

from device.state import commands as c
from device.state.controls import LFO_RATE_RANGE, ControlsSnapshot
from device.sound.scheduling import name_thread

log = logging.getLogger(__name__)

KEYS: dict[str, object] = {
    "m": c.StepMode(+1), "M": c.StepMode(-1),      # the MODE button
    "n": c.StepModel(+1), "N": c.StepModel(-1),    # the MODEL button (held: back)
    " ": c.PlayPause(), "s": c.Stop(),
    "]": c.PageBy(+1), "[": c.PageBy(-1),
    "z": c.ZeroAll(), "r": c.ResetAll(),
    "R": c.ToggleRecording(),
    "q": c.Shutdown(),
    "o": c.ToggleMotionRecord(), "p": c.ToggleMotionLoop(),
}
HELP = ("keys: m/M mode, n/N model, space play/pause, s stop, [ ] page, z zero all, "
        "r reset all, R record, q quit; LFO of strip 1-8: l shape, , . rate, - = depth; "
        "o motion record/loop, p loop/stop")
RATE_STEP = 1.25
DEPTH_STEP = 0.1


def command_for(key: str) -> object | None:
    return KEYS.get(key)


class LfoKeys:
    """The strip the LFO keys act on, and the commands of those keys.  Pure."""

    def __init__(self) -> None:
        self.strip = 0

    def handle(self, key: str, controls: ControlsSnapshot | None) -> list[object]:
        if key in "12345678" and len(key) == 1:
            self.strip = int(key) - 1
            return []
        if controls is None or key not in ("l", ",", ".", "-", "=", "+"):
            return []
        unit = controls.page * c.UNITS_PER_PAGE + self.strip
        if unit >= controls.units:
            return []
        rate, depth, _ = controls.lfo(unit)
        if key == "l":
            return [c.StepLfoShape(unit, 1)]
        if key in ",.":
            rate = rate * RATE_STEP if key == "." else rate / RATE_STEP
            return [c.SetLfoRate(unit, min(max(rate, LFO_RATE_RANGE[0]), LFO_RATE_RANGE[1]))]
        depth = depth - DEPTH_STEP if key == "-" else depth + DEPTH_STEP
        return [c.SetLfoDepth(unit, round(min(max(depth, 0.0), 1.0), 6))]


class KeyboardButtons:
    """Posts the command of each key pressed on ``stream`` (a terminal)."""

    def __init__(self, post: Callable[[object], None], *, stream: IO[str] | None = None,
                 current: Callable[[], ControlsSnapshot] | None = None):
        self.post = post
        self.current = current  # the published controls, for the LFO keys
        self.lfo_keys = LfoKeys()
        self.stream = stream or sys.stdin
        self._fd = self.stream.fileno()
        if not os.isatty(self._fd):
            raise OSError(f"keyboard buttons need a terminal; {self.stream!r} is not one")
        self._saved = termios.tcgetattr(self._fd)
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> KeyboardButtons:
        tty.setcbreak(self._fd)
        self._thread = threading.Thread(target=self._run, name="keyboard", daemon=True)
        self._thread.start()
        log.info("keyboard buttons: %s", HELP)  # and on screen (App._show_keys)
        return self

    def _run(self) -> None:
        name_thread()
        while not self._closing.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self._fd, 1)
            except OSError as e:  # the terminal went away (EIO)
                log.warning("keyboard buttons stopped: %s", e)
                return
            if not data:  # end of input (hung-up terminal): select stays ready, so stop
                log.warning("keyboard buttons stopped: end of input")
                return
            key = data.decode(errors="replace")
            cmd = command_for(key)
            if cmd is not None:
                self.post(cmd)
                continue
            controls = self.current() if self.current is not None else None
            for cmd in self.lfo_keys.handle(key, controls):
                self.post(cmd)

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        if self._thread is not None:
            self._thread.join(1.0)
        try:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
        except termios.error as e:  # a hung-up terminal has nothing left to restore
            log.debug("terminal not restored: %s", e)

    def __enter__(self) -> KeyboardButtons:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<KeyboardButtons fd={self._fd} {'closed' if self._closing.is_set() else 'open'}>"
