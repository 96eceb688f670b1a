"""The wire to the audio process: every command crosses and comes back equal; garbage is a
one-line WireError, never a traceback or a silently wrong command."""

from __future__ import annotations

import dataclasses
import os
import struct

import pytest

from device.sound.audio import Rejected
from device.sound.wire import (COMMANDS, MAX_FRAME, FrameReader, LoadModel, WireError,
                               command_message, command_of, encode, read_messages,
                               snapshot_message, snapshot_of)
from device.state import commands as c
from device.state.controls import UnitControls
from tests.device.test_motion_takes import a_take

# commands.py's field annotations, as strings (postponed evaluation), and a value of each
SAMPLE = {"int": 3, "float": 0.25, "str": "generate", "bool": True, "float | None": -12.0,
          "object": None}

def an_instance(cls):
    values = {f.name: SAMPLE[f.type] for f in dataclasses.fields(cls)}
    if cls is c.LoadMotion:
        values["take"] = a_take()
    return cls(**values)

@pytest.mark.parametrize("cls", sorted(COMMANDS.values(), key=lambda k: k.__name__),
                         ids=lambda k: k.__name__)
def test_every_command_crosses_the_wire_unchanged(cls):
    cmd = an_instance(cls)
    (message,) = FrameReader().feed(encode(command_message(cmd)))
    assert command_of(message) == cmd


def test_every_command_class_but_swapmodel_is_on_the_wire():
    dataclass_commands = {n for n, k in vars(c).items()
                          if isinstance(k, type) and dataclasses.is_dataclass(k)}
    assert dataclass_commands - set(COMMANDS) == {"SwapModel"}


def test_a_loaded_model_never_crosses_only_its_path():
    with pytest.raises(WireError, match="SwapModel cannot cross to the audio process"):
        command_message(c.SwapModel(object()))
    load = LoadModel("/models/wide16", "low", 2)
    assert command_of(command_message(load)) == load


def test_rejected_reports_carry_their_command():
    report = Rejected(c.SetGain(9, 0.5), "unit 9 out of 0..7")
    back = command_of(command_message(report))
    assert back == report
    unsent = command_of(command_message(Rejected(c.SwapModel(None), "x")))
    assert unsent.command == {"t": "SwapModel", "unsent": True}


def test_frames_reassemble_from_any_split():
    data = b"".join(encode(command_message(c.SetGain(u, u / 10))) for u in range(5))
    reader = FrameReader()
    got = [m for i in range(len(data)) for m in reader.feed(data[i:i + 1])]
    assert [command_of(m) for m in got] == [c.SetGain(u, u / 10) for u in range(5)]


@pytest.mark.parametrize(("data", "match"), [
    (struct.pack("<I", MAX_FRAME + 1), f"over the {MAX_FRAME}-byte limit"),
    (struct.pack("<I", 3) + b"\xff\xfe{", "not JSON"),
    (struct.pack("<I", 2) + b"[]", r"not a message object with a type"),
    (struct.pack("<I", 9) + b'{"t": 12}', r"not a message object with a type"),
])
def test_garbled_frames_are_wire_errors(data, match):
    with pytest.raises(WireError, match=match):
        list(FrameReader().feed(data))


@pytest.mark.parametrize(("message", "match"), [
    ({"t": "Explode"}, "unknown command type 'Explode'"),
    ({"t": "SetGain", "unit": 1}, "command SetGain: .*value"),
    ({"t": "SetGain", "unit": 1, "value": 0.5, "extra": 1}, "command SetGain: .*extra"),
    ({"t": "LoadMotion", "take": {"units": 2, "length": 0}, "state": "loop"},
     "LoadMotion.take: motion length must be"),
])
def test_bad_commands_name_the_type_and_the_field(message, match):
    with pytest.raises(WireError, match=match):
        command_of(message)


def test_nan_and_objects_are_refused_at_the_sender():
    with pytest.raises(WireError, match="SetGain.*cannot be sent"):
        encode(command_message(c.SetGain(0, float("nan"))))
    with pytest.raises(WireError, match="LoadMotion.take must be a MotionTake"):
        command_message(c.LoadMotion(take=object()))


def test_snapshots_cross_and_a_take_only_when_it_changed():
    from device.sound.engine import EngineSnapshot

    ctl = UnitControls(2)
    ctl.apply(c.SetScale(1, 1.5))
    take = a_take()
    snap = EngineSnapshot("generate", "default", 2, ctl.snapshot(take, "loop"), 77, "loop",
                          "C4", ("low", "air"))
    full = snapshot_message(snap, send_take=True)
    assert snapshot_of(full) == snap
    light = snapshot_message(snap, send_take=False)
    assert light["controls"]["take"] == "same"
    assert len(encode(light)) < len(encode(full))
    assert snapshot_of(light, previous_take=take) == snap
    with pytest.raises(WireError, match="snapshot message is malformed: KeyError"):
        snapshot_of({"t": "snapshot", "mode": "x"})


def test_messages_stream_through_a_pipe_until_end_of_file():
    r, w = os.pipe()
    os.write(w, encode({"t": "a"}) + encode({"t": "b", "n": 1}))
    os.close(w)
    try:
        assert [m["t"] for m in read_messages(r)] == ["a", "b"]
    finally:
        os.close(r)
