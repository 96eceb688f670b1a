"""The model bundle: the contract between ``train/`` (writer) and the box (reader).

A bundle is a directory, or the same files in a ``.zip`` (at its root or in
one top folder), holding ``manifest.json``, ``encoder.tflite`` and
``decoder.tflite``.  Manifest, format_version 1::

    {"format_version": 1, "name": "default", "description": "...",
     "sample_rate": 22050, "n_fft": 2048, "win_length": 2048, "hop_length": 128,
     "window": "asymmetric", "synthesis_length": 256,
     "normaliser": {"kind": "logmax", "amplitude": "log", "floor": 0.001,
                    "offset": -6.9, "scale": 12.1},
     "units": 8,
     "encoder": {"file": "encoder.tflite", "sha256": "<64 hex>",
                 "input": {"shape": [1, 1025], "dtype": "float32"},
                 "output": {"shape": [1, 8], "dtype": "float32"},
                 "quantization": "dynamic"},
     "decoder": {... input [1, units], output [1, n_bins] ...},
     "unit_stats": {"min": [...], "max": [...], "mean": [...]},
     "unit_labels": ["body", "air", ...],
     "training": {"data": [...], "recipe": {...}, "metrics": {...},
                  "canonical": {...}}}

``unit_labels`` (optional; ``units`` strings of 1..5 printable ASCII
characters, what the unit table shows in its first column) name each unit
by what it does, written by ``train.canonical``; without them the units are
numbered "1", "2", ...  ``evaluation`` (optional, written by ``aesynth-train
figures``, train/figures.py) keeps what the bundle was measured to do on unseen
music (spectral convergence and log-spectral distance beside PCA of its size,
a perceptual score, playability per mode); the player does not read it.

A bundle from a USB stick is untrusted: every field is checked, every size is
capped, no name may leave the bundle, checksums must match, and (with
``check_models``) both models must load and turn a test frame into finite
numbers before the bundle is offered to the player.  Nothing is executed or
unpickled; the models are read into memory and handed to TFLite as bytes.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.state.atomic import loads_strict
from device.errors import (
    AesynthError,
    BundleError,
    FeatureError,
    FrameConfigError,
    ModelError,
    Problem,
)
from device.sound.features import FrameConfig, Normaliser

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MANIFEST = "manifest.json"
MANIFEST_MAX_BYTES = 1 << 20  # per-bin constants of 4097 bins fit ~10 times over
MODEL_MAX_BYTES = 32 << 20  # a 1025-512-256 float32 model is ~5 MB
ZIP_MAX_MEMBERS = 32
ZIP_MAX_TOTAL_BYTES = 2 * MODEL_MAX_BYTES + MANIFEST_MAX_BYTES
MAX_UNITS = 4096
LABEL_MAX_CHARS = 5  # the unit table's first column (device.senses.display)
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8", "int16x8")
ROLES = ("encoder", "decoder")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_LABEL_RE = re.compile(rf"[ -~]{{1,{LABEL_MAX_CHARS}}}")  # fullmatch: no "\n" at the end


def default_labels(units: int) -> tuple[str, ...]:
    """Unit labels for a bundle that has none: the 1-based unit numbers."""
    return tuple(str(u + 1) for u in range(units))


def unit_name(unit: int, labels: tuple[str, ...] | list[str] = ()) -> str:
    """``unit`` (0-based) as a message to the player names it: "u3 body" where the
    bundle labels it (the unit table's first column, cut as the table cuts it), else
    "unit 3" (no labels, or :func:`default_labels`' number)."""
    number = unit + 1
    label = labels[unit][:LABEL_MAX_CHARS] if 0 <= unit < len(labels) else ""
    if not label.strip() or label == str(number):
        return f"unit {number}"
    return f"u{number} {label}"


@dataclass(frozen=True)
class UnitStats:
    """Per-unit activation statistics on the training data (generate mode maps
    fader positions onto [min, max] with ``mean`` as the typical value)."""

    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [float(v) for v in getattr(self, k)] for k in ("min", "max", "mean")}


@dataclass(frozen=True)
class ModelFile:
    role: str
    file: str
    sha256: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    quantization: str
    content: bytes

    def __repr__(self) -> str:
        return (f"ModelFile({self.role!r}, {self.file!r}, {self.input_shape}->"
                f"{self.output_shape}, {self.quantization}, {len(self.content)} bytes)")


@dataclass(frozen=True)
class Bundle:
    """A validated bundle, its models held in memory."""

    source: str
    name: str
    description: str
    frame: FrameConfig
    normaliser: Normaliser
    units: int
    encoder: ModelFile
    decoder: ModelFile
    unit_stats: UnitStats | None
    manifest: dict
    unit_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.unit_labels:  # a Bundle built in code without labels
            object.__setattr__(self, "unit_labels", default_labels(self.units))

    @property
    def n_bins(self) -> int:
        return self.frame.n_bins

    def describe(self) -> str:
        f = self.frame
        metrics = self.manifest.get("training", {}).get("metrics", {})
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in list(metrics.items())[:4])
        return (f"{self.name}: {self.units} units, {f.n_bins} bins, {f.sample_rate} Hz, "
                f"{f.window} window, hop {f.hop_length} ({f.latency_ms:.1f} ms latency), "
                f"{self.normaliser.kind} features, {self.encoder.quantization}"
                + (f"; {shown}" if shown else ""))

    def __repr__(self) -> str:
        return f"<Bundle {self.name!r} units={self.units} from {self.source!r}>"


