"""Motion takes kept in presets and the last state (issue 12, deliverable 3): a take recorded
in the real engine, saved, loaded into a fresh engine, replays the same controls hop by hop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device.errors import ControlError
from device.models.bundle import read_bundle
from device.sound.engine import Engine
from device.state import commands as c
from device.state.modulation import MOTION_EVENTS, MotionRecorder, MotionTake
from device.state.controls import UnitControls
from device.state.presets import TAKE_FILE, PresetStore, commands_for

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny_bundle"


@pytest.fixture(scope="module")
def tiny():
    return read_bundle(TINY)


def record_a_take(engine: Engine) -> None:
    """40 hops: fader 1 moves three times, unit 2 is muted, unit 0's LFO is set, then loop."""
    out, block = np.zeros(engine.hop_length), np.zeros(engine.hop_length)
    engine.apply(c.SetGain(1, 0.8))
    engine.apply(c.SetMotion("record"))
    for hop in range(40):
        if hop in (3, 10, 25):
            engine.apply(c.SetGain(1, {3: 0.1, 10: 0.5, 25: 0.9}[hop]))
        if hop == 30:
            engine.apply(c.ToggleMute(2))
        if hop == 33:
            engine.apply(c.SetLfoShape(0, "square"))
            engine.apply(c.SetLfoDepth(0, 0.5))
        engine.process(block, out)
    engine.apply(c.ToggleMotionRecord())  # ends the take and loops it


def replay(engine: Engine, hops: int) -> list:
    out, block = np.zeros(engine.hop_length), np.zeros(engine.hop_length)
    seen = []
    for _ in range(hops):
        engine.process(block, out)
        s = engine.controls
        seen.append((float(s.gain[1]), bool(s.muted[2]), int(s.lfo_shape[0]),
                     float(s.lfo_depth[0])))
    return seen


def test_the_snapshot_carries_the_finished_take_and_its_state(tiny):
    engine = Engine(tiny, mode="generate")
    assert engine.snapshot.controls.take is None
    record_a_take(engine)
    snap = engine.snapshot.controls
    assert isinstance(snap.take, MotionTake) and snap.take_state == "loop"
    assert snap.take.length == 40 and len(snap.take.events) == 6
    assert [e[0] for e in snap.take.events] == [3, 10, 25, 30, 33, 33]
    engine.apply(c.ToggleMotionLoop())
    assert engine.snapshot.controls.take_state == "stop"
    assert engine.snapshot.controls.take is snap.take  # the same take, not a copy
    engine.close()


def test_a_take_saved_in_a_preset_replays_identically_in_a_fresh_engine(tiny, tmp_path):
    first = Engine(tiny, mode="generate")
    record_a_take(first)
    store = PresetStore(tmp_path)
    store.save(first.snapshot.model, 3, first.snapshot.controls)
    want = replay(first, 100)

    second = Engine(tiny, mode="generate")
    loaded = PresetStore(tmp_path).load(second.snapshot.model, 3, units=tiny.units)
    assert loaded.take == first.snapshot.controls.take and loaded.take_state == "loop"
    for cmd in commands_for(loaded, second.snapshot.controls):
        second.apply(cmd)
    assert second.motion.state == "loop"
    assert replay(second, 100) == want
    first.close()
    second.close()


def test_the_last_state_keeps_its_take_in_a_file_written_only_when_the_take_changes(
        tiny, tmp_path):
    engine = Engine(tiny, mode="generate")
    record_a_take(engine)
    store = PresetStore(tmp_path)
    model = engine.snapshot.model
    store.save_last(model, engine.snapshot.controls)
    take_file = tmp_path / model / TAKE_FILE
    inode = take_file.stat().st_ino
    replay(engine, 7)  # the loop moves the controls: last.json changes, the take does not
    store.save_last(model, engine.snapshot.controls)
    assert take_file.stat().st_ino == inode  # not rewritten (atomic writes make a new inode)
    last = json.loads((tmp_path / model / "last.json").read_text())
    assert set(last["motion"]) == {"state", "take_sha256"}
    restored = PresetStore(tmp_path).load_last(model, units=tiny.units)
    assert restored.take == engine.snapshot.controls.take and restored.take_state == "loop"
    assert restored.gain == engine.snapshot.controls.gain
    engine.close()


