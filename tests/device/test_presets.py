"""Presets and last state: round trips, refusals, and surviving kill -9."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.state import commands as c
from device.state.controls import ControlsSnapshot, UnitControls
from device.errors import ControlError
from device.state.presets import LastStateKeeper, PresetStore, commands_for

REPO = Path(__file__).resolve().parents[2]
# tmp_path is shared by the examples: each one overwrites the same files first
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


def a_snapshot(units: int = 12, seed: int = 0) -> ControlsSnapshot:
    rng = random.Random(seed)
    ctl = UnitControls(units)
    for u in range(units):
        ctl.apply(c.SetGain(u, round(rng.random(), 3)))
        ctl.apply(c.SetScale(u, round(2 * rng.random(), 3)))
        ctl.apply(c.SetMute(u, rng.random() < 0.3))
    ctl.apply(c.PageBy(1))
    return ctl.snapshot()


def test_save_and_load_round_trip_per_model_and_slot(tmp_path):
    store = PresetStore(tmp_path)
    a, b = a_snapshot(seed=1), a_snapshot(seed=2)
    store.save("tiny", 1, a)
    store.save("tiny", 2, b)
    store.save("user:other", 1, b)
    assert store.load("tiny", 1) == a
    assert store.load("tiny", 2, units=12) == b
    assert store.load("user:other", 1) == b
    assert store.load("tiny", 3) is None
    assert store.load("nobody", 1) is None
    assert store.slots("tiny") == [1, 2]
    assert store.load("tiny", 1) != store.load("tiny", 2)


def test_last_state_round_trip(tmp_path):
    store = PresetStore(tmp_path)
    assert store.load_last("tiny") is None
    store.save_last("tiny", a_snapshot(seed=3))
    assert PresetStore(tmp_path).load_last("tiny", units=12) == a_snapshot(seed=3)


@pytest.mark.parametrize(("content", "expect"), [
    (b'{"units": 12, "gain": [0.5', "not valid JSON"),
    (b"\xff\xfe garbage", "not valid JSON"),
    (b"[1, 2, 3]", "JSON object"),
    (b'{"units": 2, "gain": [0.5, 7], "scale": [1, 1], "muted": [false, false]}',
     "gain values must be in 0.0..1.0, got 7"),
    (b'{"units": 2, "gain": [0.5, 0.5], "scale": [1], "muted": [false, false]}',
     "scale must be a list of 2 numbers"),
    (b'{"units": 2, "gain": [0.5, NaN], "scale": [1, 1], "muted": [false, false]}',
     "non-finite number NaN"),
    (b'{"units": 2, "gain": [0, 0], "scale": [1, 1], "muted": [0, 1]}', "true/false"),
], ids=["truncated", "binary", "not-object", "out-of-range", "short", "nan", "muted-ints"])
def test_a_corrupt_preset_is_reported_and_ignored(tmp_path, content, expect):
    told: list[str] = []
    store = PresetStore(tmp_path, report=told.append)
    store.save("tiny", 4, a_snapshot())
    (tmp_path / "tiny" / "preset-4.json").write_bytes(content)
    assert store.load("tiny", 4) is None
    assert len(told) == 1 and expect in told[0] and "preset-4.json" in told[0]
    store.save("tiny", 4, a_snapshot(seed=9))  # a corrupt file is simply overwritten
    assert store.load("tiny", 4) == a_snapshot(seed=9)


def test_a_preset_for_another_unit_count_is_refused(tmp_path):
    told: list[str] = []
    store = PresetStore(tmp_path, report=told.append)
    store.save("tiny", 1, a_snapshot(units=12))
    assert store.load("tiny", 1, units=8) is None
    assert "is for 12 units, this model has 8" in told[0]


def test_bad_names_and_slots_are_errors(tmp_path):
    store = PresetStore(tmp_path)
    with pytest.raises(ControlError, match="model name"):
        store.save("../escape", 1, a_snapshot())
    with pytest.raises(ControlError, match=r"slot must be in 0\.\.127, got 128"):
        store.load("tiny", 128)
    with pytest.raises(ControlError, match="slot"):
        store.save("tiny", True, a_snapshot())
    assert not any(tmp_path.parent.glob("escape"))


def test_recall_as_commands_reaches_the_preset_state():
    target = a_snapshot(units=12, seed=5)
    ctl = UnitControls(12)
    ctl.apply(c.SetGain(3, 0.25))
    cmds = commands_for(target, ctl.snapshot())
    assert all(isinstance(x, (c.SetGain, c.SetScale, c.SetMute)) for x in cmds)
    for cmd in cmds:
        assert ctl.apply(cmd)
    got = ctl.snapshot()
    assert (got.gain, got.scale, got.muted) == (target.gain, target.scale, target.muted)
    assert commands_for(target, got) == []
    with pytest.raises(ControlError, match="12 units"):
        commands_for(target, UnitControls(8).snapshot())


def test_last_state_keeper_writes_the_newest_offer(tmp_path):
    store = PresetStore(tmp_path)
    keeper = LastStateKeeper(store, interval_s=60)
    keeper.offer("tiny", a_snapshot(seed=1))
    keeper.offer("tiny", a_snapshot(seed=2))
    assert store.load_last("tiny") is None  # nothing written on the caller's thread
    keeper.close()
    assert store.load_last("tiny") == a_snapshot(seed=2)


def test_last_state_keeper_warns_once_while_the_disk_refuses(tmp_path, caplog):
    blocked = tmp_path / "presets"
    blocked.write_text("a file where the presets folder should be")
    keeper = LastStateKeeper(PresetStore(blocked), interval_s=60)
    with caplog.at_level(logging.INFO, logger="device.state.presets"):
        for seed in range(5):  # each flush a new state, as while playing
            keeper.offer("tiny", a_snapshot(seed=seed))
            keeper.flush()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "cannot save the last state of tiny" in warnings[0].message
        blocked.unlink()  # the disk is writable again
        keeper.offer("tiny", a_snapshot(seed=9))
        keeper.flush()
        assert "works again" in caplog.records[-1].message
    keeper.close()
    assert PresetStore(blocked).load_last("tiny") == a_snapshot(seed=9)


snapshots = st.integers(1, 40).flatmap(lambda n: st.builds(
    lambda g, s, m, p: ControlsSnapshot(n, p % -(-n // 8), -(-n // 8), tuple(g), tuple(s),
                                        tuple(m)),
    st.lists(st.floats(0, 1), min_size=n, max_size=n),
    st.lists(st.floats(0, 2), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n),
    st.integers(0, 10)))


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE_OK)
@given(snap=snapshots, slot=st.integers(0, 127))
def test_any_snapshot_round_trips_exactly(tmp_path, snap, slot):
    store = PresetStore(tmp_path)
    store.save("m", slot, snap)
    assert store.load("m", slot, units=snap.units) == snap


@settings(max_examples=80, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.one_of(st.binary(max_size=300),
                      st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                                   | st.text(max_size=5),
                                   lambda kids: st.lists(kids, max_size=4)
                                   | st.dictionaries(st.sampled_from(
                                       ["units", "gain", "scale", "muted", "page"]), kids),
                                   max_leaves=20).map(lambda v: json.dumps(v).encode())))
def test_any_file_content_loads_or_is_refused_never_raises(tmp_path, data):
    told: list[str] = []
    store = PresetStore(tmp_path, report=told.append)
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "preset-0.json").write_bytes(data)
    snap = store.load("m", 0)
    assert (snap is None) == bool(told)
    if snap is not None:
        assert all(0 <= g <= 1 for g in snap.gain) and len(snap.muted) == snap.units


# -- kill -9 -------------------------------------------------------------------------
_SAVE = """
import sys
from device.state.controls import UnitControls
from device.state import commands as c
from device.state.presets import PresetStore
store = PresetStore(sys.argv[1])
ctl = UnitControls(64)
i = 0
while True:
    i += 1
    ctl.apply(c.SetGain(0, (i % 1000) / 1000))
    store.save("tiny", 1, ctl.snapshot())
    if i == 1:
        print("saving", flush=True)
"""


def test_kill_9_at_the_rename_keeps_the_previous_preset(tmp_path):
    store = PresetStore(tmp_path)
    store.save("tiny", 1, a_snapshot(seed=7))
    env = dict(os.environ, AESYNTH_CRASH_AT="atomic-before-rename")
    code = ("import sys; from tests.device.test_presets import a_snapshot; "
            "from device.state.presets import PresetStore; "
            "PresetStore(sys.argv[1]).save('tiny', 1, a_snapshot(seed=8))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, cwd=REPO,
                          capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert store.load("tiny", 1) == a_snapshot(seed=7)
    store.save("tiny", 1, a_snapshot(seed=8))  # and the leftover temp is cleaned on save
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == ["preset-1.json"]


def test_kill_9_at_random_moments_of_a_save_loop_never_corrupts(tmp_path):
    rng = random.Random(1234)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", _SAVE, str(tmp_path)], cwd=REPO,
                                stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"saving\n"
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        told: list[str] = []
        snap = PresetStore(tmp_path, report=told.append).load("tiny", 1, units=64)
        assert told == [] and snap is not None and snap.units == 64
