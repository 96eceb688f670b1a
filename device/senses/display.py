"""The OLED unit table: one pure renderer, many devices (luma.oled, a terminal).

Layout of the 128x64 frame in the X11 misc-fixed 5x7 font (25 columns of 5 px):

    y 0..7   header band, inverted:   "Unit  Gain Scal  Adj" and the page "1/2"
    y 8..63  eight unit rows, 7 px apart (digits are 6 px tall, so a 1-px gap
             remains): the paper's Figure 3 columns Neuron, Gain, Scale,
             Adj. value, Mute for the current page; the neuron is named by
             its label (``Bundle.unit_labels``, 5 characters: "low", "air2",
             or the unit number), and a muted unit shows MUTE as its adjusted
             value (which is 0), so label and mute share the 20 columns the
             number and the M column had
    x 103..  a 5-character status column beside the rows: mode, play state,
             xruns, the output limiter's gain reduction ("GR-6": 6 dB; blank
             below 0.5 dB), the model name over three rows, then motion
             and pitch: "REC" / "LOOP" (the motion recorder), the note
             sounding ("C4", "-" gated shut), both as "L C4"; blank as a drone
The M column shows "M" for a muted unit, "~" for one an LFO moves.

All eight units of a page stay visible at once, which a status *line* under
them would not allow (9 lines of 7 px is all 64 px hold).  ``render`` is pure;
:class:`Display` redraws in its own thread, only on change, at most
``max_fps`` frames a second, so no caller (least of all the audio thread)
ever waits for I2C.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TextIO

from PIL import Image, ImageDraw, ImageFont

from device.state.commands import UNITS_PER_PAGE
from device.state.controls import ControlsSnapshot
from device.errors import ConfigError, DeviceError
from device.sound.scheduling import name_thread

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 128, 64
FONT_PATH = Path(__file__).with_name("fonts") / "misc-fixed-5x7.pil"
CHAR_W = 5
HEADER_H = 8          # inverted band; text at y=0, a clear row under descenders
ROW_H = 7
TABLE_CHARS = 20      # "lllll g.gg s.ss a.aa" (a.aa is MUTE when muted)
LABEL_CHARS = 5       # device.models.bundle.LABEL_MAX_CHARS
PANEL_X = 103         # 100 px of table, a rule at x=101, then 5 characters
PANEL_CHARS = 5
TABLE_HEADER = "Unit  Gain Scal  Adj"
MODE_LABELS = {"original": "ORIG", "resynth": "RESYN", "generate": "GEN"}
KINDS = ("ssd1306", "sh1106", "dummy", "emulator", "terminal", "none")


@dataclass(frozen=True)
class DisplayState:
    """Everything one frame shows; built by the app from the engine's snapshot.

    ``labels``: one per unit (``EngineSnapshot.labels``); empty, or of another
    length than the units, shows unit numbers.
    """
    controls: ControlsSnapshot
    mode: str
    model: str
    playing: bool
    xruns: int
    message: str | None = None
    motion: str = "stop"   # device.state.modulation.MotionRecorder.state
    note: str = ""         # device.sound.pitch.NoteGate.label()
    labels: tuple[str, ...] = ()
    gain_reduction_db: int = 0  # the output limiter's meter, whole dB (Engine.gain_reduction_db)


def _printable(text: str) -> str:
    """``text`` in what the font has (printable ISO 8859-1); anything else becomes '?'."""
    return "".join(ch if (" " <= ch <= "~" or "\xa0" <= ch <= "\xff") else "?" for ch in text)


def _number(value: float) -> str:
    """Four characters, two decimals, like the paper's table (clipped to 0..9.99)."""
    return f"{min(max(value, 0.0), 9.99):4.2f}"


def table_lines(state: DisplayState) -> list[str]:
    """The table's text: header plus 8 rows of TABLE_CHARS (blank past the last unit)."""
    lines = [TABLE_HEADER]
    labels = state.labels if len(state.labels) == state.controls.units else ()
    for row in state.controls.rows():
        # the unit number is 1-based, as the faders are labelled; "~" marks an LFO
        name = _printable(labels[row.unit]) if labels else str(row.unit + 1)
        adjusted = "MUTE" if row.muted else _number(row.adjusted)
        lfo = "~" if row.lfo and not row.muted else " "
        lines.append(f"{name[:LABEL_CHARS]:<{LABEL_CHARS}}{lfo}{_number(row.gain)} "
                     f"{_number(row.scale)} {adjusted}")
    lines += [" " * TABLE_CHARS] * (1 + UNITS_PER_PAGE - len(lines))
    return lines


