"""``aesynth check`` from the command line, as a user runs it."""

import io
import os
import subprocess
import sys

from device.models.check import run_check
from tests.device.bundles import FIXTURE, copy_fixture, edit_manifest


def aesynth(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_check_accepts_a_good_bundle():
    r = aesynth("check", str(FIXTURE))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"{FIXTURE}: OK  tiny: 8 units, 1025 bins, 22050 Hz")


def test_check_names_bundle_field_limit_and_value(tmp_path):
    bad = copy_fixture(tmp_path / "bad")
    edit_manifest(bad, lambda m: m.update(units=5000, hop_length=100))
    r = aesynth("check", str(FIXTURE), str(bad))
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith(f"{FIXTURE}: OK")
    assert f"{bad}: units: must be in 1..4096, got 5000" in lines
    assert any(line.startswith(f"{bad}: hop_length:") and "hop_length=100" in line
               for line in lines), lines


def test_check_finds_bundles_in_subfolders(tmp_path):
    """A stick with its models in subfolders: checking the stick said "manifest.json:
    missing file" of the stick itself.  Each bundle up to 4 levels down is checked;
    deeper ones, hidden folders and a bundle's own folder are not searched."""
    stick = tmp_path / "stick"
    good = copy_fixture(stick / "models" / "default")
    broken = copy_fixture(stick / "aesynth" / "old" / "models" / "broken")  # 4 levels
    edit_manifest(broken, lambda m: m.update(units=5000))
    copy_fixture(good / "inner")                                    # inside a bundle
    copy_fixture(stick / "a" / "b" / "c" / "d" / "too_deep")          # 5 levels
    copy_fixture(stick / ".Trashes" / "deleted")
    (stick / "notes.txt").write_text("not a bundle")
    r = aesynth("check", str(stick))
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines == [f"{broken}: units: must be in 1..4096, got 5000",
                     f"{good}: OK  tiny: 8 units, 1025 bins, 22050 Hz, asymmetric window, "
                     f"hop 128 (11.6 ms latency), logmax features, float32"], lines
    edit_manifest(broken, lambda m: m.update(units=8))
    r = aesynth("check", "--no-run", str(stick / "models"), str(stick / "aesynth"))
    assert r.returncode == 0 and r.stdout.count(": OK  tiny") == 2, r.stdout + r.stderr


def test_check_says_when_a_folder_holds_no_bundle(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "readme.txt").write_text("hello")
    r = aesynth("check", str(tmp_path))
    assert r.returncode == 1 and r.stderr == ""
    assert r.stdout == (f"{tmp_path}: no bundle found (no folder holding manifest.json "
                        f"up to 4 levels below it)\n")


def test_check_names_a_folder_it_cannot_list(tmp_path, monkeypatch):
    good = copy_fixture(tmp_path / "models" / "default")
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.scandir

    def scandir(path):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = io.StringIO()
    assert run_check([str(tmp_path)], check_models=False, out=out) == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0] == f"{locked}: cannot look inside: Permission denied"
    assert lines[1].startswith(f"{good}: OK  tiny: 8 units")


def test_check_without_arguments_is_a_usage_error():
    r = aesynth("check")
    assert r.returncode == 2 and "PATH" in r.stderr


def test_top_level_help_lists_check():
    r = aesynth("--help")
    assert r.returncode == 0 and "check" in r.stdout
