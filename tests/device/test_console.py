"""The console on a desktop: quiet by default, -v after the command too, the keys on screen
(device/console.py; issue 15 item 13)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import time


from device.app import App
from device.cli import build_parser
from device.console import quiet_native_stderr
from device.senses.display import TerminalDevice
from tests.device.audio_rig import alsa_config
from tests.device.test_app import AESYNTH, FIXTURE, ROOT, StandInEngine, app_config

NOISE = ("ALSA lib ", "INFO: Created TensorFlow Lite", "PinFactoryFallback", "warnings.warn(")


def play(tmp_path, *extra):
    """`aesynth play ... EXTRA` as on a desktop with no card, sequencer or GPIO."""
    env = {**os.environ, "ALSA_CONFIG_PATH": str(alsa_config(tmp_path / "alsa")),
           "HOME": str(tmp_path)}
    env.pop("GPIOZERO_PIN_FACTORY", None)
    return subprocess.run([*AESYNTH, "play", "--model", str(FIXTURE), "--in", "none",
                           "--display", "none", "--duration", "2", *extra], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_play_on_a_desktop_with_nothing_is_quiet_by_default(tmp_path):
    """No card, no sequencer, no GPIO: our own few lines and no library chatter (failed on
    the old code: ~35 lines of ALSA, gpiozero and TFLite noise, an ALSA line every retry)."""
    r = play(tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert not [line for line in lines if line.startswith(NOISE)], r.stderr
    assert all(" WARNING " in line or " ERROR " in line for line in lines), r.stderr
    assert len(lines) <= 4, r.stderr


def test_minus_vv_after_the_command_shows_the_libraries_messages(tmp_path):
    r = play(tmp_path, "-vv")
    assert r.returncode == 0, r.stderr
    assert "DEBUG aesynth.native: ALSA lib " in r.stderr
    assert "DEBUG py.warnings: PinFactoryFallback" in r.stderr
    assert "first audio period written" in r.stderr  # INFO is on too


def test_verbose_counts_before_and_after_the_command():
    p = build_parser()
    for argv, total in ((["play"], 0), (["-v", "play"], 1), (["play", "-v"], 1),
                        (["-v", "play", "-v"], 2), (["render", "-vv", "--model", "m",
                                                     "--out", "o.wav"], 2)):
        a = p.parse_args(argv)
        assert a.verbose + a.verbose_after == total, argv


def test_native_stderr_is_held_and_filtered(capfd, caplog):
    with caplog.at_level(logging.DEBUG, logger="aesynth.native"):
        with quiet_native_stderr():
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
            os.write(2, b"something that matters\n")
    err = capfd.readouterr().err
    assert "something that matters" in err and "XNNPACK" not in err
    assert "XNNPACK" in caplog.text


def test_the_keys_are_drawn_under_the_terminal_table(tmp_path):
    """The key legend was a log line that the first redraw wiped (failed on the old code)."""
    master, slave = os.openpty()
    keys = os.fdopen(slave, "r")
    screen = io.StringIO()
    cfg = app_config(tmp_path, input="none").replace("buttons", kind="keyboard")
    app = App(cfg, engine_factory=StandInEngine, display_device=TerminalDevice(screen),
              keyboard_stream=keys).start()
    try:
        deadline = time.monotonic() + 10
        while app.display.frames < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        frame = screen.getvalue()
    finally:
        app.close()
        os.close(master)
        keys.close()
    assert "Unit  Gain Scal  Adj" in frame
    from device.senses.keyboard import LEGEND

    assert all(line in frame for line in LEGEND)  # every line of the legend, whole
    assert "m/M mode" in frame and "q quit" in frame
    assert all(len(line) <= 80 for line in frame.splitlines())