# -- reading files from a directory or a zip --------------------------------
class _Source:
    """Reads named files from a bundle, refusing anything outside it."""

    def __init__(self, path: Path, problems: list[Problem]):
        self.path = path
        self.problems = problems
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        self._members: dict[str, zipfile.ZipInfo] = {}

    def open(self) -> bool:
        p = self.path
        try:
            st = os.lstat(p)
        except OSError as e:
            self.problems.append(Problem("bundle", f"cannot open {str(p)!r}: {e.strerror}"))
            return False
        if stat.S_ISDIR(st.st_mode):
            return True
        if stat.S_ISREG(st.st_mode) and p.suffix.lower() == ".zip":
            return self._open_zip()
        self.problems.append(Problem(
            "bundle", f"must be a directory or a .zip file, got {str(p)!r}"))
        return False

    def _open_zip(self) -> bool:
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            self.problems.append(Problem("bundle", f"not a readable zip file: {e}"))
            return False
        if len(infos) > ZIP_MAX_MEMBERS:
            self.problems.append(Problem(
                "bundle", f"zip holds at most {ZIP_MAX_MEMBERS} entries, has {len(infos)}"))
            return False
        files = []
        escaped = False
        for info in infos:
            name = info.filename
            if name.startswith("/") or "\\" in name or ".." in name.split("/"):
                self.problems.append(Problem(
                    name, "path leaves the bundle (absolute or '..'), refused"))
                escaped = True
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                self.problems.append(Problem(name, "symbolic links are not allowed in a bundle"))
                continue
            if not info.is_dir():
                files.append(info)
        tops = {f.filename.split("/")[0] for f in files if "/" in f.filename}
        if len(tops) == 1 and all("/" in f.filename for f in files):
            self._prefix = tops.pop() + "/"
        for f in files:
            rel = f.filename[len(self._prefix):]
            if "/" not in rel:
                self._members[rel] = f
        return not escaped

    def read(self, name: str, field: str, cap: int) -> bytes | None:
        """Bytes of bundle file ``name`` (at most ``cap``); None after a Problem."""
        if not _FILE_RE.match(name):
            self.problems.append(Problem(
                field, f"file name must be a plain name inside the bundle ([A-Za-z0-9._-], "
                       f"no '/' or '..'), got {name!r}"))
            return None
        if self._zip is not None:
            return self._read_zip(name, field, cap)
        path = self.path / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.problems.append(Problem(field, f"missing file {name!r}"))
            return None
        except OSError as e:
            self.problems.append(Problem(field, f"cannot read {name!r}: {e.strerror}"))
            return None
        if stat.S_ISLNK(st.st_mode):
            self.problems.append(Problem(field, f"{name!r} is a symbolic link; not allowed"))
            return None
        if not stat.S_ISREG(st.st_mode):
            self.problems.append(Problem(field, f"{name!r} is not a regular file"))
            return None
        if st.st_size > cap:
            self.problems.append(Problem(
                field, f"{name!r} is {st.st_size} bytes, limit {cap}"))
            return None
        try:
            # O_NOFOLLOW: the file must not turn into a link between lstat and open
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as fh:
                data = fh.read(cap + 1)
        except OSError as e:
            self.problems.append(Problem(field, f"cannot read {name!r}: {e.strerror}"))
            return None
        if len(data) > cap:
            self.problems.append(Problem(field, f"{name!r} grew past the limit {cap} bytes"))
            return None
        return data

    def _read_zip(self, name: str, field: str, cap: int) -> bytes | None:
        info = self._members.get(name)
        if info is None:
            self.problems.append(Problem(field, f"missing file {name!r} in the zip"))
            return None
        if info.file_size > cap:
            self.problems.append(Problem(
                field, f"{name!r} is {info.file_size} bytes uncompressed, limit {cap}"))
            return None
        try:
            with self._zip.open(info) as fh:
                # The header's size may lie (zip bomb): never read past the cap.
                data = fh.read(cap + 1)
        except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, EOFError) as e:
            self.problems.append(Problem(field, f"cannot read {name!r} from the zip: {e}"))
            return None
        if len(data) > cap:
            self.problems.append(Problem(field, f"{name!r} inflates past the limit {cap} bytes"))
            return None
        return data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None


