"""aesynth-notice: the failure text the card shows on the OLED (luma's dummy device)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.image.conftest import REPO

NOTICE = REPO / "image/rootfs/opt/aesynth/bin/aesynth-notice"


def notice(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(NOTICE), "--config", "/nonexistent", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=60)


def lit(png: Path) -> int:
    img = Image.open(png).convert("1")
    assert img.size == (128, 64)
    return int(np.count_nonzero(np.asarray(img)))


def test_a_crash_is_drawn_and_logged(tmp_path: Path) -> None:
    png = tmp_path / "crash.png"
    p = notice("--service-result", "--display", "dummy", "--png", str(png),
               env={"SERVICE_RESULT": "signal", "EXIT_STATUS": "SEGV"})
    assert p.returncode == 0
    assert "aesynth stopped | signal (exit SEGV) -" in p.stderr
    assert lit(png) > 100


def test_a_clean_stop_shows_nothing(tmp_path: Path) -> None:
    png = tmp_path / "clean.png"
    p = notice("--service-result", "--display", "dummy", "--png", str(png),
               env={"SERVICE_RESULT": "success"})
    assert p.returncode == 0 and not png.exists() and p.stderr == ""


def test_long_words_wrap_to_the_display() -> None:
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("aesynth_notice", str(NOTICE))
    spec = importlib.util.spec_from_loader("aesynth_notice", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    lines = mod.message_lines("aesynth FAILED", "x" * 50 + " model default.zip failed")
    assert lines[0] == "aesynth FAILED"
    assert all(len(ln) <= 21 for ln in lines) and len(lines) <= 6
    assert lines[1] == "x" * 21 and lines[3] == "x" * 8 + " model"


def test_no_display_is_not_an_error() -> None:
    p = notice("--message", "hello", "--display", "none")
    assert p.returncode == 0 and "aesynth | hello" in p.stderr


def test_a_bad_config_says_fix_it_not_restarting(tmp_path: Path) -> None:
    png = tmp_path / "config.png"
    p = notice("--service-result", "--display", "dummy", "--png", str(png),
               env={"SERVICE_RESULT": "exit-code", "EXIT_STATUS": "2"})
    assert p.returncode == 0
    assert "aesynth: BAD CONFIG | fix config.toml in" in p.stderr
    assert "restarting" not in p.stderr and lit(png) > 100
    p = notice("--service-result", "--display", "none",
               env={"SERVICE_RESULT": "watchdog", "EXIT_STATUS": "ABRT"})
    assert "aesynth stopped | watchdog (exit ABRT) | - restarting" in p.stderr
