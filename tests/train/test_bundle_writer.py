"""write_bundle replaces a bundle whole: the old one stays until the new is in place,
and a kill -9 between the two renames is put right by the next write (no TensorFlow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from device.models.bundle import read_bundle
from train.bundle_writer import write_bundle

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "tiny_bundle"


def fields(description: str) -> dict:
    b = read_bundle(FIXTURE, check_models=False)
    return {"encoder": b.encoder.content, "decoder": b.decoder.content, "name": "tiny",
            "frame": b.frame, "normaliser": b.normaliser, "units": b.units,
            "quantization": "float32", "unit_stats": b.unit_stats, "description": description}


_WRITE = ("import sys; from tests.train.test_bundle_writer import fields; "
          "from train.bundle_writer import write_bundle; "
          "write_bundle(sys.argv[1], check=False, **fields('version two'))")


def test_replace_then_kill_between_the_renames_then_write_again(tmp_path):
    target = tmp_path / "tiny"
    write_bundle(target, check=False, **fields("version one"))
    write_bundle(target, check=False, **fields("version one again"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]

    env = dict(os.environ, AESYNTH_CRASH_AT="swap-between-renames")
    proc = subprocess.run([sys.executable, "-c", _WRITE, str(target)], env=env, cwd=REPO,
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(".old-tiny-")]
    assert not target.exists() and len(aside) == 1
    assert read_bundle(aside[0], check_models=False).description == "version one again"

    write_bundle(target, check=False, **fields("version three"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    assert read_bundle(target).description == "version three"


def test_a_bundle_the_validator_refuses_replaces_nothing(tmp_path):
    target = tmp_path / "tiny"
    write_bundle(target, check=False, **fields("good"))
    bad = fields("bad") | {"units": 9}  # the models have 8
    with pytest.raises(ValueError, match="invalid bundle"):
        write_bundle(target, **bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    assert read_bundle(target, check_models=False).description == "good"
