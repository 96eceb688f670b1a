"""Presets and the last state: the unit controls of each model, kept on disk.

The gesture on the nanoKONTROL2 (the MIDI mapping, device.senses.nanokontrol2,
sends the commands; both are decided when S n is released):

- **S n held at least ``preset_hold_s``** (1 s by default): save the
  current unit state of this model as preset n
  (:class:`~device.state.commands.SavePreset`, slot n = 1..8).
- **S n pressed and released sooner**: recall preset n
  (:class:`~device.state.commands.RecallPreset`); an empty slot changes nothing
  and says so.

Marker Set is the paper's Set (ZeroAll, on press); it plays no part here.

Each preset is its own small JSON file, ``DIR/MODEL/preset-N.json``, and the
state at the last change is ``DIR/MODEL/last.json`` (restored at boot).

Motion: the LFO settings are per-unit keys; the motion recorder's last finished
take (:class:`~device.state.modulation.MotionTake`) and whether it was looping
are the ``motion`` key.  A preset embeds its take.  The last state, rewritten
every couple of seconds while a take loops, names its take by SHA-256 and keeps
it in ``last-take.json``, written only when the take changes (a full take is
~0.6 MB: rewriting it every 2 s would wear an SD card for nothing).
Every file is written atomically (temporary file, fsync, rename, fsync of
the directory), so a power cut leaves the old preset or the new one.  A file
that is corrupt, for the wrong unit count, or holds values out of range is
reported (log and the ``report`` callback, e.g. the OLED) and ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

from device.state import commands as c
from device.state.atomic import read_json, remove_leftovers, write_json_atomic
from device.state.controls import (
    GAIN_RANGE,
    LFO_DEFAULT_RATE,
    LFO_DEPTH_RANGE,
    LFO_RATE_RANGE,
    SCALE_RANGE,
    ControlsSnapshot,
)
from device.errors import ControlError
from device.sound.scheduling import name_thread
from device.state.modulation import MOTION_EVENTS, MotionTake

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SLOTS = range(0, 128)  # the gesture uses 1..8; a config may map more buttons
MAX_UNITS = 4096
_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(:[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$")
# 4096 units of six values, or a full take (MOTION_EVENTS moves of ~40 bytes), with room to spare
_MAX_BYTES = 4 << 20
TAKE_FILE = "last-take.json"


class PresetStore:
    """Per-model presets and last state under ``directory``.

    ``report(message)`` is called (besides logging) when a file is refused,
    so the app can show it; it must not block.
    """

    def __init__(self, directory: str | os.PathLike, *,
                 report: Callable[[str], None] | None = None):
        self.directory = Path(directory)
        self.report = report
        self._take_written: dict[str, tuple[object, str]] = {}  # model → (take, its SHA-256)

    def save(self, model: str, slot: int, snap: ControlsSnapshot) -> Path:
        """Save ``snap`` as preset ``slot`` of ``model``; returns the file."""
        return self._write(self._path(model, _slot(slot)), model, snap, slot)

    def load(self, model: str, slot: int, *, units: int | None = None) -> ControlsSnapshot | None:
        """Preset ``slot`` of ``model``; None when empty or refused (then reported)."""
        return self._read(self._path(model, _slot(slot)), units)

    def save_last(self, model: str, snap: ControlsSnapshot) -> Path:
        """Remember ``snap`` as the state to restore at boot for ``model``.

        Its take goes to ``last-take.json`` first, only when it is not the take
        this store last wrote there, so last.json never names a take not on disk.
        """
        motion = None
        if snap.take is not None:
            written = self._take_written.get(model)
            if written is not None and written[0] is snap.take:
                digest = written[1]
            else:
                doc = snap.take.to_dict()
                digest = _digest(doc)
                path = self._model_dir(model) / TAKE_FILE
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(path, doc)
                self._take_written[model] = (snap.take, digest)
            motion = {"state": snap.take_state, "take_sha256": digest}
        return self._write(self._path(model, None), model, snap, None, motion=motion)

    def load_last(self, model: str, *, units: int | None = None) -> ControlsSnapshot | None:
        return self._read(self._path(model, None), units)

    def slots(self, model: str) -> list[int]:
        """The saved preset slots of ``model``, ascending."""
        try:
            names = os.listdir(self._model_dir(model))
        except FileNotFoundError:
            return []
        found = (re.fullmatch(r"preset-(\d{1,3})\.json", n) for n in names)
        return sorted(int(m.group(1)) for m in found if m and int(m.group(1)) in SLOTS)

    # -- internals -------------------------------------------------------------
    def _model_dir(self, model: str) -> Path:
        if not isinstance(model, str) or not _MODEL_RE.match(model):
            raise ControlError(f"model name must be 1..64 characters [A-Za-z0-9._-] "
                               f"(optionally 'origin:name'), got {model!r}")
        return self.directory / model

    def _path(self, model: str, slot: int | None) -> Path:
        d = self._model_dir(model)
        return d / ("last.json" if slot is None else f"preset-{slot}.json")

    def _write(self, path: Path, model: str, snap: ControlsSnapshot, slot: int | None, *,
               motion: dict | None = None) -> Path:
        _check_snapshot(snap)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path.parent, for_name=path.name)
        doc = {"format_version": FORMAT_VERSION, "model": model, "slot": slot,
               "units": snap.units, "page": snap.page, "gain": list(snap.gain),
               "scale": list(snap.scale), "muted": list(snap.muted),
               **_lfo_dict(snap)}
        if motion is not None:
            doc["motion"] = motion
        elif snap.take is not None:
            doc["motion"] = {"state": snap.take_state, **snap.take.to_dict()}
        write_json_atomic(path, doc)
        return path

    def _read(self, path: Path, units: int | None) -> ControlsSnapshot | None:
        doc, why = read_json(path, max_bytes=_MAX_BYTES)
        if why is None and doc is None:
            return None  # never saved
        if why is None:
            try:
                if isinstance(doc, dict) and isinstance(doc.get("motion"), dict) \
                        and "take_sha256" in doc["motion"]:
                    try:
                        doc = {**doc, "motion": self._take_file(path.parent, doc["motion"])}
                    except ControlError as e:  # the controls are still good: keep them
                        self._report(f"ignoring the last motion take: {e}")
                        doc = {k: v for k, v in doc.items() if k != "motion"}
                snap = snapshot_from_dict(doc)
                if units is not None and snap.units != units:
                    raise ControlError(f"is for {snap.units} units, this model has {units}")
                return snap
            except ControlError as e:
                why = f"{str(path)!r} {e}"
        self._report(f"ignoring preset file: {why}")
        return None

    def _take_file(self, model_dir: Path, motion: dict) -> dict:
        """The last state's ``motion`` with its take read from last-take.json; ControlError
        when that file is missing, corrupt or is not the take last.json names."""
        take, why = read_json(model_dir / TAKE_FILE, max_bytes=_MAX_BYTES)
        if why is None and take is None:
            why = "is missing"
        if why is None and _digest(take) != motion["take_sha256"]:
            why = "is not the take last.json names (SHA-256 differs)"
        if why is not None or not isinstance(take, dict):
            raise ControlError(f"motion take {TAKE_FILE} {why or 'must hold a JSON object'}")
        return {"state": motion.get("state"), **take}

    def _report(self, message: str) -> None:
        log.warning("%s", message)
        if self.report is not None:
            try:
                self.report(message)
            except Exception:  # noqa: BLE001 -- a broken display must not lose the preset
                log.exception("preset report callback failed")

    def __repr__(self) -> str:
        return f"<PresetStore {str(self.directory)!r}>"


def _slot(slot: int) -> int:
    if isinstance(slot, bool) or not isinstance(slot, int) or slot not in SLOTS:
        raise ControlError(f"preset slot must be in {SLOTS.start}..{SLOTS.stop - 1}, "
                           f"got {slot!r}")
    return slot


def _lfo_dict(snap: ControlsSnapshot) -> dict:
    """The LFO settings of every unit (rate Hz, depth, shape name), as preset keys."""
    lfos = [snap.lfo(u) for u in range(snap.units)]
    return {"lfo_rate": [r for r, _, _ in lfos], "lfo_depth": [d for _, d, _ in lfos],
            "lfo_shape": [s for _, _, s in lfos]}


def _digest(doc: object) -> str:
    """SHA-256 of a JSON document in its canonical form (sorted keys, no spaces)."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_snapshot(snap: ControlsSnapshot) -> None:
    snapshot_from_dict({"units": snap.units, "page": snap.page, "gain": list(snap.gain),
                        "scale": list(snap.scale), "muted": list(snap.muted),
                        **_lfo_dict(snap)})


