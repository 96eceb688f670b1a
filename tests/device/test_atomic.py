"""device.state.atomic: strict JSON, and directories swapped in whole (kill -9 included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from device.state.atomic import OLD_PREFIX, fsync_tree, loads_strict, recover_swap, swap_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}'])
def test_loads_strict_refuses_non_finite_numbers(text):
    with pytest.raises(ValueError, match="non-finite number"):
        loads_strict(text)


def test_loads_strict_reads_bytes_and_text():
    assert loads_strict(b'{"a": [1, 2.5e300]}') == {"a": [1, 2.5e300]}
    assert loads_strict('"\u00e9"') == "\u00e9"
    with pytest.raises(UnicodeDecodeError):
        loads_strict(b'"caf\xe9"')


def make_dir(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "f.txt").write_text(text)
    fsync_tree(path)
    return path


def test_swap_dir_new_then_replaced_leaves_nothing_aside(tmp_path):
    target = tmp_path / "thing"
    assert swap_dir(make_dir(tmp_path / ".staged1", "one"), target) == "new"
    assert swap_dir(make_dir(tmp_path / ".staged2", "two"), target) == "replaced"
    assert (target / "f.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]


_SWAP = ("import sys; from device.state.atomic import swap_dir; "
         "swap_dir(sys.argv[1], sys.argv[2])")


def test_kill_9_between_the_renames_keeps_the_old_one_for_recover_swap(tmp_path):
    target = make_dir(tmp_path / "thing", "old")
    staged = make_dir(tmp_path / ".staged", "new")
    env = dict(os.environ, AESYNTH_CRASH_AT="swap-between-renames")
    proc = subprocess.run([sys.executable, "-c", _SWAP, str(staged), str(target)], env=env,
                          cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()  # the kill came with the old one aside
    assert [p.name.startswith(f"{OLD_PREFIX}thing-") for p in tmp_path.iterdir()
            if p.name != ".staged"] == [True]
    assert recover_swap(target) == ["restored 'thing' from an interrupted replace"]
    assert (target / "f.txt").read_text() == "old"


def test_recover_swap_removes_stale_copies_and_ignores_other_names(tmp_path):
    target = make_dir(tmp_path / "thing", "current")
    make_dir(tmp_path / f"{OLD_PREFIX}thing-0123abcd", "stale")
    other = make_dir(tmp_path / f"{OLD_PREFIX}thing-2-0123abcd", "another model's")
    assert recover_swap(target) == [f"removed {OLD_PREFIX}thing-0123abcd"]
    assert (target / "f.txt").read_text() == "current" and other.exists()
    assert recover_swap(tmp_path / "missing" / "x") == []
