"""``aesynth check`` from the command line, as a user runs it."""

import subprocess
import sys

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


def test_check_without_arguments_is_a_usage_error():
    r = aesynth("check")
    assert r.returncode == 2 and "PATH" in r.stderr


def test_top_level_help_lists_check():
    r = aesynth("--help")
    assert r.returncode == 0 and "check" in r.stdout
