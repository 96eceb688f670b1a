"""Make broken copies of the committed tiny bundle, one fault each."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_bundle"


def copy_fixture(dest: Path) -> Path:
    shutil.copytree(FIXTURE, dest)
    return dest


def edit_manifest(bundle: Path, change: Callable[[dict], None]) -> None:
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))


def rewrite_model(bundle: Path, role: str, data: bytes) -> None:
    """Replace a model file and update its checksum (a fault the checksum can't see)."""
    (bundle / f"{role}.tflite").write_bytes(data)
    edit_manifest(bundle, lambda m: m[role].update(sha256=hashlib.sha256(data).hexdigest()))
