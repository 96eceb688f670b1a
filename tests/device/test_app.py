"""`aesynth play`: config, CLI, exit codes, signals, and the wiring of the threads."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.state import commands as c
from device.app import EXIT_AUDIO, EXIT_MODEL, EXIT_OK, App, StartError, wav_device
from device.state.config import Config, config_from_dict, load_config
from device.state.controls import ControlsSnapshot, UnitControls
from device.errors import ConfigError
from device.senses.keyboard import KeyboardButtons, command_for
from tests.device.audio_rig import alsa_config

ROOT = Path(__file__).resolve().parents[2]
AESYNTH = [sys.executable, "-m", "device.cli"]
FIXTURE = ROOT / "tests" / "fixtures" / "tiny_bundle"


# -- config ---------------------------------------------------------------------------
def test_example_config_documents_exactly_the_defaults():
    assert load_config(ROOT / "deploy" / "aesynth.toml") == Config()
    assert load_config(None) == Config()


@pytest.mark.parametrize("data,message", [
    ({"audio": {"periodz": 4}}, r"unknown key\(s\) periodz in \[audio\]; allowed: "),
    ({"sound": {}}, r"unknown section\(s\) sound; allowed: model, play, audio"),
    ({"audio": {"periods": "4"}}, r"audio.periods must be int, got '4'"),
    ({"audio": {"realtime": 1}}, r"audio.realtime must be bool, got 1"),
    ({"midi": {"enabled": "yes"}}, r"midi.enabled must be bool, got 'yes'"),
    ({"play": {"mode": "loud"}}, r"play.mode must be one of original, resynth, generate, got "
                                 r"'loud'"),
    ({"display": {"i2c_address": 200}}, r"display.i2c_address must be in 0x00..0x7f, got 0xc8"),
    ({"display": {"kind": "lcd"}}, r"display.kind must be one of auto, ssd1306"),
    ({"play": 3}, r"\[play\] must be a table, got 3"),
    # [audio] is checked by the audio thread's own AudioConfig, at load rather than at start
    ({"audio": {"periods": 1}}, r"audio.periods must be in 2..16, got 1"),
    ({"audio": {"prefill": 4}}, r"audio.prefill must be in 1..periods-1=3, got 4"),
    ({"audio": {"pacing": "fast"}}, r"audio.pacing must be one of auto, device, clock, got "
                                    r"'fast'"),
    ({"audio": {"playback_device": ""}}, r"audio.playback_device must be a non-empty ALSA"),
    ({"display": {"max_fps": 0}}, r"display.max_fps must be in \(0, 120\] frames a second, got "
                                  r"0.0"),
])
def test_config_errors_name_key_allowed_and_found(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_config_file_overrides_and_ints_for_floats(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[audio]\nretry_s = 1\nplayback_device = "hw:1"\n'
                    '[display]\ni2c_address = 0x3D\n')
    cfg = load_config(path)
    assert cfg.audio.retry_s == 1.0 and cfg.audio.playback_device == "hw:1"
    assert cfg.display.i2c_address == 0x3D and cfg.audio.audio_config().periods == 4
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[audio\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_unreadable_config_files_are_config_errors_naming_the_path(tmp_path):
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[model]\npath = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=f"'{latin1}' is not UTF-8"):
        load_config(latin1)
    with pytest.raises(ConfigError, match=f"cannot read config file '{tmp_path}': Is a directory"):
        load_config(tmp_path)


def test_audio_section_is_the_audio_config_plus_the_apps_keys():
    import dataclasses

    from device.sound.audio import AudioConfig

    section = Config().audio
    assert section.audio_config() == AudioConfig()  # same keys, same defaults
    assert section.audio_config(playback_device="null").playback_device == "null"
    extra = {f.name for f in dataclasses.fields(section)} - {
        f.name for f in dataclasses.fields(AudioConfig)}
    assert extra == {"fallback", "switch_interval_ms", "others_priority", "process"}
    cfg = config_from_dict({"display": {"max_fps": 90}})
    assert cfg.display.max_fps == 90.0  # what device.senses.display.Display accepts, up to 120


def test_wav_output_becomes_an_alsa_file_device(tmp_path):
    assert wav_device(str(tmp_path / "out.wav")) == f"file:'{tmp_path}/out.wav',wav"
    assert wav_device("plughw:1") == "plughw:1"


# -- keyboard buttons through a real pseudo-terminal ------------------------------------
def test_keys_map_to_the_buttons_commands():
    assert command_for("m") == c.StepMode(1) and command_for("N") == c.StepModel(-1)
    assert command_for(" ") == c.PlayPause() and command_for("q") == c.Shutdown()
    assert command_for("x") is None


def test_keyboard_buttons_read_a_terminal_and_restore_it():
    import termios

    master, slave = os.openpty()
    stream = os.fdopen(slave, "r")
    before = termios.tcgetattr(slave)
    got: queue.SimpleQueue = queue.SimpleQueue()
    kb = KeyboardButtons(got.put, stream=stream).start()
    try:
        os.write(master, b"mxn ")
        received = [got.get(timeout=5) for _ in range(3)]
    finally:
        kb.close()
    assert received == [c.StepMode(1), c.StepModel(1), c.PlayPause()]
    assert termios.tcgetattr(slave) == before
    os.close(master)
    stream.close()


def test_keyboard_buttons_stop_at_end_of_input_instead_of_spinning():
    master, slave = os.openpty()
    stream = os.fdopen(slave, "r")
    kb = KeyboardButtons(lambda cmd: None, stream=stream).start()
    try:
        os.close(master)  # hang-up: read() returns b"" and select() stays ready forever
        kb._thread.join(5)
        assert not kb._thread.is_alive(), "the reader must end, not spin at 100% CPU"
    finally:
        kb.close()
        stream.close()


def test_keyboard_buttons_refuse_a_non_terminal(tmp_path):
    with open(tmp_path / "f", "w") as f, pytest.raises(OSError, match="need a terminal"):
        KeyboardButtons(lambda cmd: None, stream=f)


# -- the app with a stand-in engine (the engine has its own tests) ------------------------
@dataclass(frozen=True)
class Snap:
    mode: str
    model: str
    controls: ControlsSnapshot
    labels: tuple[str, ...] = ()  # EngineSnapshot.labels: none here, the table numbers units


class StandInEngine:
    """Output = input × gain of unit 0; publishes a snapshot like the Engine contract."""

    def __init__(self, bundle):
        self.hop_length = bundle.frame.hop_length
        self.latency_samples = bundle.frame.latency_samples  # no limiter look-ahead here
        self.gain_reduction_db = 0.0  # nor a limiter
        self.controls = UnitControls(bundle.units)
        self.mode = "resynth"
        self.name = bundle.name
        self._publish()

    def _publish(self):
        self.snapshot = Snap(self.mode, self.name, self.controls.snapshot())

    def process(self, block, out):
        np.multiply(block, self.controls.gain[0], out=out)
        return out

    def apply(self, cmd):
        if isinstance(cmd, c.SetMode):
            self.mode = cmd.mode
        elif not self.controls.apply(cmd):
            return False
        self._publish()
        return True


def app_config(tmp_path, **play):
    return config_from_dict({
        "model": {"path": str(FIXTURE)},
        "play": {"mode": "resynth", **play},
        "audio": {"playback_device": wav_device(str(tmp_path / "out.wav")), "realtime": False},
        "midi": {"enabled": False},
        "display": {"kind": "none"},
        "buttons": {"kind": "none"},
        "storage": {"presets_dir": str(tmp_path / "presets"),
                    "recordings_dir": str(tmp_path / "rec")},
    })


def test_app_plays_a_file_into_a_wav_and_applies_commands(tmp_path):
    x = np.random.default_rng(7).uniform(-0.5, 0.5, 22050).astype(np.float32)
    sf.write(tmp_path / "in.wav", x, 22050, subtype="FLOAT")
    app = App(app_config(tmp_path, input=str(tmp_path / "in.wav")),
              engine_factory=StandInEngine).start()
    try:
        deadline = time.monotonic() + 20
        while app.loop.stats.hops < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        app.post(c.SetGain(0, 0.5))
        app.post(c.SetMode("generate"))
        while app.engine.snapshot.mode != "generate" and time.monotonic() < deadline:
            time.sleep(0.01)
        app.post(c.Shutdown())  # goes to the control thread, which asks first
        deadline2 = time.monotonic() + 10
        while app.message != "again to quit" and time.monotonic() < deadline2:
            time.sleep(0.01)
        time.sleep(0.3)
        assert app.message == "again to quit" and not app._stopping.is_set()
        app.post(c.Shutdown())
        assert app.wait(20) == EXIT_OK and app._stopping.is_set()
    finally:
        app.close()
    assert app.engine.controls.gain[0] == 0.5
    y, rate = sf.read(tmp_path / "out.wav", dtype="int16")  # 16-bit WAV from ALSA's file plugin
    assert rate == 22050
    pre = 2 * 128
    wire = np.rint(np.clip(x * 32768.0, -32768, 32767)).astype(np.int16)
    np.testing.assert_array_equal(y[pre:pre + 40 * 128], wire[:40 * 128])
    assert np.any(y[pre:] != np.resize(wire, len(y) - pre)), "gain 0.5 never reached the output"


def test_app_falls_back_to_null_without_a_sound_card(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(alsa_config(tmp_path / "alsa")))
    # Only ALSA's "default" falls back (no card here); a named device is an error
    # (tests/device/test_fallbacks.py).
    cfg = app_config(tmp_path).replace("audio", playback_device="default",
                                       capture_device="default")
    app = App(cfg, engine_factory=StandInEngine)
    with caplog.at_level("INFO"):  # no line-in is INFO once "no sound card" was said
        app.start()
    try:
        assert app.loop.config.playback_device == "null" and app.loop.config.clock_paced()
        assert app.loop.source.kind == "none"
        assert "capture device 'default'" in caplog.text and "null device" in caplog.text
    finally:
        app.close()
    cfg = cfg.replace("audio", playback_device="no_card")
    strict = cfg.replace("audio", fallback="fail", capture_device="cap_file")
    with pytest.raises(StartError) as e:
        App(strict.replace("play", input="none"), engine_factory=StandInEngine).start()
    assert e.value.code == EXIT_AUDIO and "'no_card'" in str(e.value)


def test_app_without_a_model_exits_with_the_model_code(tmp_path):
    cfg = app_config(tmp_path).replace("model", path=str(tmp_path / "nope"))
    with pytest.raises(StartError) as e:
        App(cfg, engine_factory=StandInEngine).start()
    assert e.value.code == EXIT_MODEL and "nope" in str(e.value)


# -- the command line ----------------------------------------------------------------------
def run_cli(*args, env=None, timeout=60):
    return subprocess.run([*AESYNTH, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def test_cli_usage_errors_exit_2(tmp_path):
    assert run_cli("play", "--help").returncode == 0
    r = run_cli("play", "--mode", "loud")
    assert r.returncode == 2 and "invalid choice: 'loud'" in r.stderr
    r = run_cli("play", "--config", str(tmp_path / "none.toml"))
    assert r.returncode == 2 and "none.toml" in r.stderr and "does not exist" in r.stderr


def test_cli_missing_model_exits_3(tmp_path):
    r = run_cli("play", "--model", str(tmp_path / "nope"), "--no-midi", "--display", "none")
    assert r.returncode == 3, r.stderr
    assert "nope" in r.stderr


def test_sigterm_stops_the_player_cleanly(tmp_path):
    env = {"ALSA_CONFIG_PATH": str(alsa_config(tmp_path / "alsa"))}
    p = subprocess.Popen([*AESYNTH, "-v", "play", "--model", str(FIXTURE), "--in", "none",
                          "--output-device", "null", "--no-midi", "--display", "none"],
                         cwd=ROOT, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 60
    for line in p.stderr:
        lines.append(line)
        if "first audio period written" in line or time.monotonic() > deadline:
            break
    p.send_signal(signal.SIGTERM)
    _, rest = p.communicate(timeout=30)
    log = "".join(lines) + rest
    assert p.returncode == 0, log
    assert "audio stopped:" in log and "first audio period written" in log


def test_play_with_no_arguments_runs_on_a_machine_without_sound_card(tmp_path):
    """The README's command, as on a fresh desktop: no card, no OLED, no GPIO, no MIDI."""
    env = {"ALSA_CONFIG_PATH": str(alsa_config(tmp_path / "alsa")), "HOME": str(tmp_path)}
    r = run_cli("-v", "play", "--duration", "2", env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "null device" in r.stderr and "first audio period written" in r.stderr
    assert "audio stopped:" in r.stderr


def test_gpio_buttons_step_mode_and_model_through_the_app(tmp_path):
    """MockFactory presses: MODE steps the engine's mode; MODEL loads the next model off the
    audio thread and the engine swaps to it."""
    import shutil

    from gpiozero.pins.mock import MockFactory

    shipped = tmp_path / "models"
    shutil.copytree(FIXTURE, shipped / "tiny")
    shutil.copytree(ROOT / "tests" / "fixtures" / "paged_bundle", shipped / "paged")
    cfg = app_config(tmp_path).replace(
        "model", path="", shipped_dir=str(shipped), user_dir=str(tmp_path / "user"),
        state_file=str(tmp_path / "state.json"))
    cfg = cfg.replace("audio", playback_device="null").replace("play", input="none")
    cfg = cfg.replace("buttons", kind="gpio", mode_pin=17, model_pin=27, bounce_time=0.0,
                      hold_time=0.5)
    factory = MockFactory(revision="d03114")
    app = App(cfg, pin_factory=factory).start()
    try:
        assert app.engine.snapshot.model == "paged"  # first by name: no state, no default
        assert app.engine.snapshot.mode == "resynth"
        mode_pin, model_pin = factory.pin(17), factory.pin(27)
        mode_pin.drive_low()
        mode_pin.drive_high()
        deadline = time.monotonic() + 10
        while app.engine.snapshot.mode != "generate" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.engine.snapshot.mode == "generate"
        model_pin.drive_low()
        time.sleep(0.05)
        model_pin.drive_high()  # released before hold_time: the next model
        while app.engine.snapshot.model != "tiny" and time.monotonic() < deadline + 10:
            time.sleep(0.01)
        snap = app.engine.snapshot
        assert snap.model == "tiny" and snap.units == 8 and snap.controls.units == 8
        assert app.library.current().name == "tiny"  # remembered for the next start
    finally:
        app.close()
        factory.reset()
    assert app.loop.failure is None and app.loop.stats.hops > 0


def test_usb_stick_models_are_imported_and_reported(tmp_path):
    """A stick appearing under the mount root is imported into the user models and the
    player says so (the import itself is device/models/library.py's, tested there)."""
    import shutil

    root = tmp_path / "media"
    (root / "stick").mkdir(parents=True)
    shutil.copytree(ROOT / "tests" / "fixtures" / "paged_bundle", root / "stick" / "paged")
    cfg = app_config(tmp_path).replace(
        "model", path="", shipped_dir=str(tmp_path / "shipped"),
        user_dir=str(tmp_path / "user"), state_file=str(tmp_path / "state.json"))
    (tmp_path / "shipped").mkdir()
    shutil.copytree(FIXTURE, tmp_path / "shipped" / "default")
    cfg = cfg.replace("storage", usb_mount_root=str(root)).replace("play", input="none")
    app = App(cfg, engine_factory=StandInEngine)
    app.start()
    try:
        app.usb.require_mount = False  # a plain directory stands for the mounted stick
        deadline = time.monotonic() + 60
        while "USB: 1 ok" not in (app.message or "") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "USB: 1 ok" in app.message
        assert [e.name for e in app.library.entries()] == ["default", "paged"]
        app.control.toggle_recording()  # on the stick, since one is mounted
        assert app.recording
        time.sleep(0.2)
        app.control.toggle_recording()
    finally:
        app.close()
    recorded = list((root / "stick" / "aesynth-recordings").glob("*.wav"))
    assert len(recorded) == 1 and sf.info(recorded[0]).frames > 0
    assert not (tmp_path / "rec").exists()


def test_midi_port_comes_from_the_mapping_unless_the_config_names_one(tmp_path):
    mapping = tmp_path / "xtouch.toml"
    mapping.write_text('name = "X-Touch Mini"\nport = "X-TOUCH"\n')
    base = app_config(tmp_path)
    for midi, want in [({"mapping": str(mapping)}, "X-TOUCH"),
                       ({}, "nanoKONTROL2"),
                       ({"mapping": str(mapping), "port_match": "Mini"}, "Mini")]:
        app = App(base.replace("midi", enabled=True, **midi), engine_factory=StandInEngine)
        try:
            app._start_midi()
            assert app.midi is not None and app.midi.port_match == want
        finally:
            app.close()


@pytest.mark.parametrize("data,message", [
    ({"display": {"column_offset": 5}}, r"display.column_offset must be in 0..4 \(the SH1106's "
                                        r"first visible column of 132\), got 5"),
    ({"display": {"column_offset": -1}}, r"display.column_offset must be in 0..4"),
    ({"display": {"rotate": 4}}, r"display.rotate must be in 0..3 quarter turns, got 4"),
    ({"display": {"i2c_port": -1}}, r"display.i2c_port must be in 0..255 \(/dev/i2c-N\), got -1"),
])
def test_display_keys_are_checked_at_load(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_column_offset_defaults_to_luma_s_2_and_is_read_from_the_file(tmp_path):
    assert Config().display.column_offset == 2
    f = tmp_path / "c.toml"
    f.write_text("[display]\nkind = \"sh1106\"\ncolumn_offset = 0\n")
    assert load_config(f).display.column_offset == 0


# -- the display says what the audio device and the health are (issue 15: 3, 16) -------------
def test_display_says_a_lost_device_is_being_reopened():
    from device.senses.feedback import display_state
    from device.sound.audio import AudioStats

    snap = Snap("resynth", "tiny", UnitControls(8).snapshot())
    lost = display_state(snap, AudioStats(connected=False, error="ALSA device 'jk' ..."))
    assert lost.message == "audio device lost: reopening"
    assert display_state(snap, AudioStats(connected=False)).message == "no sound card"
    stalled = display_state(snap, AudioStats(connected=True), warning="audio stalled",
                            note="no line-in")
    assert stalled.message == "audio stalled"
    said = display_state(snap, AudioStats(connected=True), message="preset 1",
                         warning="audio stalled", note="no line-in")
    assert said.message == "preset 1"


def test_quit_on_the_card_asks_systemd_to_power_off(tmp_path, monkeypatch):
    """[play] quit = "poweroff": Cycle twice writes the request aesynth-poweroff.path acts on;
    the player keeps playing until systemd stops it."""
    run = tmp_path / "run"
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(run))
    cfg = app_config(tmp_path, input="none").replace("play", quit="poweroff")
    cfg = cfg.replace("audio", playback_device="null")
    app = App(cfg, engine_factory=StandInEngine).start()
    try:
        app.post(c.Shutdown())
        app.post(c.Shutdown())
        deadline = time.monotonic() + 10
        while not (run / "poweroff").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (run / "poweroff").read_text().strip() == str(os.getpid())
        assert app.message == "powering off"
        time.sleep(0.3)
        assert app.loop.running and app.wait(0.2) == EXIT_OK  # still playing: not a quit
        assert (run / "status.json").exists()  # the health file lives in the same directory
    finally:
        app.close()
    assert not (run / "status.json").exists()


def test_gpio_failure_on_a_pi_is_a_warning_on_the_display(tmp_path, monkeypatch, caplog):
    import logging

    import device.senses.buttons as buttons

    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\x00")
    assert buttons.on_raspberry_pi(str(model)) and not buttons.on_raspberry_pi(str(tmp_path))
    monkeypatch.setattr(buttons, "on_raspberry_pi", lambda: True)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")  # gpiozero finds none
    cfg = app_config(tmp_path).replace("buttons", kind="auto")
    app = App(cfg)
    caplog.set_level(logging.INFO)
    app._start_buttons()
    assert app.buttons is None
    assert app.message.startswith("no GPIO buttons: ")
    assert app.last_error[0] == app.message
    assert any(r.levelname == "WARNING" and "no GPIO buttons" in r.message
               for r in caplog.records)


def test_stepping_away_and_back_keeps_each_models_controls(tmp_path, monkeypatch):
    """MODEL next then previous came back with every fader at the top, and last.json then
    saved that (a newcomer's trial: one stray MODEL press wiped the sound dialled in)."""
    root = Path(__file__).resolve().parents[2]
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    import shutil

    for name in ("default", "wide16"):  # copies: a bundle is a real directory, not a link
        shutil.copytree(root / "models" / name, shipped / name)
    monkeypatch.setenv("AESYNTH_MODELS_DIR", str(tmp_path / "user"))
    cfg = config_from_dict({
        "model": {"shipped_dir": str(shipped), "state_file": str(tmp_path / "state.json")},
        "play": {"mode": "generate", "input": "none"},
        "audio": {"playback_device": "null", "realtime": False},
        "midi": {"enabled": False}, "display": {"kind": "none"}, "buttons": {"kind": "none"},
        "storage": {"presets_dir": str(tmp_path / "presets"),
                    "recordings_dir": str(tmp_path / "rec")},
    })
    app = App(cfg).start()

    def wait_until(what, ok):
        deadline = time.monotonic() + 20
        while not ok() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ok(), what

    try:
        first = app.engine.snapshot.model
        app.post(c.SetGain(1, 0.3))
        wait_until("the fader move", lambda: app.engine.snapshot.controls.gain[1] == 0.3)
        app.post(c.StepModel(1))
        wait_until("the next model", lambda: app.engine.snapshot.model != first)
        assert app.engine.snapshot.controls.units != 8   # wide16: its own 16 controls
        app.post(c.StepModel(-1))
        wait_until("back to the first", lambda: app.engine.snapshot.model == first)
        wait_until("its fader where it was left",
                   lambda: app.engine.snapshot.controls.gain[1] == 0.3)
    finally:
        app.close()
    last = json_load(tmp_path / "presets" / first / "last.json")
    assert last["gain"][1] == 0.3


def json_load(path):
    import json

    return json.loads(Path(path).read_text())