def panel_lines(state: DisplayState) -> list[str]:
    """The status column: page (header), mode, play state, xruns, gain reduction, model x4."""
    c = state.controls
    page = f"{c.page + 1}/{c.pages}"
    xruns = f"X{state.xruns}" if state.xruns < 10_000 else "X>9k"
    model = _printable(state.model[:PANEL_CHARS * 3])
    chunks = [model[i:i + PANEL_CHARS] for i in range(0, PANEL_CHARS * 3, PANEL_CHARS)]
    gr = min(state.gain_reduction_db, 99)
    lines = [page.rjust(PANEL_CHARS),
             _printable(MODE_LABELS.get(state.mode, state.mode.upper())),
             "PLAY" if state.playing else "PAUSE",
             xruns, f"GR-{gr}" if gr >= 1 else ""] + chunks + [
                 motion_label(state.motion, state.note)]
    return [s[:PANEL_CHARS].ljust(PANEL_CHARS) for s in lines]


def motion_label(motion: str, note: str) -> str:
    """The status column's last row: "REC" / "LOOP", the note, or "L C#4" for both."""
    word = {"record": "REC", "loop": "LOOP"}.get(motion, "")
    if word and note:
        return f"{word[0]} {note}"
    return word or note


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        while len(word) > width:  # a long model name must not run off the box
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return lines[:max_lines]


@cache
def font() -> ImageFont.ImageFont:
    """The shipped 5x7 bitmap font (converted from xfonts-base's PCF)."""
    return ImageFont.load(str(FONT_PATH))


