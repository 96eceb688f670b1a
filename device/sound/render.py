"""``aesynth render``: the engine offline, file in, WAV out, with timed control changes.

For listening and for tests: the same :class:`device.sound.engine.Engine` the
instrument runs, hop by hop, as fast as the CPU allows.

Controls file (JSON; documented for users in docs/render.md, which a test keeps
in step with :data:`EVENT_KEYS`): a list of events, each an object with ``"t"`` (seconds
from the start of the output, >= 0) and one or more changes; events are
applied, in order of ``t`` (ties in file order), at the first hop boundary at
or after ``t``::

    [{"t": 1.5, "gain": [0, 0.3]},        # unit 0's fader to 0.3 (0..1)
     {"t": 1.5, "scale": [2, 1.8]},       # unit 2's knob to 1.8 (0..2)
     {"t": 2.0, "mute": 3},               # toggle unit 3's mute
     {"t": 2.0, "muted": [4, true]},      # set unit 4's mute
     {"t": 2.2, "zero": true},            # Set: every unit to 0
     {"t": 2.4, "reset": true},           # Record: every unit back to 1, unmuted
     {"t": 2.5, "mode": "generate"},      # original | resynth | generate
     {"t": 3.0, "lfo": {"unit": 0, "rate": 0.5, "depth": 1.0, "shape": "sine"}},
                                          # any of rate (Hz, 0.01..20), depth (0..1),
                                          # shape (sine|triangle|square|saw|random);
                                          # a list of such objects sets several units
     {"t": 3.0, "motion": "record"},      # record | loop | stop (the motion recorder)
     {"t": 3.0, "gate": {"reference": 60, "attack": 0.01, "release": 0.25}},
                                          # any of them: note played untransposed, s, s
     {"t": 4.0, "note_on": 72},           # or [note, velocity]; notes 0..127
     {"t": 5.0, "note_off": 72},
     {"t": 6.0, "notes_off": true},       # every key up; "drone": back to the drone
     {"t": 3.0, "reference_dbfs": -24},   # program level with no input (dB RMS, -60..0)
     {"t": 3.0, "ceiling_dbfs": -3}]      # the output limiter's ceiling (dBFS, -20..0)

Within one event the changes apply in the order above.  Until the first
``note_on`` generate mode is a drone (untransposed, gate open: device/sound/pitch.py).
Generate mode ignores the input; ``--seconds`` sets the output length (default: the input's).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.state import commands as c
from device.errors import ConfigError

log = logging.getLogger(__name__)

EVENT_KEYS = ("gain", "scale", "mute", "muted", "zero", "reset", "mode", "lfo", "motion",
              "gate", "note_on", "note_off", "notes_off", "reference_dbfs", "ceiling_dbfs")
OUT_SUFFIXES = (".wav", ".flac")  # formats soundfile writes as 16-bit PCM
LEVEL_RANGES = {"reference_dbfs": (-60.0, 0.0), "ceiling_dbfs": (-20.0, 0.0)}


@dataclass(frozen=True)
class TimedCommand:
    t: float
    command: object


def _pair(where: str, v: Any, boolean: bool = False) -> tuple[int, Any]:
    """[unit, number] (or [unit, true|false] when ``boolean``)."""
    ok = isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) \
        and not isinstance(v[0], bool)
    if ok:
        ok = isinstance(v[1], bool) if boolean else (
            isinstance(v[1], int | float) and not isinstance(v[1], bool)
            and math.isfinite(v[1]))  # JSON as Python reads it allows NaN and Infinity
    if not ok:
        what = "true|false" if boolean else "finite number"
        raise ConfigError(f"{where} must be [unit, {what}], got {v!r}")
    return v[0], v[1]


def parse_controls(events: Any, *, source: str = "controls") -> list[TimedCommand]:
    """The timed command list of a controls document (see the module docstring)."""
    if not isinstance(events, list):
        raise ConfigError(f"{source} must be a JSON list of events, got "
                          f"{type(events).__name__}")
    out: list[TimedCommand] = []
    for i, ev in enumerate(events):
        where = f"{source}[{i}]"
        if not isinstance(ev, dict):
            raise ConfigError(f"{where} must be an object, got {ev!r}")
        t = ev.get("t")
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) \
                or t < 0:
            raise ConfigError(f"{where}.t must be seconds >= 0, got {t!r}")
        unknown = sorted(set(ev) - {"t", *EVENT_KEYS})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: t, "
                              f"{', '.join(EVENT_KEYS)}")
        if len(ev) == 1:
            raise ConfigError(f"{where} changes nothing: give one of {', '.join(EVENT_KEYS)}")
        for key in EVENT_KEYS:
            if key not in ev:
                continue
            v = ev[key]
            if key == "gain":
                cmd: object = c.SetGain(*_pair(f"{where}.gain", v))
            elif key == "scale":
                cmd = c.SetScale(*_pair(f"{where}.scale", v))
            elif key == "mute":
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ConfigError(f"{where}.mute must be a unit number, got {v!r}")
                cmd = c.ToggleMute(v)
            elif key == "muted":
                cmd = c.SetMute(*_pair(f"{where}.muted", v, True))
            elif key in ("zero", "reset"):
                if v is not True:
                    raise ConfigError(f"{where}.{key} must be true, got {v!r}")
                cmd = c.ZeroAll() if key == "zero" else c.ResetAll()
            elif key in LEVEL_RANGES:
                lo, hi = LEVEL_RANGES[key]
                if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
                    raise ConfigError(f"{where}.{key} must be a number in {lo:g}..{hi:g}, "
                                      f"got {v!r}")
                cmd = c.SetLevel(**{key: float(v)})
            elif key == "mode":
                if v not in c.MODES:
                    raise ConfigError(f"{where}.mode must be one of {', '.join(c.MODES)}, "
                                      f"got {v!r}")
                cmd = c.SetMode(v)
            else:
                out.extend(TimedCommand(float(t), cmd) for cmd in _motion_pitch(where, key, v))
                continue
            out.append(TimedCommand(float(t), cmd))
    out.sort(key=lambda tc: tc.t)  # stable: ties keep file order
    return out


def _number(where: str, v: Any, lo: float, hi: float, unit: str = "") -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
            or not lo <= v <= hi:
        raise ConfigError(f"{where} must be a number in {lo}..{hi}{unit}, got {v!r}")
    return float(v)


def _note(where: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 127:
        raise ConfigError(f"{where} must be a note number in 0..127, got {v!r}")
    return v


def _table(where: str, v: Any, keys: tuple[str, ...]) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(f"{where} must be an object with {', '.join(keys)}, got {v!r}")
    unknown = sorted(set(v) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(keys)}")
    return v


def _motion_pitch(where: str, key: str, v: Any) -> list[object]:
    """The commands of an lfo, motion, gate or note event (checked here, so that a bad
    value is reported before rendering starts)."""
    from device.state.controls import LFO_DEPTH_RANGE, LFO_RATE_RANGE
    from device.sound.pitch import GATE_TIME_RANGE

    w = f"{where}.{key}"
    if key == "lfo":
        items = v if isinstance(v, list) else [v]
        cmds: list[object] = []
        for i, item in enumerate(items):
            wi = f"{w}[{i}]" if isinstance(v, list) else w
            item = _table(wi, item, ("unit", "rate", "depth", "shape"))
            unit = item.get("unit")
            if isinstance(unit, bool) or not isinstance(unit, int) or unit < 0:
                raise ConfigError(f"{wi}.unit must be a unit number >= 0, got {unit!r}")
            if len(item) == 1:
                raise ConfigError(f"{wi} changes nothing: give rate, depth or shape")
            if "rate" in item:
                cmds.append(c.SetLfoRate(unit, _number(f"{wi}.rate", item["rate"],
                                                       *LFO_RATE_RANGE, " Hz")))
            if "depth" in item:
                cmds.append(c.SetLfoDepth(unit, _number(f"{wi}.depth", item["depth"],
                                                        *LFO_DEPTH_RANGE)))
            if "shape" in item:
                if item["shape"] not in c.LFO_SHAPES:
                    raise ConfigError(f"{wi}.shape must be one of {', '.join(c.LFO_SHAPES)}, "
                                      f"got {item['shape']!r}")
                cmds.append(c.SetLfoShape(unit, item["shape"]))
        return cmds
    if key == "motion":
        if v not in c.MOTION_STATES:
            raise ConfigError(f"{w} must be one of {', '.join(c.MOTION_STATES)}, got {v!r}")
        return [c.SetMotion(v)]
    if key == "gate":
        g = _table(w, v, ("reference", "attack", "release"))
        default = c.SetNoteGate()
        return [c.SetNoteGate(
            _note(f"{w}.reference", g.get("reference", default.reference)),
            _number(f"{w}.attack", g.get("attack", default.attack_s), *GATE_TIME_RANGE, " s"),
            _number(f"{w}.release", g.get("release", default.release_s), *GATE_TIME_RANGE,
                    " s"))]
    if key == "note_on":
        if isinstance(v, list):
            if len(v) != 2:
                raise ConfigError(f"{w} must be a note or [note, velocity], got {v!r}")
            vel = v[1]
            if isinstance(vel, bool) or not isinstance(vel, int) or not 1 <= vel <= 127:
                raise ConfigError(f"{w} velocity must be in 1..127, got {vel!r}")
            return [c.NoteOn(_note(w, v[0]), vel)]
        return [c.NoteOn(_note(w, v))]
    if key == "note_off":
        return [c.NoteOff(_note(w, v))]
    if v is not True and v != "drone":
        raise ConfigError(f"{w} must be true or \"drone\", got {v!r}")
    return [c.NotesOff(drone=v == "drone")]


def load_controls(path: str | os.PathLike) -> list[TimedCommand]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read controls file {os.fspath(path)!r}: "
                          f"{(e.strerror or str(e)).lower()}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"controls file {os.fspath(path)!r} is not valid JSON: {e}") from None
    return parse_controls(doc, source=os.path.basename(os.fspath(path)))


def render(engine: Any, samples: np.ndarray, controls: list[TimedCommand] = (),
           *, n_samples: int | None = None, stats: dict | None = None) -> np.ndarray:
    """Run ``engine`` over ``samples`` (mono, the engine's rate) hop by hop.

    Returns ``n_samples`` (default ``len(samples)``) output samples, float32;
    the input is zero-padded past its end.  Commands apply at the first hop
    boundary at or after their time.  ``stats``, when given, receives ``hops``,
    ``limited_hops`` (hops where the output limiter reduced the gain) and
    ``max_reduction_db``.
    """
    R = engine.hop_length
    rate = engine.frame.sample_rate
    n = len(samples) if n_samples is None else n_samples
    hops = -(-n // R)
    x = np.zeros(hops * R)
    m = min(len(samples), len(x))
    x[:m] = samples[:m]
    y = np.zeros(hops * R)
    block_out = np.zeros(R)
    pending = list(controls)
    k = 0
    limited = 0
    most = 0.0
    for h in range(hops):
        while k < len(pending) and pending[k].t * rate <= h * R:
            engine.apply(pending[k].command)
            k += 1
        engine.process(x[h * R:(h + 1) * R], block_out)
        y[h * R:(h + 1) * R] = block_out
        gr = getattr(getattr(engine, "limiter", None), "hop_reduction_db", 0.0)
        limited += gr > 0.0
        most = max(most, gr)
    if stats is not None:
        stats.update(hops=hops, limited_hops=int(limited), max_reduction_db=most)
    return y[:n].astype(np.float32)


def limiter_summary(*, hops: int, limited_hops: int, max_reduction_db: float) -> str:
    """The render summary's words on the output limiter, from :func:`render`'s stats."""
    if f"{max_reduction_db:.1f}" == "0.0":  # the figure the line would print
        # "at most 0.0 dB" read as a fault; a reduction too small to print is none to hear.
        if limited_hops:
            return (f"limiter did not act (under 0.05 dB of gain reduction in "
                    f"{limited_hops} of {hops} hops)")
        return f"limiter did not act in {hops} hops"
    return (f"limiter active in {limited_hops} of {hops} hops (at most "
            f"{max_reduction_db:.1f} dB of gain reduction)")


def add_parser(subparsers: Any) -> None:
    from device.sound.phase import PHASES

    p = subparsers.add_parser(
        "render", help="run the engine offline: audio file in, WAV out",
        description="Run the engine offline over an audio file, with a timed list of control "
                    "changes (JSON; see docs/render.md), and write a WAV.")
    p.add_argument("--model", required=True, help="model bundle (directory or .zip)")
    p.add_argument("--mode", choices=c.MODES, default="resynth", help="starting mode")
    p.add_argument("--in", dest="input", help="input audio file (any format soundfile "
                   "reads); required unless --mode generate with --seconds")
    p.add_argument("--out", required=True, help="output file (.wav, or .flac); its folder "
                   "must exist")
    p.add_argument("--controls", help="JSON file of timed control changes")
    p.add_argument("--phase", choices=PHASES, default="rtpghi",
                   help="phase for generate mode (default rtpghi)")
    p.add_argument("--seconds", type=float, help="output length (default: the input's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import soundfile as sf

    from device.sound.audio import FileSource
    from device.models.bundle import read_bundle
    from device.sound.engine import Engine
    from device.errors import AesynthError

    from device.state.paths import check_output_file

    try:
        # Before any work: an hour's render must not fail at its last step.
        check_output_file(args.out, what="--out", suffixes=OUT_SUFFIXES)
        bundle = read_bundle(args.model)
        controls = load_controls(args.controls) if args.controls else []
        rate = bundle.frame.sample_rate
        if args.input:
            samples = FileSource.load(args.input, rate).samples
        elif args.mode == "generate" and args.seconds:
            samples = np.zeros(0, dtype=np.float32)
        else:
            raise ConfigError("--in is required (only --mode generate with --seconds "
                              "renders without input)")
        if args.seconds is not None and not 0 < args.seconds <= 3600:
            raise ConfigError(f"--seconds must be in 0..3600, got {args.seconds}")
        n = len(samples) if args.seconds is None else int(round(args.seconds * rate))
        engine = Engine(bundle, phase=args.phase, mode=args.mode)
        try:
            stats: dict = {}
            y = render(engine, samples, controls, n_samples=n, stats=stats)
            nonfinite = engine.nonfinite_inputs
        finally:
            engine.close()
    except AesynthError as e:
        print(f"aesynth render: {e}")
        return 1
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak > 1.0:
        log.warning("output peaks at %.2f (> 1): clipped in the WAV", peak)
    try:
        sf.write(args.out, np.clip(y, -1.0, 1.0), rate, subtype="PCM_16")
    except (sf.LibsndfileError, RuntimeError, OSError) as e:  # a disk full since the check
        print(f"aesynth render: cannot write --out {args.out!r}: {e}")
        return 1
    print(f"wrote {args.out}: {len(y) / rate:.2f} s at {rate} Hz, mode {args.mode}, "
          f"{len(controls)} control change(s), peak {peak:.3f}, "
          f"{limiter_summary(**stats)}")
    if nonfinite:
        print(f"{args.input}: {nonfinite} non-finite input sample(s) replaced by silence")
    return 0
