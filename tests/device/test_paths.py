"""Paths a person writes: on the command line relative to where they typed it, in a config
file relative to that file (device/state/paths.py); user models found where import puts them."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from device.app import App
from device.play import config_from_args
from device.cli import build_parser
from device.state.config import Config, load_config
from device.state.paths import resolve
from tests.device.test_app import FIXTURE, StandInEngine

ROOT = Path(__file__).resolve().parents[2]


def play_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["play", *argv])


def test_play_in_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    """`cd ~/music && aesynth play --in song.wav` (failed on the old code: "cannot read audio
    file '<install dir>/song.wav'")."""
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "song.wav", np.zeros(2205, dtype=np.float32), 22050)
    shutil.copytree(FIXTURE, music / "bundle")
    monkeypatch.chdir(music)
    cfg = config_from_args(play_args("--in", "song.wav", "--model", "bundle",
                                     "--output-device", "out.wav", "--no-midi",
                                     "--display", "none"))
    assert cfg.play.input == str(music / "song.wav")
    assert cfg.model.path == str(music / "bundle")
    assert cfg.audio.playback_device == str(music / "out.wav")
    cfg = cfg.replace("audio", realtime=False).replace("buttons", kind="none") \
        .replace("storage", presets_dir=str(tmp_path / "p"), recordings_dir=str(tmp_path / "r"))
    app = App(cfg, engine_factory=StandInEngine).start()
    try:
        assert app.loop.source.kind == "file"
    finally:
        app.close()
    assert (music / "out.wav").exists()


def test_words_are_not_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config_from_args(play_args("--in", "line", "--output-device", "plughw:1"))
    assert cfg.play.input == "line" and cfg.audio.playback_device == "plughw:1"
    assert config_from_args(play_args("--in", "none")).play.input == "none"


def test_paths_in_a_config_file_are_relative_to_the_file(tmp_path, monkeypatch):
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "aesynth.toml").write_text(
        '[model]\npath = "bundles/mine"\nuser_dir = "~/m"\nstate_file = "/var/s.json"\n'
        '[play]\ninput = "../music/song.wav"\n'
        '[audio]\nplayback_device = "takes/out.wav"\ncapture_device = "hw:1"\n'
        '[midi]\nmapping = "maps/korg.json"\n'
        '[storage]\npresets_dir = "presets"\nrecordings_dir = "rec"\nusb_mount_root = "media"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config("../etc/aesynth.toml")
    assert cfg.model.path == str(conf / "bundles/mine")
    assert cfg.model.user_dir == "~/m" and cfg.model.state_file == "/var/s.json"
    assert Path(cfg.play.input).resolve() == tmp_path / "music/song.wav"
    assert cfg.audio.playback_device == str(conf / "takes/out.wav")
    assert cfg.audio.capture_device == "hw:1"
    assert cfg.midi.mapping == str(conf / "maps/korg.json")
    assert cfg.storage.presets_dir == str(conf / "presets")
    assert cfg.storage.recordings_dir == str(conf / "rec")
    assert cfg.storage.usb_mount_root == str(conf / "media")
    # ... and the command line still wins, relative to where it was typed
    cfg = config_from_args(play_args("--config", "../etc/aesynth.toml", "--in", "x.wav"))
    assert cfg.play.input == str(elsewhere / "x.wav")
    assert cfg.model.path == str(conf / "bundles/mine")


def test_the_documented_config_still_equals_the_defaults():
    assert load_config(ROOT / "deploy" / "aesynth.toml") == Config()


def test_resolve_expands_home_and_vars(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AESYNTH_TEST_DIR", "/srv")
    assert resolve("~/a", "/base") == tmp_path / "a"
    assert resolve("$AESYNTH_TEST_DIR/a", "/base") == Path("/srv/a")
    assert resolve("a/b", "/base") == Path("/base/a/b")


# -- user models: play looks where import puts them (item 10) -------------------------------
def test_play_finds_models_in_aesynth_models_dir(tmp_path, monkeypatch):
    """`AESYNTH_MODELS_DIR=D aesynth import X` then `aesynth play`: play looks in D too
    (failed on the old code: play looked only in ~/.local/share/aesynth/models)."""
    models = tmp_path / "models"
    shutil.copytree(FIXTURE, models / "mine")
    (tmp_path / "shipped").mkdir()
    monkeypatch.setenv("AESYNTH_MODELS_DIR", str(models))
    cfg = Config().replace("model", shipped_dir=str(tmp_path / "shipped"),
                           state_file=str(tmp_path / "state.json"))
    app = App(cfg, engine_factory=StandInEngine)
    bundle = app._load_model()
    assert app.library.user_dir == models and bundle.source == str(models / "mine")


def test_import_takes_the_config_and_agrees_with_play(tmp_path, monkeypatch, capsys):
    from device.cli import main
    from device.models.library import default_user_dir
    from device.state.config import user_models_dir

    monkeypatch.setenv("AESYNTH_MODELS_DIR", "rel/models")
    monkeypatch.chdir(tmp_path)
    assert default_user_dir() == user_models_dir() == tmp_path / "rel" / "models"
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "c.toml").write_text('[model]\nuser_dir = "models"\n')
    assert user_models_dir(load_config(conf / "c.toml").model) == conf / "models"
    # a bad config is one line and exit 2, before any import
    (conf / "bad.toml").write_text('[model]\nuser_dirs = "x"\n')
    assert main(["import", "--config", str(conf / "bad.toml"), str(FIXTURE)]) == 2
    assert "user_dirs" in capsys.readouterr().err


def test_aesynth_import_with_config_installs_where_play_looks(tmp_path):
    """The installed command: `aesynth import --config FILE` into FILE's [model] user_dir."""
    import os
    import subprocess
    import sys

    from device.models.library import ModelLibrary

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "c.toml").write_text('[model]\nuser_dir = "models"\n')
    proc = subprocess.run([sys.executable, "-m", "device.cli", "import", "--config",
                           str(conf / "c.toml"), str(FIXTURE)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "AESYNTH_MODELS_DIR": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = load_config(conf / "c.toml")
    from device.state.config import user_models_dir

    lib = ModelLibrary(None, user_models_dir(cfg.model), tmp_path / "s.json")
    assert [e.name for e in lib.entries()] == ["tiny"]  # the manifest's name
