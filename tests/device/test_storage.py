"""What the player keeps on disk, opened at start (device/state/storage.py), with the real
presets store, last-state keeper, recorder and engine."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from device.models.bundle import read_bundle
from device.sound.engine import Engine
from device.sound.recorder import Recorder
from device.state import commands as c
from device.state.config import config_from_dict
from device.state.presets import LastStateKeeper, PresetStore
from device.state.storage import RecorderSlot, open_storage

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "tiny_bundle"


def test_open_storage_restores_the_last_controls_and_records_into_the_folder(tmp_path):
    bundle = read_bundle(FIXTURE)
    saved = Engine(bundle, mode="resynth")
    saved.apply(c.SetGain(1, 0.3))
    PresetStore(tmp_path / "presets").save_last(bundle.name, saved.snapshot.controls)
    cfg = config_from_dict({
        "model": {"path": str(FIXTURE), "state_file": str(tmp_path / "state.json")},
        "storage": {"presets_dir": str(tmp_path / "presets"),
                    "recordings_dir": str(tmp_path / "rec")},
    })
    engine = Engine(bundle, mode="resynth")
    started, said = [], []
    storage = open_storage(cfg, engine, sample_rate=bundle.frame.sample_rate,
                           say=said.append, started=started.append)
    try:
        assert engine.snapshot.controls.gain[1] == pytest.approx(0.3)  # no audio thread yet
        assert isinstance(storage.last_state, LastStateKeeper)
        assert started == [storage.last_state] and storage.usb is None  # no library: no sticks
        assert isinstance(storage.recorder, RecorderSlot)
        recorder = storage.recorder.target
        assert isinstance(recorder, Recorder)
        path = recorder.start()
        storage.recorder.push(np.zeros(512, np.float32))
        time.sleep(0.2)
        recorder.stop()
        assert path.parent == tmp_path / "rec" and path.exists()
        assert said == []  # every folder writable: nothing to say
    finally:
        for part in reversed(started):
            part.close()
        storage.recorder.target.close()