def render(state: DisplayState) -> Image.Image:
    """The frame for ``state``: a mode "1" 128x64 image.  Pure."""
    img = Image.new("1", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(img)
    f = font()
    draw.rectangle((0, 0, WIDTH - 1, HEADER_H - 1), fill=255)
    table, panel = table_lines(state), panel_lines(state)
    draw.text((0, 0), table[0], font=f, fill=0)
    draw.text((PANEL_X, 0), panel[0], font=f, fill=0)
    draw.line((PANEL_X - 2, HEADER_H, PANEL_X - 2, HEIGHT - 1), fill=255)
    for i in range(UNITS_PER_PAGE):
        y = HEADER_H + i * ROW_H
        draw.text((0, y), table[i + 1], font=f, fill=255)
        draw.text((PANEL_X, y), panel[i + 1], font=f, fill=255)
    if state.message:
        lines = _wrap(_printable(state.message), 23, 4)
        top = (HEIGHT - (len(lines) * 8 + 5)) // 2
        draw.rectangle((1, top, WIDTH - 2, top + len(lines) * 8 + 4), fill=0, outline=255)
        for i, line in enumerate(lines):
            x = (WIDTH - CHAR_W * len(line)) // 2
            draw.text((x, top + 3 + 8 * i), line, font=f, fill=255)
    return img


def render_text(state: DisplayState) -> str:
    """The same frame as text, for a terminal: table | status column, then any message."""
    table, panel = table_lines(state), panel_lines(state)
    rows = [f"{t} | {p}".rstrip() for t, p in zip(table, panel, strict=True)]
    if state.message:
        rows.append(f"** {_printable(state.message)} **")
    return "\n".join(rows) + "\n"


class TerminalDevice:
    """A text "display" for a desktop with no OLED: writes :func:`render_text` to a stream."""

    width, height, mode = WIDTH, HEIGHT, "1"

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream if stream is not None else sys.stdout
        self._ansi = bool(getattr(self._stream, "isatty", lambda: False)())
        self.footer = ""  # drawn under every frame: the keys, when they are the buttons

    def display_state(self, state: DisplayState) -> None:
        text = render_text(state) + (self.footer + "\n" if self.footer else "")
        # On a terminal, redraw in place; in a log or pipe, append frames.
        self._stream.write(("\x1b[H\x1b[J" + text) if self._ansi else text + "\n")
        self._stream.flush()

    def cleanup(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<TerminalDevice stream={self._stream!r}>"


class NullDevice:
    """No display at all (``--display none``): frames are dropped."""

    width, height, mode = WIDTH, HEIGHT, "1"

    def display(self, image: Image.Image) -> None:
        pass

    def cleanup(self) -> None:
        pass


def open_display(kind: str, *, i2c_port: int = 1, i2c_address: int = 0x3C,
                 rotate: int = 0, stream: TextIO | None = None, **config: Any) -> Any:
    """Open a display device by ``kind`` (one of KINDS) with luma's defaults otherwise.

    ssd1306/sh1106 talk I2C on /dev/i2c-``i2c_port`` at ``i2c_address``; the
    emulator needs the ``emulator`` extra (luma.emulator, pygame).
    """
    if kind not in KINDS:
        raise ConfigError(f"display kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "none":
        return NullDevice()
    if kind == "terminal":
        return TerminalDevice(stream)
    if kind == "dummy":
        from luma.core.device import dummy
        return dummy(width=WIDTH, height=HEIGHT, rotate=rotate, mode="1")
    if kind == "emulator":
        try:
            from luma.emulator.device import pygame
        except ImportError as exc:
            raise DeviceError(
                f"display 'emulator' needs luma.emulator (pip install 'aesynth[emulator]'): {exc}"
            ) from exc
        return pygame(width=WIDTH, height=HEIGHT, rotate=rotate, mode="1",
                      **{"scale": 4, **config})
    from luma.core.interface.serial import i2c
    from luma.oled.device import sh1106, ssd1306
    try:
        serial = i2c(port=i2c_port, address=i2c_address)
        driver = ssd1306 if kind == "ssd1306" else sh1106
        return driver(serial, width=WIDTH, height=HEIGHT, rotate=rotate)
    except Exception as exc:  # luma raises its own DeviceNotFound*/DevicePermission errors
        raise DeviceError(
            f"{kind} display not found on I2C bus {i2c_port} (/dev/i2c-{i2c_port}) "
            f"at address {i2c_address:#04x}: {exc}"
        ) from exc


class Display:
    """Shows :class:`DisplayState` frames on ``device`` from a thread of its own.

    ``show`` only stores the newest state and wakes the thread: it never
    blocks.  The thread skips states equal to the one on screen and waits at
    least 1/``max_fps`` s between frames; a failing device is logged, not raised.
    """

    def __init__(self, device: Any, *, max_fps: float = 30.0):
        if not 0 < max_fps <= 120:
            raise ConfigError(f"display max_fps must be in (0, 120], got {max_fps!r}")
        self._device = device
        self._interval = 1.0 / max_fps
        self._pending: DisplayState | None = None
        self._wake = threading.Event()
        self._drawn = threading.Condition()
        self._closed = False
        self.frames = 0              # frames actually sent to the device
        self.errors = 0
        self.last_drawn: DisplayState | None = None
        self._thread = threading.Thread(target=self._run, name="display", daemon=True)
        self._thread.start()

    @property
    def device(self) -> Any:
        """The device drawn on (luma, :class:`TerminalDevice`, ...)."""
        return self._device

    def show(self, state: DisplayState) -> None:
        """Queue ``state`` to be drawn (the newest wins).  Returns at once."""
        self._pending = state
        self._wake.set()

    def wait_drawn(self, state: DisplayState, timeout: float = 2.0) -> bool:
        """Block until ``state`` is the one on screen (for tests and the CLI)."""
        with self._drawn:
            return self._drawn.wait_for(lambda: self.last_drawn == state, timeout)

    def _draw(self, state: DisplayState) -> None:
        if hasattr(self._device, "display_state"):
            self._device.display_state(state)
        else:
            self._device.display(render(state))

    def _run(self) -> None:
        name_thread()
        next_frame = 0.0
        while True:
            self._wake.wait()
            delay = next_frame - time.monotonic()
            if delay > 0 and not self._closed:
                time.sleep(delay)  # rate limit: later show() calls just replace the state
            if self._closed:
                return
            self._wake.clear()      # before reading, so a show() racing us wakes us again
            state = self._pending
            if state is None or state == self.last_drawn:
                continue
            try:
                self._draw(state)
            except Exception as e:
                self.errors += 1
                if self.errors in (1, 10, 100) or self.errors % 1000 == 0:
                    if isinstance(e, OSError):  # the bus (an OLED unplugged): one line
                        log.warning("display %r failed to draw (%d failures): %s",
                                    self._device, self.errors, e)
                    else:
                        log.exception("display %r failed to draw (%d failures)",
                                      self._device, self.errors)
                next_frame = time.monotonic() + 1.0  # back off; the bus may come back
                self._wake.set()  # and retry this state even if no new one comes
                continue
            next_frame = time.monotonic() + self._interval
            self.frames += 1
            with self._drawn:
                self.last_drawn = state
                self._drawn.notify_all()

    def close(self) -> None:
        """Stop the thread and blank the device.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=2.0)
        cleanup = getattr(self._device, "cleanup", None)
        if cleanup is not None:
            try:
                cleanup()
            except Exception:
                log.exception("display %r failed to clean up", self._device)

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Display {state} device={self._device!r} frames={self.frames}>"