def test_a_damaged_take_file_loses_the_motion_but_keeps_the_controls(tiny, tmp_path):
    engine = Engine(tiny, mode="generate")
    record_a_take(engine)
    reports = []
    store = PresetStore(tmp_path, report=reports.append)
    model = engine.snapshot.model
    store.save_last(model, engine.snapshot.controls)
    doc = json.loads((tmp_path / model / TAKE_FILE).read_text())
    doc["events"][0][3] = 0.25  # another take than last.json names
    (tmp_path / model / TAKE_FILE).write_text(json.dumps(doc))
    restored = store.load_last(model, units=tiny.units)
    assert restored is not None and restored.take is None
    assert restored.gain == engine.snapshot.controls.gain
    assert reports == ["ignoring the last motion take: motion take last-take.json is not the "
                       "take last.json names (SHA-256 differs)"]
    engine.close()


def test_a_preset_without_a_take_stops_a_looping_take(tiny):
    engine = Engine(tiny, mode="generate")
    record_a_take(engine)
    still = UnitControls(tiny.units).snapshot()
    cmds = commands_for(still, engine.snapshot.controls)
    assert cmds[-1] == c.SetMotion("stop")
    for cmd in cmds:
        engine.apply(cmd)
    assert engine.motion.state == "stop" and engine.snapshot.controls.gain == still.gain
    engine.close()


def a_take() -> MotionTake:
    """A one-hop take of 2 units: unit 2's gain moved to 0.5."""
    rec, ctl = MotionRecorder(2), UnitControls(2)
    rec.set_state("record", ctl)
    ctl.apply(c.SetGain(1, 0.5))
    rec.record(c.SetGain(1, 0.5), ctl)
    rec.advance(ctl)
    rec.set_state("stop", ctl)
    return rec.take


def take_doc(**change) -> dict:
    doc = a_take().to_dict()
    doc.update(change)
    return doc


@pytest.mark.parametrize(("change", "expect"), [
    ({"units": 3}, "motion take is for 3 units, this model has 2"),
    ({"length": 0}, "motion length must be 1..2147483648 hops, got 0"),
    ({"events": [[0, "gain", 1, 1.5]]}, "motion gain must be in 0.0..1.0, got 1.5"),
    ({"events": [[0, "wobble", 1, 0.5]]}, "kind one of gain, scale"),
    ({"events": [[1, "gain", 1, 0.5]]}, "motion event hop must be in 0..0"),
    ({"events": [[0, "gain", 2, 0.5]]}, "motion event unit must be in 0..1, got 2"),
    ({"events": [[0, "lfo_shape", 0, "wobble"]]}, "motion lfo_shape must be one of sine"),
    ({"events": [[0, "gain", 0, 0.5]] * (MOTION_EVENTS + 1)},
     f"at most {MOTION_EVENTS} moves, got {MOTION_EVENTS + 1}"),
    ({"start": {"gain": [1.0]}}, "motion start gain must be a list of 2 values"),
])
def test_a_bad_saved_take_is_refused_naming_the_field(change, expect):
    assert MotionTake.from_dict(take_doc(), units=2) is not None
    with pytest.raises(ControlError, match=expect.replace("(", r"\(").replace(".", r"\.")):
        MotionTake.from_dict(take_doc(**change), units=2)


def test_loading_a_take_for_another_unit_count_changes_nothing(tiny):
    engine = Engine(tiny, mode="generate")
    take = MotionTake.from_dict(take_doc(), units=2)
    with pytest.raises(ControlError, match=f"this model has {tiny.units}"):
        engine.apply(c.LoadMotion(take, "loop"))
    assert engine.motion.state == "stop" and engine.motion.take is None
    engine.close()
