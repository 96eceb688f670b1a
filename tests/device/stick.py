"""Build USB-stick contents for the import tests: good and hostile bundles."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

from tests.device.bundles import FIXTURE, copy_fixture, edit_manifest, rewrite_model

BROKEN_MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "broken_models"
TINY_FILES = ("manifest.json", "encoder.tflite", "decoder.tflite")


def good_bundle(dest: Path, name: str, description: str = "") -> Path:
    """A valid copy of the tiny bundle named ``name``."""
    copy_fixture(dest)
    edit_manifest(dest, lambda m: m.update(name=name, description=description or name))
    return dest


def hostile_model_bundle(dest: Path, name: str, model: str, role: str = "encoder") -> Path:
    """A bundle whose ``role`` model is tests/fixtures/broken_models/<model>.tflite."""
    good_bundle(dest, name)
    rewrite_model(dest, role, (BROKEN_MODELS / f"{model}.tflite").read_bytes())
    return dest


def truncated_model_bundle(dest: Path, name: str, keep: int = 4000) -> Path:
    """The encoder cut to ``keep`` bytes, checksum updated: only TFLite can tell."""
    good_bundle(dest, name)
    rewrite_model(dest, "encoder", (FIXTURE / "encoder.tflite").read_bytes()[:keep])
    return dest


def zip_bundle(src: Path, zip_path: Path, *, top: str | None = None) -> Path:
    """Zip a bundle directory's files (in one top folder when ``top`` is given)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in TINY_FILES:
            z.write(src / f, f"{top}/{f}" if top else f)
    return zip_path


def good_zip(dest_zip: Path, name: str, scratch: Path) -> Path:
    return zip_bundle(good_bundle(scratch / f"src-{name}", name), dest_zip, top=name)


def traversal_zip(dest_zip: Path, scratch: Path) -> Path:
    """A good bundle plus a member that climbs out: ``../../evil.tflite``."""
    src = good_bundle(scratch / "src-traversal", "traversal")
    zip_bundle(src, dest_zip)
    with zipfile.ZipFile(dest_zip, "a") as z:
        z.writestr("../../evil.tflite", b"pwned")
    return dest_zip


def bomb_zip(dest_zip: Path, scratch: Path, inflated: int = 48 << 20) -> Path:
    """The encoder member inflates to ``inflated`` bytes of zeros (~50 KB compressed)."""
    src = good_bundle(scratch / "src-bomb", "bomb")
    with zipfile.ZipFile(dest_zip, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(src / "manifest.json", "manifest.json")
        z.write(src / "decoder.tflite", "decoder.tflite")
        with z.open("encoder.tflite", "w", force_zip64=True) as fh:
            block = bytes(1 << 20)
            for _ in range(inflated >> 20):
                fh.write(block)
    return dest_zip


def symlinked_model_bundle(dest: Path, name: str, target: str = "/etc/passwd") -> Path:
    good_bundle(dest, name)
    os.unlink(dest / "encoder.tflite")
    os.symlink(target, dest / "encoder.tflite")
    return dest


def huge_manifest_bundle(dest: Path, name: str, size: int = 2 << 20) -> Path:
    good_bundle(dest, name)
    edit_manifest(dest, lambda m: m.update(training={"padding": "x" * size}))
    return dest


def nan_manifest_bundle(dest: Path, name: str) -> Path:
    """NaN in the normaliser constants (Python's json writes it; JSON forbids it)."""
    good_bundle(dest, name)
    edit_manifest(dest, lambda m: m["normaliser"].update(scale=float("nan")))
    return dest


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()
