"""The OLED table: frames against reference PNGs (a person looked at them), the real
ssd1306/sh1106 drivers against a recording serial interface, luma's dummy device,
and the Display thread's redraw rules.

Regenerate the references after an intended layout change with
``AESYNTH_UPDATE_REFERENCE=1 pytest tests/device/test_display.py`` and look at them.
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from luma.core.device import dummy
from luma.oled.device import sh1106, ssd1306
from PIL import Image

from device.state.controls import ControlsSnapshot
from device.senses.display import (
    HEIGHT,
    WIDTH,
    Display,
    DisplayState,
    NullDevice,
    TerminalDevice,
    motion_label,
    open_display,
    render,
    render_text,
)
from device.errors import ConfigError, DeviceError

REFERENCE = Path(__file__).parent / "reference"


def snapshot(units: int, page: int, gain, scale, muted) -> ControlsSnapshot:
    pages = -(-units // 8)
    return ControlsSnapshot(units, page, pages, tuple(gain), tuple(scale), tuple(muted))


def paper_figure3() -> DisplayState:
    """The values of the paper's Figure 3 (its neurons 24..31: our page 4 of 32 units)."""
    gain = [1.0] * 32
    scale = [1.0] * 32
    muted = [False] * 32
    fig = [(1.0, 2.0, False), (1.0, 1.0, True), (0.26772, 1.0, False), (1.0, 1.59055, False),
           (1.0, 1.96850, False), (1.0, 0.51969, False), (0.68504, 0.69291, True),
           (0.78740, 1.0, False)]
    for i, (g, s, m) in enumerate(fig):
        gain[24 + i], scale[24 + i], muted[24 + i] = g, s, m
    return DisplayState(snapshot(32, 3, gain, scale, muted), "resynth", "default", True, 0)


def short_page_with_message() -> DisplayState:
    """10 units: page 2 holds two; a confirm message over the table."""
    return DisplayState(snapshot(10, 1, [0.5] * 10, [1.5] * 10, [False] * 9 + [True]),
                        "generate", "pushover-techno-v2", False, 123,
                        message="Shut down? Press Cycle again to confirm",
                        labels=("low", "body", "mid", "air", "pres", "sub", "low2", "nse2",
                                "noise", "level"))


def original_paused_xruns() -> DisplayState:
    return DisplayState(snapshot(8, 0, [i / 7 for i in range(8)], [2 - i / 4 for i in range(8)],
                                 [i % 3 == 0 for i in range(8)]),
                        "original", "a-very-long-model-name-indeed", False, 123456,
                        labels=("low", "air", "body", "mid", "noise", "pres", "sub", "bod10"))


