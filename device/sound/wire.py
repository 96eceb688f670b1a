"""The wire between the app and its audio process: length-prefixed JSON frames, no pickle.

``[audio] process = "own"`` runs the engine and the audio loop in a child
process (device/sound/audio_child.py) so that no thread of the app (MIDI,
display, USB watcher) can hold the audio thread's GIL.  The two talk over a
pair of pipes in frames: 4 bytes little-endian length, then one UTF-8 JSON
object with a type tag ``"t"``.  Commands (device.state.commands) travel as
their dataclass fields; a motion take as :meth:`MotionTake.to_dict`; nothing
is ever unpickled, so a garbled byte can only ever be a :class:`WireError`.

Why pipes and not a ring in shared memory: a lock-free ring written from
Python has no store barrier between the payload and the index, and the Pi's
ARM cores may reorder the two as the other process sees them; a pipe's
write/read pair is ordered by the kernel, costs a system call (~2 µs) per
frame, and never blocks the audio thread (only the child's reader and
publisher threads touch the pipes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from collections.abc import Iterator
from typing import Any

from device.errors import AesynthError
from device.state import commands as c

MAX_FRAME = 1 << 22  # 4 MiB: a full motion take with its 16,384 moves is ~600 kB of JSON
_HEADER = struct.Struct("<I")


class WireError(AesynthError, ValueError):
    """A frame that is not a message of this protocol (names the limit and the value)."""


# Every command the senses post, by class name; SwapModel carries a loaded model object and
# never crosses the wire (the child loads the model itself from a LoadModel message).
COMMANDS: dict[str, type] = {
    name: cls for name, cls in vars(c).items()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls is not c.SwapModel}


@dataclasses.dataclass(frozen=True, slots=True)
class LoadModel:
    """Child: read the bundle at ``path``, prepare it for ``profile`` and swap to it at the
    next hop boundary (the wire form of :class:`device.state.commands.SwapModel`)."""
    path: str
    profile: str = "safe"
    num_threads: int = 1


def encode(message: dict) -> bytes:
    """One frame: the length, then ``message`` as compact JSON (NaN refused)."""
    try:
        body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise WireError(f"message {message.get('t')!r} cannot be sent: {e}") from None
    if len(body) > MAX_FRAME:
        raise WireError(f"message {message.get('t')!r} is {len(body)} bytes, over the "
                        f"{MAX_FRAME}-byte frame limit")
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Reassembles frames from a byte stream read in arbitrary pieces."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[dict]:
        """The complete messages ``data`` finishes, in order; raises WireError on a frame
        over MAX_FRAME, one that is not JSON, or one that is not an object with a "t"."""
        self._buf += data
        while len(self._buf) >= _HEADER.size:
            (n,) = _HEADER.unpack_from(self._buf)
            if n > MAX_FRAME:
                raise WireError(f"frame of {n} bytes is over the {MAX_FRAME}-byte limit "
                                f"(the stream is garbled)")
            if len(self._buf) < _HEADER.size + n:
                return
            body = bytes(self._buf[_HEADER.size:_HEADER.size + n])
            del self._buf[:_HEADER.size + n]
            try:
                message = json.loads(body)
            except (UnicodeDecodeError, ValueError) as e:
                raise WireError(f"frame of {n} bytes is not JSON: {e}") from None
            if not isinstance(message, dict) or not isinstance(message.get("t"), str):
                raise WireError(f"frame is not a message object with a type \"t\": "
                                f"{body[:60]!r}")
            yield message


def read_messages(fd: int, chunk: int = 65536) -> Iterator[dict]:
    """Messages from ``fd`` until end of file (blocking reads); raises WireError."""
    reader = FrameReader()
    while True:
        data = os.read(fd, chunk)
        if not data:
            return
        yield from reader.feed(data)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (a pipe may take it in pieces)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# -- commands ------------------------------------------------------------------------------
def command_message(cmd: object) -> dict:
    """``cmd`` (a device.state.commands dataclass, a LoadModel or a Rejected report) as a
    message; raises WireError for anything else (SwapModel included: send LoadModel)."""
    from device.state.modulation import MotionTake

    name = type(cmd).__name__
    if isinstance(cmd, LoadModel):
        return {"t": "LoadModel", **dataclasses.asdict(cmd)}
    if name == "Rejected" and hasattr(cmd, "command") and hasattr(cmd, "error"):
        return {"t": "Rejected", "command": _command_or_name(cmd.command), "error": cmd.error}
    if COMMANDS.get(name) is not type(cmd):
        raise WireError(f"command {name} cannot cross to the audio process (a model loaded "
                        f"here is sent as LoadModel(path))")
    fields = {f.name: getattr(cmd, f.name) for f in dataclasses.fields(cmd)}
    if isinstance(cmd, c.LoadMotion):
        take = fields["take"]
        if not isinstance(take, MotionTake):
            raise WireError(f"LoadMotion.take must be a MotionTake, got {type(take).__name__}")
        fields["take"] = take.to_dict()
    return {"t": name, **fields}


def _command_or_name(cmd: object) -> dict:
    try:
        return command_message(cmd)
    except WireError:
        return {"t": type(cmd).__name__, "unsent": True}


def command_of(message: dict) -> object:
    """The command a :func:`command_message` message carries; raises WireError naming the
    type and the field when it is not one (an unknown type, a missing or extra field)."""
    from device.errors import ControlError
    from device.state.modulation import MotionTake

    name = message.get("t")
    fields = {k: v for k, v in message.items() if k != "t"}
    if name == "LoadModel":
        cls: type = LoadModel
    elif name == "Rejected":
        inner = fields.get("command")
        command = (command_of(inner) if isinstance(inner, dict) and not inner.get("unsent")
                   else inner)
        from device.sound.audio import Rejected

        return Rejected(command, str(fields.get("error")))
    elif name in COMMANDS:
        cls = COMMANDS[name]
    else:
        raise WireError(f"unknown command type {name!r}")
    if cls is c.LoadMotion and isinstance(fields.get("take"), dict):
        try:
            take = fields["take"]
            fields["take"] = MotionTake.from_dict(take, units=take.get("units"))
        except ControlError as e:
            raise WireError(f"LoadMotion.take: {e}") from None
    try:
        return cls(**fields)
    except TypeError as e:
        raise WireError(f"command {name}: {e}") from None


# -- what the child publishes -------------------------------------------------------------
def snapshot_message(snap: Any, *, send_take: bool) -> dict:
    """An :class:`~device.sound.engine.EngineSnapshot` as a message; the motion take (up to
    hundreds of kB) only when ``send_take`` (it changed), else ``"take": "same"``."""
    ctl = snap.controls
    controls = {f.name: getattr(ctl, f.name) for f in dataclasses.fields(ctl)}
    take = controls["take"]
    controls["take"] = (None if take is None else take.to_dict()) if send_take else "same"
    return {"t": "snapshot", "mode": snap.mode, "model": snap.model, "units": snap.units,
            "hops": snap.hops, "motion": snap.motion, "note": snap.note,
            "labels": list(snap.labels), "controls": controls}


def snapshot_of(message: dict, previous_take: object = None) -> Any:
    """The EngineSnapshot a :func:`snapshot_message` carries (a take of ``"same"`` is
    ``previous_take``); raises WireError when it is malformed."""
    from device.sound.engine import EngineSnapshot
    from device.state.controls import ControlsSnapshot
    from device.state.modulation import MotionTake

    try:
        ctl = dict(message["controls"])
        take = ctl["take"]
        if take == "same":
            ctl["take"] = previous_take
        elif take is not None:
            ctl["take"] = MotionTake.from_dict(take, units=take.get("units"))
        for key in ("gain", "scale", "muted", "lfo_rate", "lfo_depth", "lfo_shape"):
            ctl[key] = tuple(ctl[key])
        return EngineSnapshot(message["mode"], message["model"], message["units"],
                              ControlsSnapshot(**ctl), message["hops"], message["motion"],
                              message["note"], tuple(message["labels"]))
    except (KeyError, TypeError, AttributeError, AesynthError) as e:
        raise WireError(f"snapshot message is malformed: {type(e).__name__}: {e}") from None
