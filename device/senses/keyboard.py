"""Keyboard keys for the desktop: every control of the box from a laptop.

Used when there is no GPIO (a laptop).  Reads key presses from a terminal in
cbreak mode on its own thread and posts commands; the terminal is restored on
close.  Pure parts: :func:`decode_keys` (bytes → key names: an arrow is one key,
never the ``[`` inside its escape sequence), :data:`KEYS` / :func:`command_for`
(the box's buttons), :class:`UnitKeys` (one selected unit: gain, scale, mute,
its LFO, presets) and :data:`LEGEND` (shown under the terminal table and
logged at start).

The selected unit is strip ``1``..``8`` of the page; ``←`` / ``→`` walk through
every unit (paging as they cross).  Motion without faders: ``l`` steps the
selected unit's LFO shape, ``,`` and ``.`` divide and multiply its rate by 1.25
(0.01..20 Hz), ``-`` and ``=`` (or ``+``) take its depth down and up by 0.1;
``o`` records a motion take (again: loop it), ``p`` loops the take or stops it.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Sequence
from typing import IO

from device.models.bundle import unit_name
from device.state import commands as c
from device.state.controls import (ECHO_S, GAIN_RANGE, LFO_RATE_RANGE, SCALE_RANGE,
                                   ControlsSnapshot)
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
    "L": c.ToggleLearn(), "<": c.StepLearn(-1), ">": c.StepLearn(+1),   # MIDI learn
}
# What the terminal shows under the table; each line at most 79 characters.
LEGEND = (
    "unit: 1-8 strip of page, <- -> prev/next unit, [ ] page   x mute",
    "gain: up/down or u/j +-0.1, U/J +-0.01   scale: i/k +-0.1, I/K +-0.01",
    "LFO: l shape, , . rate, - = depth   motion: o record/loop, p loop/stop",
    "preset: v then 1-8 recall, V then 1-8 save   z zero, r reset all",
    "m/M mode, n/N model, space play/pause, s stop, R record, q quit (twice)",
    "MIDI learn: L start/save, then move a control for each; < > skip; ? keys",
)
HELP = " | ".join(LEGEND)
RATE_STEP = 1.25
DEPTH_STEP = 0.1
COARSE, FINE = 0.1, 0.01
# key → (what, step): u/j and the arrows coarse, capitals fine
NUDGES = {"u": ("gain", COARSE), "j": ("gain", -COARSE), "U": ("gain", FINE),
          "J": ("gain", -FINE), "up": ("gain", COARSE), "down": ("gain", -COARSE),
          "shift-up": ("gain", FINE), "shift-down": ("gain", -FINE),
          "i": ("scale", COARSE), "k": ("scale", -COARSE), "I": ("scale", FINE),
          "K": ("scale", -FINE)}

# CSI final byte (after ESC [ and parameters) → key name; "~" keys by their number
_CSI = {"A": "up", "B": "down", "C": "right", "D": "left", "H": "home", "F": "end"}
_TILDE = {"1": "home", "2": "insert", "3": "delete", "4": "end", "5": "pgup", "6": "pgdn",
          "7": "home", "8": "end"}


def decode_keys(data: str) -> tuple[list[str], str]:
    """Key names in ``data`` (text read from a terminal) and an unfinished escape
    sequence left over (to prepend to the next read).

    A printable character is itself; ESC [ … A/B/C/D (and ESC O A…) are "up",
    "down", "right", "left" ("shift-up" … with a shift modifier), ESC [ 5 ~ and
    6 ~ "pgup" / "pgdn"; other escape sequences are swallowed whole, so none of
    their bytes ever acts as a key.  A lone ESC is "esc".
    """
    keys: list[str] = []
    i, n = 0, len(data)
    while i < n:
        ch = data[i]
        if ch != "\x1b":
            keys.append(ch)
            i += 1
            continue
        if i + 1 >= n:
            return keys, data[i:]          # maybe the start of a sequence: wait for more
        intro = data[i + 1]
        if intro == "O":                   # SS3: application-mode arrows, F1-F4
            if i + 2 >= n:
                return keys, data[i:]
            name = _CSI.get(data[i + 2])
            if name:
                keys.append(name)
            i += 3
            continue
        if intro != "[":
            keys.append("esc")
            i += 1
            continue
        j = i + 2
        while j < n and not ("@" <= data[j] <= "~"):  # parameter and intermediate bytes
            j += 1
        if j >= n:
            return keys, data[i:]
        params, final = data[i + 2:j], data[j]
        name = _TILDE.get(params.split(";")[0]) if final == "~" else _CSI.get(final)
        if name is not None:
            mods = params.split(";")[1] if ";" in params else ""
            keys.append(f"shift-{name}" if mods == "2" else name)
        i = j + 1
    return keys, ""


def command_for(key: str) -> object | None:
    return KEYS.get(key)


def _names(controls: ControlsSnapshot, labels: Sequence[str]) -> tuple[str, ...]:
    """The labels a message may use: the table's rule (device.senses.display.table_lines),
    so that a message never names a unit by another model's label during a model change."""
    return tuple(labels) if len(labels) == controls.units else ()


class LfoKeys:
    """The strip the LFO keys act on, and the commands of those keys.  Pure.

    ``labels`` (the model's unit labels, ``Bundle.unit_labels``) name the units in
    ``said`` as the unit table does: "u3 body LFO sine"; without them, "unit 3 LFO sine".
    """

    def __init__(self) -> None:
        self.strip = 0
        self.said: str | None = None      # a line for the display after the last key

    def handle(self, key: str, controls: ControlsSnapshot | None,
               labels: Sequence[str] = ()) -> list[object]:
        if key in "12345678" and len(key) == 1:
            self.strip = int(key) - 1
            return []
        if controls is None or key not in ("l", ",", ".", "-", "=", "+"):
            return []
        unit = controls.page * c.UNITS_PER_PAGE + self.strip
        if unit >= controls.units:
            return []
        rate, depth, shape = controls.lfo(unit)
        name = unit_name(unit, _names(controls, labels))
        if key == "l":
            shapes = c.LFO_SHAPES
            self.said = f"{name} LFO {shapes[(shapes.index(shape) + 1) % len(shapes)]}"
            return [c.StepLfoShape(unit, 1)]
        if key in ",.":
            rate = rate * RATE_STEP if key == "." else rate / RATE_STEP
            rate = min(max(rate, LFO_RATE_RANGE[0]), LFO_RATE_RANGE[1])
            self.said = f"{name} LFO {rate:.2f} Hz"
            return [c.SetLfoRate(unit, rate)]
        depth = depth - DEPTH_STEP if key == "-" else depth + DEPTH_STEP
        depth = round(min(max(depth, 0.0), 1.0), 6)
        self.said = f"{name} LFO depth {depth:.1f}" + (" (off)" if depth == 0 else "")
        return [c.SetLfoDepth(unit, depth)]


class UnitKeys(LfoKeys):
    """The selected unit's keys (gain, scale, mute, LFO), unit selection and presets.
    Pure: :meth:`handle` returns the commands of one key and ``said`` what to show."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._preset: str | None = None   # "v" (recall) or "V" (save): waiting for 1-8
        # The last nudge of each (gain|scale, unit) and when: keys repeat faster than the
        # published controls follow, so a nudge within ECHO_S of the last one steps from
        # what that one sent.
        self._sent: dict[tuple[str, int], tuple[float, float]] = {}
        self._clock = clock

    def handle(self, key: str, controls: ControlsSnapshot | None,
               labels: Sequence[str] = ()) -> list[object]:
        self.said = None
        prefix, self._preset = self._preset, None
        if prefix is not None:
            if len(key) == 1 and key in "12345678":
                slot = int(key)
                return [c.RecallPreset(slot) if prefix == "v" else c.SavePreset(slot)]
            self.said = "preset: cancelled"
            return []
        if key in ("v", "V"):
            self._preset = key
            self.said = "recall preset: 1-8" if key == "v" else "save preset: 1-8"
            return []
        if controls is None:
            return []
        start = controls.page * c.UNITS_PER_PAGE
        names = _names(controls, labels)
        if key in ("left", "right"):
            unit = (start + self.strip + (1 if key == "right" else -1)) % controls.units
            page = unit // c.UNITS_PER_PAGE
            self.strip = unit % c.UNITS_PER_PAGE
            self.said = unit_name(unit, names)
            return [c.PageBy(page - controls.page)] if page != controls.page else []
        if len(key) == 1 and key in "12345678":
            self.strip = int(key) - 1
            if start + self.strip < controls.units:
                self.said = unit_name(start + self.strip, names)
            return []
        unit = start + self.strip
        if unit >= controls.units:
            return []
        if key == "x":
            toggled = "unmuted" if controls.muted[unit] else "muted"
            self.said = f"{unit_name(unit, names)} {toggled}"
            return [c.ToggleMute(unit)]
        if key in NUDGES:
            what, step = NUDGES[key]
            lo, hi = GAIN_RANGE if what == "gain" else SCALE_RANGE
            now = controls.gain[unit] if what == "gain" else controls.scale[unit]
            sent, when = self._sent.get((what, unit), (now, -1e9))
            t = self._clock()
            if t - when < ECHO_S:
                now = sent
            value = round(min(max(now + step, lo), hi), 6)
            self._sent[(what, unit)] = (value, t)
            self.said = f"{unit_name(unit, names)} {what} {value:.2f}"
            return [c.SetGain(unit, value) if what == "gain" else c.SetScale(unit, value)]
        return super().handle(key, controls, labels)


class KeyboardButtons:
    """Posts the command of each key pressed on ``stream`` (a terminal)."""

    def __init__(self, post: Callable[[object], None], *, stream: IO[str] | None = None,
                 current: Callable[[], ControlsSnapshot] | None = None,
                 say: Callable[[str], None] | None = None,
                 labels: Callable[[], Sequence[str]] | None = None):
        self.post = post
        self.current = current  # the published controls, for the unit keys
        self.say = say          # a line for the display ("u3 body gain 0.70", "unit 3 ...")
        self.labels = labels    # the playing model's unit labels (EngineSnapshot.labels)
        self.lfo_keys = self.unit_keys = UnitKeys()
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
        pending = ""
        while not self._closing.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self._fd, 64)
            except OSError as e:  # the terminal went away (EIO)
                log.warning("keyboard buttons stopped: %s", e)
                return
            if not data:  # end of input (hung-up terminal): select stays ready, so stop
                log.warning("keyboard buttons stopped: end of input")
                return
            keys, pending = decode_keys(pending + data.decode(errors="replace"))
            for key in keys:
                self.key(key)

    def key(self, key: str) -> None:
        """Post the commands of one key (a name from :func:`decode_keys`)."""
        if key == "?":  # the legend is under the table; the log has it too (-v)
            log.info("keys: %s", HELP)
            if self.say is not None:
                self.say("keys: see the legend below")
            return
        cmd = None if self.unit_keys._preset is not None else command_for(key)
        if cmd is not None:
            if self.say is not None:
                self.say("")  # a message about another key must not stay up
            self.post(cmd)
            return
        controls = self.current() if self.current is not None else None
        labels = self.labels() if self.labels is not None else ()
        for cmd in self.unit_keys.handle(key, controls, labels):
            self.post(cmd)
        if self.unit_keys.said and self.say is not None:
            self.say(self.unit_keys.said)

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
