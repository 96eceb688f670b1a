"""Write model bundles (the reader and validator live in ``device.models.bundle``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from device.state.atomic import fsync_tree, recover_swap, swap_dir
from device.models.bundle import FORMAT_VERSION, MANIFEST, UnitStats, read_bundle
from device.sound.features import FrameConfig, Normaliser


def build_manifest(*, name: str, frame: FrameConfig, normaliser: Normaliser, units: int,
                   encoder: bytes, decoder: bytes, quantization: str,
                   unit_stats: UnitStats | None = None, training: dict | None = None,
                   description: str = "", unit_labels: list[str] | None = None
                   ) -> dict[str, Any]:
    """The manifest for a pair of .tflite models (see ``device.models.bundle``)."""
    def model(role: str, data: bytes, shape_in: list[int], shape_out: list[int]) -> dict:
        return {"file": f"{role}.tflite", "sha256": hashlib.sha256(data).hexdigest(),
                "input": {"shape": shape_in, "dtype": "float32"},
                "output": {"shape": shape_out, "dtype": "float32"},
                "quantization": quantization}

    m: dict[str, Any] = {"format_version": FORMAT_VERSION, "name": name,
                         "description": description}
    m.update(frame.to_dict())
    m["normaliser"] = normaliser.to_dict()
    m["units"] = units
    m["encoder"] = model("encoder", encoder, [1, frame.n_bins], [1, units])
    m["decoder"] = model("decoder", decoder, [1, units], [1, frame.n_bins])
    if unit_stats is not None:
        m["unit_stats"] = unit_stats.to_dict()
    if unit_labels is not None:
        m["unit_labels"] = list(unit_labels)
    m["training"] = training or {}
    return m


def write_bundle(directory: str | os.PathLike, *, encoder: bytes, decoder: bytes,
                 check: bool = True, **fields: Any) -> Path:
    """Write a bundle directory atomically (built and fsynced beside it, then
    swapped in by :func:`device.state.atomic.swap_dir`: a kill leaves the old or the new).

    ``fields`` are :func:`build_manifest`'s keywords.  With ``check`` the
    result is read back through the device's validator (models loaded and
    run) before it replaces anything, so train/ can never ship a bundle the
    box would refuse.
    """
    directory = Path(directory)
    manifest = build_manifest(encoder=encoder, decoder=decoder, **fields)
    directory.parent.mkdir(parents=True, exist_ok=True)
    _remove_killed_writes(directory)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        tmp.chmod(0o755)
        (tmp / "encoder.tflite").write_bytes(encoder)
        (tmp / "decoder.tflite").write_bytes(decoder)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if check:
            read_bundle(tmp)
        fsync_tree(tmp)
        swap_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _remove_killed_writes(directory: Path) -> None:
    """Undo what a write of ``directory`` killed part-way left: the old bundle set
    aside by a swap, and staging directories (``mkdtemp``: ``.NAME.`` + 8 characters)."""
    recover_swap(directory)
    prefix = f".{directory.name}."
    for e in os.scandir(directory.parent):
        rest = e.name[len(prefix):]
        if (e.name.startswith(prefix) and len(rest) == 8 and "." not in rest
                and e.is_dir(follow_symlinks=False)):
            shutil.rmtree(e.path, ignore_errors=True)