def generate_lfo_loop_note() -> DisplayState:
    """LFOs on units 2 and 5 (5 also muted: M wins), a looping motion take, note C#4."""
    depth = [0.0, 0.7, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    snap = ControlsSnapshot(8, 0, 1, (1.0,) * 8, (1.0,) * 8, (False,) * 4 + (True,) + (False,) * 3,
                            (1.0,) * 8, tuple(depth), ("sine",) * 8)
    return DisplayState(snap, "generate", "default", True, 0, motion="loop", note="C#4")


def generate_limiting() -> DisplayState:
    """Generate mode with every knob up: the output limiter takes 7 dB off."""
    return DisplayState(snapshot(8, 0, [1.0] * 8, [2.0] * 8, [False] * 8),
                        "generate", "default", True, 0, gain_reduction_db=7)


STATES = {"paper_figure3": paper_figure3, "short_page_message": short_page_with_message,
          "original_paused_xruns": original_paused_xruns,
          "generate_lfo_loop_note": generate_lfo_loop_note,
          "generate_limiting": generate_limiting}

def test_lfo_motion_and_note_in_the_text():
    text = render_text(generate_lfo_loop_note()).splitlines()
    # no labels in this state: unit numbers; "~" after the name marks the LFO
    assert text[2].startswith("2    ~1.00 1.00 1.00")
    assert text[5].startswith("5     1.00 1.00 MUTE")
    assert text[8].split("|")[1].strip() == "L C#4"
    assert motion_label("record", "") == "REC" and motion_label("stop", "-") == "-"


def lit(img: Image.Image) -> bytes:
    """One byte per pixel, 1 where lit: mode "1" may store a lit pixel as 1 or 255."""
    return bytes(1 if v else 0 for v in img.convert("L").tobytes())


def same_image(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and lit(a) == lit(b)


@pytest.mark.parametrize("name", sorted(STATES))
def test_frame_matches_reference_png(name, tmp_path):
    img = render(STATES[name]())
    assert img.mode == "1" and img.size == (WIDTH, HEIGHT)
    ref = REFERENCE / f"{name}.png"
    if os.environ.get("AESYNTH_UPDATE_REFERENCE"):
        img.save(ref)
    with Image.open(ref) as expected:
        if not same_image(img, expected):
            img.save(tmp_path / f"{name}.png")
            pytest.fail(f"{name} differs from {ref}; actual frame in {tmp_path}")


def test_paper_table_values_and_status_are_in_the_text():
    """No labels (the paper's figure, an old bundle): units by number, 1-based."""
    text = render_text(paper_figure3()).splitlines()
    assert text[0].startswith("Unit  Gain Scal  Adj |") and text[0].endswith("4/4")
    assert text[1].startswith("25    1.00 2.00 2.00 |")
    assert text[2].startswith("26    1.00 1.00 MUTE |")
    assert text[3].startswith("27    0.27 1.00 0.27 |")
    assert text[7].startswith("31    0.69 0.69 MUTE |")
    assert [line.split("|")[1].strip() for line in text[1:4]] == ["RESYN", "PLAY", "X0"]
    assert len(text) == 9  # header + 8 units: all of the page visible


def test_short_page_leaves_rows_blank_and_shows_the_message():
    text = render_text(short_page_with_message()).splitlines()
    assert text[1].startswith("noise 0.50 1.50 0.75 |")  # the labels of units 9 and 10
    assert text[2].startswith("level 0.50 1.50 MUTE |")
    assert text[3].split("|")[0].strip() == ""
    assert text[-1] == "** Shut down? Press Cycle again to confirm **"


def test_labels_name_the_units_of_the_page():
    text = render_text(original_paused_xruns()).splitlines()
    assert [line[:5] for line in text[1:]] == ["low  ", "air  ", "body ", "mid  ", "noise",
                                               "pres ", "sub  ", "bod10"]
    assert text[1].startswith("low   0.00 2.00 MUTE |")  # unit 1 muted
    assert text[2].startswith("air   0.14 1.75 0.25 |")


def test_labels_of_the_wrong_count_or_odd_characters():
    s = original_paused_xruns()
    wrong = DisplayState(s.controls, s.mode, s.model, s.playing, s.xruns, labels=("a", "b"))
    assert render_text(wrong).splitlines()[2].startswith("2     0.14")  # numbers instead
    odd = DisplayState(s.controls, s.mode, s.model, s.playing, s.xruns,
                       labels=("toolong", "\x1b[2J", "\u00e9", "d", "e", "f", "g", "h"))
    lines = render_text(odd).splitlines()
    assert lines[1].startswith("toolo ") and lines[2].startswith("?[2J ")
    assert lines[3].startswith("\u00e9     ")  # in the font (ISO 8859-1)
    assert all(len(line.split(" |")[0]) == 20 for line in lines)


def test_gain_reduction_shows_in_the_status_column():
    """Blank below 1 dB (the frames above, unchanged); "GR-7" for 7 dB; capped at 99."""
    rows = [line.split("|")[1].strip() for line in render_text(generate_limiting()).splitlines()]
    assert rows[1:6] == ["GEN", "PLAY", "X0", "GR-7", "defau"]
    s = generate_limiting()
    quiet = DisplayState(s.controls, s.mode, s.model, s.playing, s.xruns)
    assert render_text(quiet).splitlines()[4].split("|")[1].strip() == ""
    assert not same_image(render(s), render(quiet))
    loud = DisplayState(s.controls, s.mode, s.model, s.playing, s.xruns, gain_reduction_db=140)
    assert "GR-99" in render_text(loud)


def test_message_changes_the_frame():
    s = original_paused_xruns()
    with_msg = DisplayState(s.controls, s.mode, s.model, s.playing, s.xruns, message="saved")
    assert not same_image(render(s), render(with_msg))


class RecordingSerial:
    """luma's serial interface contract (command, data, cleanup), recorded."""

    def __init__(self):
        self.commands: list[tuple[int, ...]] = []
        self.data_calls: list[bytes] = []

    def command(self, *cmd: int) -> None:
        self.commands.append(cmd)

    def data(self, data) -> None:
        self.data_calls.append(bytes(data))

    def cleanup(self) -> None:
        pass


def decode_pages(data: bytes, width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """SSD1306/SH1106 page layout: byte x of page p holds pixels (x, 8p..8p+7), LSB on top."""
    img = Image.new("1", (width, height))
    for p in range(height // 8):
        for x in range(width):
            byte = data[p * width + x]
            for bit in range(8):
                if byte >> bit & 1:
                    img.putpixel((x, p * 8 + bit), 1)
    return img


@pytest.mark.parametrize("driver", [ssd1306, sh1106])
def test_real_driver_sends_1024_bytes_a_frame_that_decode_to_the_render(driver):
    serial = RecordingSerial()
    dev = driver(serial_interface=serial, width=WIDTH, height=HEIGHT)
    serial.data_calls.clear()
    state = paper_figure3()
    with Display(dev, max_fps=60) as disp:
        disp.show(state)
        assert disp.wait_drawn(state, timeout=10)
        frame = b"".join(serial.data_calls)
        assert len(frame) == 1024
        assert same_image(decode_pages(frame), render(state))
        disp.show(state)  # unchanged: nothing more goes over the bus
        time.sleep(0.1)
        assert len(b"".join(serial.data_calls)) == 1024
        other = short_page_with_message()
        disp.show(other)
        assert disp.wait_drawn(other, timeout=10)
        assert len(b"".join(serial.data_calls)) == 2048
        assert same_image(decode_pages(b"".join(serial.data_calls)[1024:]), render(other))


def test_luma_dummy_device_shows_the_reference_frame():
    dev = dummy(width=WIDTH, height=HEIGHT, mode="1")
    state = paper_figure3()
    with Display(dev) as disp:
        disp.show(state)
        assert disp.wait_drawn(state, timeout=10)
        with Image.open(REFERENCE / "paper_figure3.png") as ref:
            assert same_image(dev.image, ref)


def varied_states(n: int) -> list[DisplayState]:
    base = paper_figure3()
    return [DisplayState(base.controls, base.mode, base.model, base.playing, i)
            for i in range(n)]


class CountingDevice:
    width, height, mode = WIDTH, HEIGHT, "1"

    def __init__(self):
        self.frames: list[Image.Image] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def display(self, image: Image.Image) -> None:
        self.gate.wait()
        if self.fail:
            raise OSError("I2C bus error")
        self.frames.append(image)

    def cleanup(self) -> None:
        self.cleaned = True


def test_redraw_only_on_change_and_at_most_max_fps():
    dev = CountingDevice()
    fps = 10
    with Display(dev, max_fps=fps) as disp:
        states = varied_states(200)
        t0 = time.monotonic()
        for s in states:
            disp.show(s)
        elapsed = time.monotonic() - t0
        assert disp.wait_drawn(states[-1], timeout=10)  # the newest state always lands
        # one frame at once, then at most one per 1/fps while the states kept coming
        assert disp.frames <= 2 + elapsed * fps
        n = disp.frames
        for _ in range(20):
            disp.show(states[-1])
        time.sleep(3 / fps)
        assert disp.frames == n
    assert dev.cleaned


def test_show_never_waits_for_a_slow_device():
    dev = CountingDevice()
    dev.gate.clear()  # the bus hangs
    disp = Display(dev)
    states = varied_states(50)
    for s in states:
        disp.show(s)  # would hang here if show() drew
    assert dev.frames == []
    dev.gate.set()
    assert disp.wait_drawn(states[-1], timeout=10)
    disp.close()


def test_a_failing_device_is_logged_and_retried(caplog):
    dev = CountingDevice()
    dev.fail = True
    with Display(dev, max_fps=30) as disp:
        a, b = varied_states(2)
        disp.show(a)
        deadline = time.monotonic() + 10
        while disp.errors == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert disp.errors >= 1
        assert "I2C bus error" in caplog.text
        dev.fail = False  # the bus is back: the same state is drawn without a new show()
        assert disp.wait_drawn(a, timeout=10)
        disp.show(b)
        assert disp.wait_drawn(b, timeout=10)


def test_terminal_device_writes_the_text_frame():
    out = io.StringIO()
    state = paper_figure3()
    with Display(open_display("terminal", stream=out)) as disp:
        disp.show(state)
        assert disp.wait_drawn(state, timeout=10)
    assert out.getvalue() == render_text(state) + "\n"
    assert "\x1b[" not in out.getvalue()  # not a tty: no escape codes in logs


def test_open_display_kinds():
    assert isinstance(open_display("none"), NullDevice)
    assert isinstance(open_display("terminal"), TerminalDevice)
    assert open_display("dummy").size == (WIDTH, HEIGHT)
    with pytest.raises(ConfigError, match="ssd1306, sh1106"):
        open_display("vga")


@pytest.mark.skipif(Path("/dev/i2c-7").exists(), reason="a real I2C bus 7 is present")
def test_missing_i2c_bus_names_bus_and_address():
    with pytest.raises(DeviceError, match=r"bus 7 \(/dev/i2c-7\) at address 0x3d"):
        open_display("sh1106", i2c_port=7, i2c_address=0x3D)


def test_emulator_without_its_extra_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "luma.emulator", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "luma.emulator.device", None)
    with pytest.raises(DeviceError, match=r"aesynth\[emulator\]"):
        open_display("emulator")


def test_bad_max_fps():
    with pytest.raises(ConfigError, match="max_fps"):
        Display(NullDevice(), max_fps=0)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(units=st.integers(1, 1000), data=st.data(),
       model=st.text(max_size=60), message=st.none() | st.text(max_size=200),
       label=st.text(max_size=8),
       xruns=st.integers(0, 10**9), mode=st.sampled_from(["original", "resynth", "generate",
                                                          "weird-mode"]))
def test_any_state_renders(units, data, model, message, label, xruns, mode):
    pages = -(-units // 8)
    page = data.draw(st.integers(0, pages - 1))
    floats = st.floats(0, 2, allow_nan=False)
    gain = data.draw(st.lists(floats, min_size=units, max_size=units))
    scale = data.draw(st.lists(floats, min_size=units, max_size=units))
    muted = data.draw(st.lists(st.booleans(), min_size=units, max_size=units))
    labels = tuple(f"{label}{u}"[-6:] for u in range(units)) if label else ()
    state = DisplayState(snapshot(units, page, gain, scale, muted), mode, model,
                         data.draw(st.booleans()), xruns, message, labels)
    img = render(state)
    assert img.size == (WIDTH, HEIGHT) and img.mode == "1"
    lines = render_text(state).splitlines()
    assert len(lines) == (10 if message else 9)
    assert all(line[20:23].rstrip() == " |" for line in lines[:9])


# -- the SH1106's column offset (a config key: some modules start at column 0, most at 2) -------
def _page_address_commands(serial: RecordingSerial) -> list[tuple[int, ...]]:
    return [cmd for cmd in serial.commands if cmd and 0xB0 <= cmd[0] <= 0xB7]


@pytest.mark.parametrize("offset", [0, 2, 4])
def test_sh1106_column_offset_reaches_the_bus(offset):
    serial = RecordingSerial()
    dev = open_display("sh1106", column_offset=offset, serial_interface=serial)
    serial.commands.clear()
    serial.data_calls.clear()
    dev.display(render(paper_figure3()))
    pages = _page_address_commands(serial)
    assert len(pages) == HEIGHT // 8
    # page address, column low nibble, column high nibble (0x10 | high)
    assert {cmd[1:] for cmd in pages} == {(offset & 0x0F, 0x10 | offset >> 4)}
    assert same_image(decode_pages(b"".join(serial.data_calls)), render(paper_figure3()))


@pytest.mark.parametrize("offset", [-1, 5, 2.0, True])
def test_column_offset_out_of_range_names_the_key(offset):
    with pytest.raises(ConfigError, match=r"column_offset must be an int in 0..4"):
        open_display("sh1106", column_offset=offset, serial_interface=RecordingSerial())