# -- field checks --------------------------------------------------------------
class _Checker:
    def __init__(self, manifest: dict, problems: list[Problem]):
        self.m = manifest
        self.problems = problems

    def bad(self, field: str, message: str) -> None:
        self.problems.append(Problem(field, message))

    def get(self, field: str, kind: type | tuple, where: dict | None = None,
            path: str | None = None) -> Any:
        d = self.m if where is None else where
        label = path or field
        if field not in d:
            self.bad(label, "missing")
            return None
        v = d[field]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(v, bool) or not isinstance(v, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.bad(label, f"must be {names}, got {type(v).__name__} {_short(v)}")
            return None
        return v

    def int_in(self, field: str, lo: int, hi: int, where: dict | None = None,
               path: str | None = None) -> int | None:
        v = self.get(field, int, where, path)
        if v is not None and not lo <= v <= hi:
            self.bad(path or field, f"must be in {lo}..{hi}, got {v}")
            return None
        return v

    def shape(self, field: str, where: dict, path: str) -> tuple[int, ...] | None:
        v = self.get(field, list, where, path)
        if v is None:
            return None
        if not (1 <= len(v) <= 4) or not all(
                isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 65536 for n in v):
            self.bad(path, f"must be a list of 1..4 integers in 1..65536, got {_short(v)}")
            return None
        return tuple(v)

    def floats(self, field: str, n: int, where: dict, path: str) -> np.ndarray | None:
        v = self.get(field, list, where, path)
        if v is None:
            return None
        if len(v) != n:
            self.bad(path, f"must have {n} values (one per unit), got {len(v)}")
            return None
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            self.bad(path, "must hold only numbers")
            return None
        a = np.asarray(v, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            self.bad(path, f"must be finite, got {_short([x for x in v if not math.isfinite(x)])}")
            return None
        return a


def _short(v: Any, limit: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _is_flatbuffer_tflite(data: bytes) -> str | None:
    """Why ``data`` is not a TFLite flatbuffer, or None when it looks like one."""
    if len(data) < 16:
        return f"is {len(data)} bytes, too short for a TFLite flatbuffer"
    if data[4:8] != b"TFL3":
        return f"is not a TFLite flatbuffer (identifier {data[4:8]!r}, expected b'TFL3')"
    root = int.from_bytes(data[0:4], "little")
    if not 8 <= root < len(data):
        return f"flatbuffer root offset {root} lies outside the file ({len(data)} bytes)"
    return None


def _read_manifest(src: _Source, problems: list[Problem]) -> dict | None:
    raw = src.read(MANIFEST, MANIFEST, MANIFEST_MAX_BYTES)
    if raw is None:
        return None
    try:
        m = loads_strict(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # nesting bombs too
        problems.append(Problem(MANIFEST, f"not valid JSON: {e}"))
        return None
    if not isinstance(m, dict):
        problems.append(Problem(MANIFEST, f"must be a JSON object, got {type(m).__name__}"))
        return None
    return m


def _check_fields(m: dict, problems: list[Problem]) -> dict | None:
    """Check the manifest's own fields; return the parsed pieces or None."""
    c = _Checker(m, problems)
    version = c.get("format_version", int)
    if version is not None and version not in SUPPORTED_VERSIONS:
        c.bad("format_version", f"must be one of {list(SUPPORTED_VERSIONS)}, got {version}")
        return None  # an unknown version's other fields mean nothing to us
    name = c.get("name", str)
    if name is not None and not _NAME_RE.match(name):
        c.bad("name", f"must be 1..64 characters [A-Za-z0-9._-], starting with a letter "
                      f"or digit, got {_short(name)}")
        name = None
    description = m.get("description", "")
    if not isinstance(description, str) or len(description) > 2000:
        c.bad("description", "must be a string of at most 2000 characters")
        description = ""
    frame = None
    frame_fields = {k: m[k] for k in ("sample_rate", "n_fft", "win_length", "hop_length",
                                      "window", "synthesis_length") if k in m}
    missing = [k for k in ("sample_rate", "n_fft", "win_length", "hop_length", "window")
               if k not in m]
    for k in missing:
        c.bad(k, "missing")
    if not missing:
        try:
            frame = FrameConfig.from_dict(frame_fields)
        except FrameConfigError as e:
            c.bad(e.field, str(e))
        except TypeError as e:
            c.bad("frame", f"fields of the wrong type: {e}")
    normaliser = None
    nd = c.get("normaliser", dict)
    if nd is not None:
        try:
            normaliser = Normaliser.from_dict(nd)
        except FeatureError as e:
            c.bad("normaliser", str(e))
        if normaliser is not None and frame is not None and normaliser.n_bins not in (
                None, frame.n_bins):
            c.bad("normaliser", f"per-bin constants must have n_fft/2+1={frame.n_bins} "
                                f"values, got {normaliser.n_bins}")
            normaliser = None
    units = c.int_in("units", 1, MAX_UNITS)
    specs = {}
    for role in ROLES:
        d = c.get(role, dict)
        if d is None:
            continue
        spec = {"file": c.get("file", str, d, f"{role}.file")}
        sha = c.get("sha256", str, d, f"{role}.sha256")
        if sha is not None and not _SHA_RE.match(sha):
            c.bad(f"{role}.sha256", f"must be 64 lowercase hex digits, got {_short(sha)}")
            sha = None
        spec["sha256"] = sha
        q = c.get("quantization", str, d, f"{role}.quantization")
        if q is not None and q not in QUANTIZATIONS:
            c.bad(f"{role}.quantization", f"must be one of {', '.join(QUANTIZATIONS)}, got {q!r}")
            q = None
        spec["quantization"] = q
        for io in ("input", "output"):
            t = c.get(io, dict, d, f"{role}.{io}")
            if t is None:
                spec[io] = None
                continue
            spec[io] = c.shape("shape", t, f"{role}.{io}.shape")
            dt = c.get("dtype", str, t, f"{role}.{io}.dtype")
            if dt is not None and dt != "float32":
                c.bad(f"{role}.{io}.dtype", f"must be 'float32', got {dt!r}")
        specs[role] = spec
    stats = None
    sd = m.get("unit_stats")
    if sd is not None:
        if not isinstance(sd, dict):
            c.bad("unit_stats", f"must be an object, got {type(sd).__name__}")
        elif units is not None:
            arrays = {k: c.floats(k, units, sd, f"unit_stats.{k}") for k in ("min", "max", "mean")}
            if all(a is not None for a in arrays.values()):
                if np.any(arrays["min"] > arrays["max"]):
                    c.bad("unit_stats", "min must be <= max for every unit")
                else:
                    stats = UnitStats(**arrays)
    labels = None
    if units is not None:
        labels = _check_labels(c, m.get("unit_labels"), units)
    training = m.get("training", {})
    if not isinstance(training, dict):
        c.bad("training", f"must be an object, got {type(training).__name__}")
    # Shapes promised by the manifest must agree with the frame and the units.
    if frame is not None and units is not None:
        want = {"encoder": ((1, frame.n_bins), (1, units)),
                "decoder": ((1, units), (1, frame.n_bins))}
        for role, spec in specs.items():
            for io, shape in zip(("input", "output"), want[role], strict=True):
                if spec.get(io) is not None and spec[io] != shape:
                    c.bad(f"{role}.{io}.shape",
                          f"must be {list(shape)} for n_fft={frame.n_fft} and units={units}, "
                          f"got {list(spec[io])}")
    if problems:
        return None
    return {"name": name, "description": description, "frame": frame,
            "normaliser": normaliser, "units": units, "specs": specs, "stats": stats,
            "labels": labels}


def _check_labels(c: _Checker, v: Any, units: int) -> tuple[str, ...] | None:
    """The optional ``unit_labels``: ``units`` strings of 1..LABEL_MAX_CHARS printable
    ASCII characters each; None (after a Problem) when bad, unit numbers when absent."""
    if v is None:
        return default_labels(units)
    if not isinstance(v, list):
        c.bad("unit_labels", f"must be a list of {units} strings, got {type(v).__name__} "
                             f"{_short(v)}")
        return None
    if len(v) != units:
        c.bad("unit_labels", f"must have {units} labels (one per unit), got {len(v)}")
        return None
    for i, label in enumerate(v):
        if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
            c.bad(f"unit_labels[{i}]", f"must be 1..{LABEL_MAX_CHARS} printable ASCII "
                                       f"characters, got {_short(label)}")
            return None
    return tuple(v)


def _check_model_run(mf: ModelFile, problems: list[Problem], runtime: str | None) -> None:
    """Load the model in TFLite and run a test frame: tensor shapes and finiteness."""
    from device.models.runtime import Model  # the interpreter is heavy: import when needed

    try:
        with Model(mf.content, name=mf.role, runtime=runtime) as model:
            for io, got, want in (("input", model.input_shape, mf.input_shape),
                                  ("output", model.output_shape, mf.output_shape)):
                if got != want:
                    problems.append(Problem(
                        f"{mf.role}.{io}.shape",
                        f"the model's {io} tensor is {list(got)}, the manifest says {list(want)}"))
            if problems:
                return
            rng = np.random.default_rng(0)
            x = rng.uniform(0.0, 1.0, size=mf.input_shape).astype(np.float32)
            y = model.run(x)
            if not np.all(np.isfinite(y)):
                problems.append(Problem(mf.role, "the model's output on a test frame is not "
                                                 "finite (NaN or inf)"))
    except ModelError as e:
        problems.append(Problem(mf.file, str(e)))


def check_bundle(path: str | os.PathLike, *, check_models: bool = True,
                 runtime: str | None = None) -> tuple[Bundle | None, list[Problem]]:
    """Validate a bundle; return (bundle or None, every problem found)."""
    problems: list[Problem] = []
    src = _Source(Path(path), problems)
    try:
        if not src.open():
            return None, problems
        m = _read_manifest(src, problems)
        if m is None:
            return None, problems
        parsed = _check_fields(m, problems)
        if parsed is None:
            return None, problems
        models = {}
        for role, spec in parsed["specs"].items():
            data = src.read(spec["file"], f"{role}.file", MODEL_MAX_BYTES)
            if data is None:
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest != spec["sha256"]:
                problems.append(Problem(f"{role}.sha256", f"checksum mismatch for "
                                        f"{spec['file']!r}: manifest {spec['sha256']}, "
                                        f"file {digest}"))
                continue
            why = _is_flatbuffer_tflite(data)
            if why:
                problems.append(Problem(f"{role}.file", f"{spec['file']!r} {why}"))
                continue
            models[role] = ModelFile(role, spec["file"], digest, spec["input"], spec["output"],
                                     spec["quantization"], data)
        if problems:
            return None, problems
        if check_models:
            for mf in models.values():
                _check_model_run(mf, problems, runtime)
            if problems:
                return None, problems
    finally:
        src.close()
    bundle = Bundle(source=str(path), name=parsed["name"], description=parsed["description"],
                    frame=parsed["frame"], normaliser=parsed["normaliser"],
                    units=parsed["units"], encoder=models["encoder"], decoder=models["decoder"],
                    unit_stats=parsed["stats"], manifest=m, unit_labels=parsed["labels"])
    return bundle, []


def read_bundle(path: str | os.PathLike, *, check_models: bool = True,
                runtime: str | None = None) -> Bundle:
    """Read and validate a bundle; raise :class:`BundleError` listing every problem."""
    bundle, problems = check_bundle(path, check_models=check_models, runtime=runtime)
    if bundle is None:
        raise BundleError(str(path), problems)
    return bundle


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = ["Bundle", "ModelFile", "UnitStats", "check_bundle", "read_bundle", "FORMAT_VERSION",
           "MANIFEST", "AesynthError"]
