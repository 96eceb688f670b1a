"""What was asked for by name works or is an error naming it; only the unnamed default falls
back, and says so (device/state/fallbacks.py).  Audited: playback and capture devices, the
display, the buttons, the MIDI mapping."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from device.app import EXIT_AUDIO, EXIT_USAGE, App, StartError
from device.state.fallbacks import named_device
from tests.device.audio_rig import alsa_config
from tests.device.test_app import AESYNTH, FIXTURE, ROOT, StandInEngine, app_config


@pytest.fixture
def no_card(tmp_path, monkeypatch):
    """ALSA as on a machine with no sound card: 'default' (hw:0) does not open."""
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(alsa_config(tmp_path / "alsa")))


def start_error(cfg, **kw) -> StartError:
    with pytest.raises(StartError) as e:
        App(cfg, engine_factory=StandInEngine, **kw).start()
    return e.value


def test_a_named_output_device_that_cannot_open_is_an_error(tmp_path, no_card):
    """`--output-device hw:9,0` (failed on the old code: played into the null device, exit 0)."""
    cfg = app_config(tmp_path, input="none").replace("audio", playback_device="hw:9,0")
    e = start_error(cfg)
    assert e.code == EXIT_AUDIO and "'hw:9,0'" in str(e)


def test_the_cli_names_the_device_and_exits_4(tmp_path):
    env = {**os.environ, "ALSA_CONFIG_PATH": str(alsa_config(tmp_path / "alsa"))}
    r = subprocess.run([*AESYNTH, "play", "--model", str(FIXTURE), "--in", "none",
                        "--output-device", "hw:9,0", "--no-midi", "--display", "none",
                        "--duration", "1"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == EXIT_AUDIO, r.stderr
    errors = [line for line in r.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "hw:9,0" in errors[0], r.stderr
    assert "null device" not in r.stderr


def test_a_named_capture_device_that_cannot_open_is_an_error(tmp_path, no_card):
    cfg = app_config(tmp_path, input="line").replace("audio", capture_device="hw:9,0")
    e = start_error(cfg)
    assert e.code == EXIT_AUDIO and "'hw:9,0'" in str(e)


def test_only_the_default_device_falls_back_and_the_display_says_so(tmp_path, no_card):
    cfg = app_config(tmp_path, input="none").replace("audio", playback_device="default")
    app = App(cfg, engine_factory=StandInEngine).start()
    try:
        assert app.loop.config.playback_device == "null"
        deadline = time.monotonic() + 10
        while app.display_state is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.display_state.message == "no sound card"
    finally:
        app.close()
    assert not named_device("default") and named_device("hw:0") and named_device("null")


def test_a_named_display_that_cannot_open_is_an_error(tmp_path):
    """`--display sh1106` with no I2C bus (failed on the old code: a warning, no display)."""
    port = 97  # /dev/i2c-97 exists nowhere
    cfg = app_config(tmp_path, input="none").replace("display", kind="sh1106", i2c_port=port)
    e = start_error(cfg)
    assert e.code == EXIT_USAGE and "'sh1106'" in str(e) and f"/dev/i2c-{port}" in str(e)


def test_named_buttons_that_cannot_be_used_are_an_error(tmp_path):
    cfg = app_config(tmp_path, input="none").replace("buttons", kind="keyboard")
    with open(os.devnull) as not_a_tty:
        e = start_error(cfg, keyboard_stream=not_a_tty)
    assert e.code == EXIT_USAGE and "keyboard" in str(e) and "terminal" in str(e)


def test_named_gpio_buttons_without_gpio_are_an_error(tmp_path):
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    try:
        cfg = app_config(tmp_path, input="none").replace("buttons", kind="gpio", mode_pin=99)
        e = start_error(cfg, pin_factory=factory)  # no GPIO99 on a Pi
        assert e.code == EXIT_USAGE and "GPIO buttons" in str(e) and "99" in str(e)
    finally:
        factory.close()
        Device.pin_factory = None


def test_a_broken_midi_mapping_file_is_an_error(tmp_path):
    """(failed on the old code: "MIDI controller unavailable", played on without MIDI)"""
    bad = tmp_path / "map.json"
    bad.write_text("{not json")
    cfg = app_config(tmp_path, input="none").replace("midi", enabled=True,
                                                     mapping=str(bad))
    e = start_error(cfg)
    assert e.code == EXIT_USAGE and "map.json" in str(e)


def test_a_wav_output_into_a_missing_folder_is_refused_before_playing(tmp_path):
    """`--output-device takes/out.wav` with no takes/ (failed on the old code: ALSA's file
    plugin refused it and the app played into the null device, exit 0)."""
    cfg = app_config(tmp_path, input="none").replace(
        "audio", playback_device=str(tmp_path / "takes" / "out.wav"))
    e = start_error(cfg)
    assert e.code == EXIT_USAGE and "takes" in str(e) and "no such directory" in str(e)
