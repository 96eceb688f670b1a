"""The model library: stable order, the current model across boots, recovery."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from device.errors import LibraryError
from device.models.library import ModelLibrary, recover_models_dir
from tests.device.stick import good_bundle, manifest_of

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dirs(tmp_path):
    shipped, user = tmp_path / "shipped", tmp_path / "user"
    for name in ("default", "Beta"):
        good_bundle(shipped / name, name)
    for name in ("zeta", "alpha", "default"):
        good_bundle(user / name, name)
    (user / ".incoming-x-1234").mkdir()  # a leftover, not a model
    (user / "no-manifest").mkdir()
    return shipped, user, tmp_path / "state" / "state.json"


def keys(lib: ModelLibrary) -> list[str]:
    return [e.key for e in lib.entries()]


def test_order_is_shipped_then_user_each_by_name(dirs):
    lib = ModelLibrary(*dirs)
    assert keys(lib) == ["shipped:Beta", "shipped:default",
                         "user:alpha", "user:default", "user:zeta"]


def test_first_boot_plays_the_shipped_default(dirs):
    assert ModelLibrary(*dirs).current().key == "shipped:default"


def test_step_wraps_and_is_remembered_across_boots(dirs):
    lib = ModelLibrary(*dirs)
    assert lib.step(+1).key == "user:alpha"
    assert lib.step(+3).key == "shipped:Beta"  # wraps past user:zeta
    assert lib.step(-1).key == "user:zeta"
    rebooted = ModelLibrary(*dirs)
    assert rebooted.current().key == "user:zeta"
    assert json.loads(dirs[2].read_text())["current"] == "user:zeta"


def test_a_remembered_model_that_was_deleted_falls_back_to_default(dirs):
    lib = ModelLibrary(*dirs)
    lib.select(lib.find("user:alpha"))
    for f in (dirs[1] / "alpha").iterdir():
        f.unlink()
    (dirs[1] / "alpha").rmdir()
    assert ModelLibrary(*dirs).current().key == "shipped:default"


def test_a_corrupt_state_file_is_reported_and_ignored(dirs, caplog):
    dirs[2].parent.mkdir(parents=True)
    dirs[2].write_bytes(b'{"current": "user:ze')
    with caplog.at_level(logging.WARNING, logger="device.models.library"):
        assert ModelLibrary(*dirs).current().key == "shipped:default"
    assert "not valid JSON" in caplog.text


def test_find_by_key_or_name(dirs):
    lib = ModelLibrary(*dirs)
    assert lib.find("user:default").origin == "user"
    assert lib.find("default").origin == "shipped"
    assert lib.find("nothing") is None


def test_load_gives_a_bundle(dirs):
    lib = ModelLibrary(*dirs)
    b = lib.load(lib.find("user:zeta"), check_models=True)
    assert b.name == "zeta" and b.units == 8


def test_an_empty_library_names_its_directories(tmp_path):
    lib = ModelLibrary(tmp_path / "none", tmp_path / "empty", tmp_path / "s.json")
    assert lib.entries() == []
    with pytest.raises(LibraryError, match="empty"):
        lib.current()


def test_missing_shipped_dir_is_just_empty(tmp_path):
    good_bundle(tmp_path / "user" / "only", "only")
    lib = ModelLibrary(None, tmp_path / "user", tmp_path / "s.json")
    assert lib.current().key == "user:only"


def test_opening_the_library_cleans_leftovers(dirs):
    ModelLibrary(*dirs)
    assert not (dirs[1] / ".incoming-x-1234").exists()


def test_recover_puts_back_a_model_caught_between_renames(tmp_path):
    models = tmp_path / "models"
    good_bundle(models / ".old-tiny-0a1b2c3d", "tiny", description="old")
    good_bundle(models / ".old-other-00000000", "other", description="stale")
    good_bundle(models / "other", "other", description="current")
    done = recover_models_dir(models)
    assert sorted(p.name for p in models.iterdir() if p.name != ".import.lock") == [
        "other", "tiny"]
    assert manifest_of(models / "tiny")["description"] == "old"
    assert manifest_of(models / "other")["description"] == "current"
    assert len(done) == 2


_SELECT = ("import sys; from device.models.library import ModelLibrary; "
           "lib = ModelLibrary(sys.argv[1], sys.argv[2], sys.argv[3]); lib.step(1)")


def test_kill_9_while_saving_the_current_model_keeps_the_old_state(dirs):
    lib = ModelLibrary(*dirs)
    lib.select(lib.find("user:zeta"))
    env = dict(os.environ, AESYNTH_CRASH_AT="atomic-before-rename")
    proc = subprocess.run([sys.executable, "-c", _SELECT, *map(str, dirs)], env=env,
                          cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    def temporaries() -> list[str]:
        return [p.name for p in dirs[2].parent.iterdir() if p.name.startswith(".tmp-")]

    assert temporaries()
    assert ModelLibrary(*dirs).current().key == "user:zeta"
    assert temporaries() == []


def test_step_lists_the_models_once_so_a_rename_between_cannot_break_it(dirs, monkeypatch):
    lib = ModelLibrary(*dirs)
    lib.select(lib.find("user:alpha"))
    user = dirs[1]
    (user / "alpha").rename(user / "alpha-away")  # being renamed while we step
    real_entries = lib.entries
    listed = []

    def entries_then_back():
        listed.append(1)
        got = real_entries()
        if len(listed) == 1:
            (user / "alpha-away").rename(user / "alpha")  # back before a second scan
        return got

    monkeypatch.setattr(lib, "entries", entries_then_back)
    # alpha is missing from the one listing: current falls back to shipped:default
    assert lib.step(+1).key == "user:alpha-away"
    assert listed == [1]