def snapshot_from_dict(doc: object) -> ControlsSnapshot:
    """A ControlsSnapshot from a preset's JSON; ControlError naming the bad field."""
    if not isinstance(doc, dict):
        raise ControlError(f"must hold a JSON object, got {type(doc).__name__}")
    units = doc.get("units")
    if isinstance(units, bool) or not isinstance(units, int) or not 1 <= units <= MAX_UNITS:
        raise ControlError(f"units must be an integer in 1..{MAX_UNITS}, got {units!r}")

    def values(key: str, lo: float, hi: float) -> tuple[float, ...]:
        v = doc.get(key)
        if not isinstance(v, list) or len(v) != units:
            raise ControlError(f"{key} must be a list of {units} numbers, got "
                               f"{type(v).__name__} of {len(v) if isinstance(v, list) else 0}")
        for x in v:
            if (isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)
                    or not lo <= x <= hi):
                raise ControlError(f"{key} values must be in {lo}..{hi}, got {x!r}")
        return tuple(float(x) for x in v)

    gain = values("gain", *GAIN_RANGE)
    scale = values("scale", *SCALE_RANGE)
    # LFO keys came with format 1's motion: a preset saved before them has every LFO off.
    lfo_rate = values("lfo_rate", *LFO_RATE_RANGE) if "lfo_rate" in doc \
        else (LFO_DEFAULT_RATE,) * units
    lfo_depth = values("lfo_depth", *LFO_DEPTH_RANGE) if "lfo_depth" in doc \
        else (0.0,) * units
    shapes = doc.get("lfo_shape", [c.LFO_SHAPES[0]] * units)
    if not isinstance(shapes, list) or len(shapes) != units or not all(
            s in c.LFO_SHAPES for s in shapes):
        raise ControlError(f"lfo_shape must be a list of {units} of "
                           f"{', '.join(c.LFO_SHAPES)}")
    muted = doc.get("muted")
    if not isinstance(muted, list) or len(muted) != units or not all(
            isinstance(m, bool) for m in muted):
        raise ControlError(f"muted must be a list of {units} true/false values")
    pages = -(-units // c.UNITS_PER_PAGE)
    page = doc.get("page", 0)
    if isinstance(page, bool) or not isinstance(page, int) or not 0 <= page < pages:
        page = 0  # the view is not worth refusing a preset for
    take, take_state = None, "stop"
    motion = doc.get("motion")  # absent: saved before takes were kept, or no take yet
    if motion is not None:
        if not isinstance(motion, dict) or motion.get("state") not in ("loop", "stop"):
            raise ControlError("motion must be an object with state loop or stop")
        take_state = motion["state"]
        take = MotionTake.from_dict(motion, units=units, capacity=MOTION_EVENTS)
    return ControlsSnapshot(units, page, pages, gain, scale, tuple(muted), lfo_rate,
                            lfo_depth, tuple(shapes), take, take_state)


def commands_for(snap: ControlsSnapshot, current: ControlsSnapshot | None = None) -> list:
    """The unit commands that turn ``current`` (or any state) into ``snap``.

    Recalling a preset posts these on the command queue like any controller
    move, so the audio thread applies them at a hop boundary.
    """
    if current is not None and current.units != snap.units:
        raise ControlError(f"preset is for {snap.units} units, this model has {current.units}")
    cmds: list = []
    for u in range(snap.units):
        if current is None or current.gain[u] != snap.gain[u]:
            cmds.append(c.SetGain(u, snap.gain[u]))
        if current is None or current.scale[u] != snap.scale[u]:
            cmds.append(c.SetScale(u, snap.scale[u]))
        if current is None or current.muted[u] != snap.muted[u]:
            cmds.append(c.SetMute(u, snap.muted[u]))
        rate, depth, shape = snap.lfo(u)
        now = None if current is None else current.lfo(u)
        if now is None or now[0] != rate:
            cmds.append(c.SetLfoRate(u, rate))
        if now is None or now[1] != depth:
            cmds.append(c.SetLfoDepth(u, depth))
        if now is None or now[2] != shape:
            cmds.append(c.SetLfoShape(u, shape))
    # The take last: a looping take restores its start state at its first hop anyway.
    if snap.take is not None:
        if current is None or current.take != snap.take or current.take_state != snap.take_state:
            cmds.append(c.LoadMotion(snap.take, snap.take_state))
    elif current is not None and current.take_state == "loop":
        cmds.append(c.SetMotion("stop"))  # a preset without motion holds still
    return cmds


class LastStateKeeper:
    """Saves the last state off the caller's thread, at most every ``interval_s``.

    ``offer(model, snap)`` only stores a reference (safe to call from any
    thread, cheap, no I/O); a background thread writes the newest offer when
    it differs from what is on disk.  ``close()`` writes what is pending.
    """

    def __init__(self, store: PresetStore, *, interval_s: float = 2.0):
        self.store = store
        self.interval_s = interval_s
        self._pending: tuple[str, ControlsSnapshot] | None = None
        self._written: tuple[str, ControlsSnapshot] | None = None
        self._last_error: tuple | None = None  # a read-only disk fails every interval: log once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="last-state", daemon=True)
        self._thread.start()

    def offer(self, model: str, snap: ControlsSnapshot) -> None:
        self._pending = (model, snap)  # one reference store: atomic, no lock

    def flush(self) -> None:
        pending = self._pending
        if pending is not None and pending != self._written:
            try:
                self.store.save_last(*pending)
            except (OSError, ControlError) as e:
                # errno, not the message: that names a new temporary file every time
                key = (pending[0], type(e), e.errno if isinstance(e, OSError) else str(e))
                if key != self._last_error:
                    log.warning("cannot save the last state of %s: %s (not repeated while "
                                "it fails so)", pending[0], e)
                    self._last_error = key
                return
            self._written = pending
            if self._last_error is not None:
                log.info("saving the last state of %s works again", pending[0])
                self._last_error = None

    def _run(self) -> None:
        name_thread()
        while not self._stop.wait(self.interval_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()

    def __repr__(self) -> str:
        return f"<LastStateKeeper {self.store!r} every {self.interval_s} s>"
